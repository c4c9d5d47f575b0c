"""`stepkit dlq list|redrive --aws` and the DLQ notice of `stepkit runs --aws`, on the emulators.

The app is defined at module level so the CLI finds it (``STEPKIT_FUNCTIONS`` names this
module) and derives the DLQ names from it, as it does from ``functions/`` for a real deployment.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.store import DynamoStore, StoreError
from runtime.cli import cli
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli

pytestmark = pytest.mark.aws

app = App("dlqshop")


@app.function(id="welcome", trigger=TriggerEvent("user/signup"))
def welcome(ctx: Context) -> str:
    ctx.step.run("greet", lambda: "hi")
    return str(ctx.event.data["user_id"])


def stepkit(*args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--aws"], prog_name="stepkit")


@pytest.fixture
def h(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> Harness:
    h, _ = deploy_for_cli(app, aws, monkeypatch, functions=__name__)
    return h


def backend(h: Harness) -> AwsBackend:
    assert isinstance(h.backend, AwsBackend)
    return h.backend


def test_a_dead_lettered_event_is_listed_redriven_and_its_run_completes(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = backend(h)
    sqs = harness.clients["sqs"]
    fn = harness.resources.function("welcome")

    def unavailable(self: DynamoStore, *args: object) -> bool:
        raise StoreError("DynamoDB PutItem failed: AccessDeniedException",
                         code="AccessDeniedException")

    # The table refusing every delivery (not pushback: that only delays) is what dead-letters
    # a message (a failing step fails its run instead): each failure comes again after its
    # backoff, and past MAX_RECEIVES of them SQS moves it, as the redrive policy says.
    with monkeypatch.context() as m:
        m.setattr(DynamoStore, "create_run", unavailable)
        h.send("user/signup", {"user_id": "ada"})
        for _ in range(12):
            h.advance("301s")
    # A record no worker can read goes straight to the DLQ with the reason.
    queue_url = sqs.get_queue_url(QueueName=fn.queue)["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="not json")
    h.settle()
    assert h.runs() == []

    listed = stepkit("runs")
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[-1] == "2 messages in dead-letter queues: stepkit dlq list"
    shown = stepkit("dlq", "list", "--json")
    assert shown.exit_code == 0, shown.output
    dead = {d["kind"]: d for d in json.loads(shown.output)}
    # (the event's start, as its failures sent it again)
    assert set(dead) == {"start", "unreadable"}
    event, poison = dead["start"], dead["unreadable"]
    assert (event["queue"], event["source"], event["function_id"]) == (fn.dlq, fn.queue, "welcome")
    assert event["receive_count"] >= 5 and event["sent_at"]
    assert poison["error"].startswith("queue record is not JSON")
    table = stepkit("dlq", "list")
    assert table.output.splitlines()[0].split()[:3] == ["QUEUE", "ID", "KIND"]
    assert len(table.output.splitlines()) == 3
    assert len(json.loads(stepkit("dlq", "list", "--json").output)) == 2  # listing kept them

    redriven = stepkit("dlq", "redrive", "--id", event["message_id"])
    assert redriven.exit_code == 0, redriven.output
    assert redriven.output.strip() == "redrove 1 message"
    h.settle()
    (run,) = h.runs()
    assert (run.status, run.output) == ("Completed", "ada")
    left = json.loads(stepkit("dlq", "list", "--json").output)
    assert [d["message_id"] for d in left] == [poison["message_id"]]
    assert stepkit("runs").output.splitlines()[-1] == (
        "1 message in dead-letter queues: stepkit dlq list"
    )
    missing = stepkit("dlq", "redrive", "--id", "nope")
    assert missing.exit_code == 1 and "no dead-lettered message 'nope'" in missing.output


def test_the_delivery_dlq_is_redriven_to_the_queue_its_target_arn_names(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = backend(h)
    sqs = harness.clients["sqs"]
    r = harness.resources
    fn = r.function("welcome")
    # What EventBridge puts in a rule target's DLQ when it cannot deliver (documented
    # attributes RULE_ARN, TARGET_ARN, ERROR_CODE, ERROR_MESSAGE); the body is the event.
    dlq_url = sqs.create_queue(QueueName=r.delivery_dlq)["QueueUrl"]
    target = f"arn:aws:sqs:{harness.region}:123456789012:{fn.queue}"
    envelope = {
        "version": "0",
        "id": "e1",
        "detail-type": "user/signup",
        "source": r.app_id,
        "time": "2026-03-02T08:00:00Z",
        "detail": {"id": "signup-bo", "data": {"user_id": "bo"}},
    }
    attrs = {
        "RULE_ARN": f"arn:aws:events:{harness.region}:123456789012:rule/{fn.trigger_rule}",
        "TARGET_ARN": target,
        "ERROR_CODE": "NO_PERMISSIONS",
        "ERROR_MESSAGE": "not authorized to sqs:SendMessage",
    }
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=json.dumps(envelope),
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()},
    )
    (dead,) = json.loads(stepkit("dlq", "list", "--json").output)
    assert (dead["queue"], dead["source"], dead["function_id"]) == (
        r.delivery_dlq, fn.queue, "welcome"
    )
    assert dead["error"] == "NO_PERMISSIONS: not authorized to sqs:SendMessage"
    unknown = stepkit("dlq", "redrive", "--queue", "nope")
    assert unknown.exit_code == 1 and "no dead-letter queue 'nope'" in unknown.output
    assert stepkit("dlq", "redrive", "--queue", r.delivery_dlq).output.strip() == (
        "redrove 1 message"
    )
    h.settle()
    (run,) = h.runs()
    assert (run.status, run.output) == ("Completed", "bo")
    assert stepkit("dlq", "list").output.strip() == "no dead-lettered messages"


def test_runs_lists_even_when_the_dlqs_cannot_be_read(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.send("user/signup", {"user_id": "cy"})
    h.settle()
    monkeypatch.setenv("STEPKIT_FUNCTIONS", "no_such_functions_package")
    listed = stepkit("runs")
    assert listed.exit_code == 0, listed.output
    assert len(listed.output.splitlines()) == 2  # header and the run: no notice
    failed = stepkit("dlq", "list")
    assert failed.exit_code == 1
    (line,) = failed.output.splitlines()
    assert line.startswith("Error: ") and "no_such_functions_package" in line


def test_a_message_whose_queue_is_gone_stays_in_the_dlq_visible(h: Harness) -> None:
    sqs = backend(h).clients["sqs"]
    r = backend(h).resources
    dlq_url = sqs.create_queue(QueueName=r.delivery_dlq)["QueueUrl"]
    gone = f"arn:aws:sqs:{backend(h).region}:123456789012:{r.app_id}-deleted-fn"
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=json.dumps({"type": "cron", "function_id": "deleted-fn"}),
        MessageAttributes={"TARGET_ARN": {"DataType": "String", "StringValue": gone}},
    )
    failed = stepkit("dlq", "redrive")
    assert failed.exit_code == 1
    (line,) = failed.output.splitlines()
    assert f"queue '{r.app_id}-deleted-fn' does not exist" in line
    assert "it stays in the dead-letter queue" in line
    (still,) = json.loads(stepkit("dlq", "list", "--json").output)  # and is visible at once
    assert (still["kind"], still["function_id"]) == ("cron", "deleted-fn")
