"""The emulator groundwork itself: DynamoDB Local, moto SQS/EventBridge/Scheduler, fake clock."""

from __future__ import annotations

import inspect
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from stepkit_emulators.emulators import AwsEmulators, EmulatorError, find_dynamodb_local_dir
from stepkit_emulators.lambda_events import sqs_lambda_event
from stepkit_emulators.moto_clock import PATCH_TARGETS, MotoClock, MotoClockError


def _create_table(ddb: Any, name: str) -> None:
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )


def _queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def _receive(sqs: Any, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    response = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
        **kwargs,
    )
    return list(response.get("Messages", []))


# --- DynamoDB Local ---


@pytest.mark.aws
def test_conditional_put_fails_the_second_time(aws: AwsEmulators) -> None:
    ddb = boto3.client("dynamodb")  # routed by the env vars the fixture set
    assert ddb.meta.endpoint_url == aws.dynamodb_endpoint
    _create_table(ddb, "runs")
    item = {"pk": {"S": "run#1"}, "sk": {"S": "meta"}}
    ddb.put_item(TableName="runs", Item=item, ConditionExpression="attribute_not_exists(pk)")
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(TableName="runs", Item=item, ConditionExpression="attribute_not_exists(pk)")


@pytest.mark.aws
def test_transaction_cancellation_reasons(aws: AwsEmulators) -> None:
    ddb = aws.client("dynamodb")
    _create_table(ddb, "runs")
    ddb.put_item(TableName="runs", Item={"pk": {"S": "a"}, "sk": {"S": "s"}})
    items = [
        {
            "Put": {
                "TableName": "runs",
                "Item": {"pk": {"S": pk}, "sk": {"S": "s"}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        for pk in ("new", "a")
    ]
    with pytest.raises(ddb.exceptions.TransactionCanceledException) as caught:
        ddb.transact_write_items(TransactItems=items)
    reasons = caught.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    # all-or-nothing: the first Put did not happen
    assert "Item" not in ddb.get_item(TableName="runs", Key={"pk": {"S": "new"}, "sk": {"S": "s"}})


# --- SQS + fake clock ---


@pytest.mark.aws
def test_delayed_message_visible_after_fake_clock_skip(aws: AwsEmulators) -> None:
    sqs = aws.client("sqs")
    url, _ = _queue(sqs, "timers")
    sqs.send_message(QueueUrl=url, MessageBody="wake", DelaySeconds=900)
    assert _receive(sqs, url) == []
    aws.clock.advance(899)
    assert _receive(sqs, url) == []

    started = time.monotonic()
    aws.clock.advance(2)  # 901 s on the fake clock
    received = _receive(sqs, url)
    assert [m["Body"] for m in received] == ["wake"]
    assert time.monotonic() - started < 1.0  # no real waiting


@pytest.mark.aws
def test_three_day_sleep_in_hops_takes_no_real_time(aws: AwsEmulators) -> None:
    sqs = aws.client("sqs")
    url, _ = _queue(sqs, "hops")
    remaining, hops, started = 3 * 86400, 0, time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody=str(remaining), DelaySeconds=min(remaining, 900))
    while True:
        aws.clock.advance(900)
        (message,) = _receive(sqs, url)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        hops += 1
        remaining = int(message["Body"]) - 900
        if remaining <= 0:
            break
        sqs.send_message(QueueUrl=url, MessageBody=str(remaining), DelaySeconds=min(remaining, 900))
    assert hops == 288
    assert time.monotonic() - started < 30


@pytest.mark.aws
def test_moto_follows_an_absolute_fake_clock_in_the_past(aws: AwsEmulators) -> None:
    """Source mode: a frozen harness clock that starts on a fixed date and skips."""
    fake_now = [datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()]
    aws.clock.follow(lambda: fake_now[0])
    sqs = aws.client("sqs")
    url, _ = _queue(sqs, "timers", VisibilityTimeout="30")
    sqs.send_message(QueueUrl=url, MessageBody="wake", DelaySeconds=900)
    assert _receive(sqs, url) == []
    fake_now[0] += 3 * 86400  # one skip of 3 days
    (message,) = _receive(sqs, url)
    assert int(message["Attributes"]["SentTimestamp"]) == 1772438400000  # 2026-03-02T08:00Z
    assert _receive(sqs, url) == []  # in flight for 30 fake seconds
    fake_now[0] += 31
    assert [m["Body"] for m in _receive(sqs, url)] == ["wake"]


@pytest.mark.aws
def test_visibility_timeout_follows_fake_clock(aws: AwsEmulators) -> None:
    sqs = aws.client("sqs")
    url, _ = _queue(sqs, "work", VisibilityTimeout="30")
    sqs.send_message(QueueUrl=url, MessageBody="job")
    assert len(_receive(sqs, url)) == 1
    assert _receive(sqs, url) == []  # in flight
    aws.clock.advance(31)
    (again,) = _receive(sqs, url)
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


@pytest.mark.aws
def test_redrive_to_dlq_after_max_receive_count(aws: AwsEmulators) -> None:
    sqs = aws.client("sqs")
    dlq_url, dlq_arn = _queue(sqs, "work-dlq")
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url, _ = _queue(sqs, "work", VisibilityTimeout="30", RedrivePolicy=policy)
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):
        assert len(_receive(sqs, url)) == 1
        aws.clock.advance(31)
    assert _receive(sqs, url) == []  # the 3rd receive moves it instead
    assert [m["Body"] for m in _receive(sqs, dlq_url)] == ["poison"]


@pytest.mark.aws
def test_delay_above_900_is_rejected(aws: AwsEmulators) -> None:
    sqs = aws.client("sqs")
    url, _ = _queue(sqs, "q")
    with pytest.raises(ClientError) as caught:
        sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901)
    assert caught.value.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.aws
def test_lambda_shaped_sqs_event(aws: AwsEmulators) -> None:
    sqs = aws.client("sqs")
    url, arn = _queue(sqs, "q")
    sqs.send_message(
        QueueUrl=url,
        MessageBody='{"k": 1}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "timer"}},
    )
    event = sqs_lambda_event(_receive(sqs, url), queue_arn=arn, region=aws.region)
    (record,) = event["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["body"] == '{"k": 1}'
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert int(record["attributes"]["SentTimestamp"]) > 0
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "timer",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert set(record) >= {"messageId", "receiptHandle", "md5OfBody", "awsRegion"}


# --- EventBridge + Scheduler ---


@pytest.mark.aws
def test_eventbridge_rule_delivers_to_sqs(aws: AwsEmulators) -> None:
    sqs, events = aws.client("sqs"), aws.client("events")
    url, arn = _queue(sqs, "signups")
    events.create_event_bus(Name="stepkit")
    events.put_rule(
        Name="signup",
        EventBusName="stepkit",
        EventPattern=json.dumps({"source": ["app"], "detail-type": ["user/signup"]}),
    )
    events.put_targets(Rule="signup", EventBusName="stepkit", Targets=[{"Id": "q", "Arn": arn}])
    entries = [
        {
            "EventBusName": "stepkit",
            "Source": "app",
            "DetailType": dt,
            "Detail": json.dumps({"u": 1}),
        }
        for dt in ("user/signup", "user/other")
    ]
    assert events.put_events(Entries=entries)["FailedEntryCount"] == 0

    (message,) = _receive(sqs, url)
    body = json.loads(message["Body"])
    assert body["source"] == "app"
    assert body["detail-type"] == "user/signup"
    assert body["detail"] == {"u": 1}
    assert set(body) == {
        "id",
        "time",
        "version",
        "detail-type",
        "source",
        "region",
        "resources",
        "detail",
    }  # moto: no "account" (real AWS has it)


@pytest.mark.aws
def test_scheduler_stores_cron_schedules(aws: AwsEmulators) -> None:
    scheduler = aws.client("scheduler")
    scheduler.create_schedule(
        Name="weekdays",
        ScheduleExpression="cron(0 9 ? * 2-6 *)",
        ScheduleExpressionTimezone="Europe/Paris",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={
            "Arn": "arn:aws:sqs:us-east-1:123456789012:q",
            "RoleArn": "arn:aws:iam::123456789012:role/r",
            "Input": "{}",
        },
    )
    got = scheduler.get_schedule(Name="weekdays")
    assert got["ScheduleExpression"] == "cron(0 9 ? * 2-6 *)"
    assert got["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert got["Target"]["Input"] == "{}"
    assert [s["Name"] for s in scheduler.list_schedules()["Schedules"]] == ["weekdays"]


# --- no emulator needed ---


def test_moto_still_reads_time_where_the_clock_patches_it() -> None:
    """Fails loudly after a moto upgrade that changes how SQS reads the time."""
    import moto.sqs.models as sqs_models

    for module_name, attr in PATCH_TARGETS:
        module = __import__(module_name, fromlist=[attr])
        assert callable(getattr(module, attr)), f"{module_name}.{attr}"
    for prop in ("visible", "delayed"):
        fget = getattr(sqs_models.Message, prop).fget
        assert "unix_time_millis()" in inspect.getsource(fget), prop
    for method in ("delay", "change_visibility", "mark_sent"):
        assert "unix_time_millis()" in inspect.getsource(getattr(sqs_models.Message, method))


def test_clock_install_is_exclusive_and_restores() -> None:
    import moto.sqs.models as sqs_models

    if MotoClock.installed() is not None:  # the session's emulators hold one right now
        with pytest.raises(MotoClockError):
            MotoClock().install()
        return
    original = sqs_models.__dict__["unix_time_millis"]
    with MotoClock() as clock:
        clock.advance(100)
        now_ms = sqs_models.__dict__["unix_time_millis"]()
        assert now_ms == pytest.approx((time.time() + 100) * 1000, abs=1000)
        with pytest.raises(MotoClockError):
            MotoClock().install()
    assert sqs_models.__dict__["unix_time_millis"] is original


def test_missing_jar_names_the_install_script(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match=r"install-emulators\.sh"):
        find_dynamodb_local_dir(tmp_path)
