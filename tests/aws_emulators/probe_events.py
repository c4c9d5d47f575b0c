"""Probe moto's EventBridge (rules -> SQS, Input/InputTransformer, limits) and Scheduler.

Run: ``.venv/bin/python -m tests.aws_emulators.probe_events`` (results are in FINDINGS.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from stepkit_emulators.emulators import MotoServer
from stepkit_emulators.moto_clock import MotoClock


def show(title: str, value: Any) -> None:
    print(f"\n== {title}\n{json.dumps(value, indent=2, default=str)}")


def main() -> None:
    import boto3

    with MotoServer() as server, MotoClock() as clock:
        kwargs: dict[str, Any] = {
            "endpoint_url": server.endpoint_url,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        sqs = boto3.client("sqs", **kwargs)
        events = boto3.client("events", **kwargs)
        scheduler = boto3.client("scheduler", **kwargs)

        def queue(name: str) -> tuple[str, str]:
            url = sqs.create_queue(QueueName=name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return url, arn["Attributes"]["QueueArn"]

        def drain(url: str) -> list[str]:
            out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            for m in out:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            return [m["Body"] for m in out]

        bus = events.create_event_bus(Name="stepkit")
        show("create_event_bus", {k: v for k, v in bus.items() if k != "ResponseMetadata"})
        pattern = {"source": ["app"], "detail-type": ["user/signup"]}
        rule = events.put_rule(
            Name="signup", EventBusName="stepkit", EventPattern=json.dumps(pattern)
        )
        show("put_rule", rule["RuleArn"])
        plain_url, plain_arn = queue("plain")
        input_url, input_arn = queue("constant-input")
        tr_quoted_url, tr_quoted_arn = queue("transformer-quoted")
        tr_bare_url, tr_bare_arn = queue("transformer-bare")
        result = events.put_targets(
            Rule="signup",
            EventBusName="stepkit",
            Targets=[
                {"Id": "plain", "Arn": plain_arn},
                {"Id": "input", "Arn": input_arn, "Input": json.dumps({"fixed": True})},
                {
                    "Id": "tq",
                    "Arn": tr_quoted_arn,
                    "InputTransformer": {
                        "InputPathsMap": {
                            "user": "$.detail.user",
                            "t": "$.time",
                            "n": "$.detail.n",
                        },
                        "InputTemplate": (
                            '{"user": "<user>", "at": "<t>", "n": <n>,'
                            ' "whole": <aws.events.event.json>}'
                        ),
                    },
                },
            ],
        )
        show("put_targets", {k: v for k, v in result.items() if k != "ResponseMetadata"})

        clock.advance(3600)  # the event "time" follows the moto clock
        sent = events.put_events(
            Entries=[
                {
                    "EventBusName": "stepkit",
                    "Source": "app",
                    "DetailType": "user/signup",
                    "Detail": json.dumps({"user": "ada", "n": 7}),
                },
                {
                    "EventBusName": "stepkit",
                    "Source": "app",
                    "DetailType": "user/other",
                    "Detail": json.dumps({"user": "bob"}),
                },
            ]
        )
        show("put_events result", {k: v for k, v in sent.items() if k != "ResponseMetadata"})
        print(
            f"\nwall clock now: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  "
            f"(moto clock is 1 h ahead)"
        )
        for name, url in [
            ("plain target", plain_url),
            ("target with Input", input_url),
            ("InputTransformer, quoted placeholders", tr_quoted_url),
        ]:
            try:
                print(f"\n== SQS body via {name} (verbatim)")
                for body in drain(url):
                    print(body)
            except ClientError as error:
                print("error:", error.response["Error"])

        # bare (unquoted) string placeholder, on its own bus so the crash hits nothing else
        events.create_event_bus(Name="bare")
        events.put_rule(Name="bare", EventBusName="bare", EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule="bare",
            EventBusName="bare",
            Targets=[
                {"Id": "plain", "Arn": plain_arn},
                {
                    "Id": "tb",
                    "Arn": tr_bare_arn,
                    "InputTransformer": {
                        "InputPathsMap": {"user": "$.detail.user"},
                        "InputTemplate": '{"user": <user>}',
                    },
                },
            ],
        )
        from botocore.config import Config

        no_retry = boto3.client(
            "events", config=Config(retries={"total_max_attempts": 1}), **kwargs
        )
        print('\n== InputTransformer with a bare string placeholder {"user": <user>}')
        try:
            no_retry.put_events(
                Entries=[
                    {
                        "EventBusName": "bare",
                        "Source": "app",
                        "DetailType": "user/signup",
                        "Detail": json.dumps({"user": "ada"}),
                    }
                ]
            )
            print("put_events: ok")
        except ClientError as error:
            print("put_events:", error.response["Error"]["Code"], "(HTTP 500 from moto)")
        print(
            "delivered to the target listed before it:",
            len(drain(plain_url)),
            "| to the bare-template target:",
            len(drain(tr_bare_url)),
        )

        # --- limits ---------------------------------------------------------------------------
        # a transformer path that matches nothing leaves "<n>" in the template -> 500 as well
        print("\n== event without detail.n through the quoted-transformer target")
        try:
            no_retry.put_events(
                Entries=[
                    {
                        "EventBusName": "stepkit",
                        "Source": "app",
                        "DetailType": "user/signup",
                        "Detail": json.dumps({"user": "ada"}),
                    }
                ]
            )
            print("put_events: ok")
        except ClientError as error:
            print("put_events:", error.response["Error"]["Code"], "(HTTP 500 from moto)")
        drain(plain_url)
        drain(input_url)

        events.create_event_bus(Name="big")
        events.put_rule(
            Name="any-app", EventBusName="big", EventPattern=json.dumps({"source": ["app"]})
        )
        events.put_targets(
            Rule="any-app", EventBusName="big", Targets=[{"Id": "p", "Arn": plain_arn}]
        )
        big = {"blob": "x" * 300_000}
        try:
            out = no_retry.put_events(
                Entries=[
                    {
                        "EventBusName": "big",
                        "Source": "app",
                        "DetailType": "user/signup",
                        "Detail": json.dumps(big),
                    }
                ]
            )
            show(
                "put_events with a 300 kB Detail",
                {k: v for k, v in out.items() if k != "ResponseMetadata"},
            )
            print("delivered to SQS:", [len(b) for b in drain(plain_url)])
        except ClientError as error:
            show("put_events with a 300 kB Detail", error.response["Error"])
        try:
            events.put_events(
                Entries=[{"Source": "app", "DetailType": "x", "Detail": "{}"} for _ in range(11)]
            )
        except ClientError as error:
            show("put_events with 11 entries", error.response["Error"])
        bad = events.put_events(
            Entries=[{"Source": "app", "DetailType": "x", "Detail": "not json"}]
        )
        show("put_events with non-JSON Detail", bad["Entries"])

        # --- Scheduler ----------------------------------------------------------------------------
        _, sched_arn = queue("scheduled")
        scheduler.create_schedule_group(Name="stepkit")
        created = scheduler.create_schedule(
            Name="weekday-9am",
            GroupName="stepkit",
            ScheduleExpression="cron(0 9 ? * 2-6 *)",
            ScheduleExpressionTimezone="Europe/Paris",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": sched_arn,
                "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
                "Input": json.dumps({"workflow": "report"}),
            },
            State="ENABLED",
        )
        show("create_schedule", {k: v for k, v in created.items() if k != "ResponseMetadata"})
        got = scheduler.get_schedule(Name="weekday-9am", GroupName="stepkit")
        show("get_schedule", {k: v for k, v in got.items() if k != "ResponseMetadata"})
        listed = scheduler.list_schedules(GroupName="stepkit")
        show("list_schedules", listed["Schedules"])
        show(
            "list_schedules (no group filter)",
            [s["Name"] for s in scheduler.list_schedules()["Schedules"]],
        )
        for expr in ("cron(not valid)", "rate(5 minutes)", "at(2030-01-01T09:00:00)"):
            try:
                scheduler.create_schedule(
                    Name="x" + str(abs(hash(expr)) % 1000),
                    ScheduleExpression=expr,
                    FlexibleTimeWindow={"Mode": "OFF"},
                    Target={"Arn": sched_arn, "RoleArn": "arn:aws:iam::123456789012:role/r"},
                )
                print(f"create_schedule {expr!r}: accepted")
            except ClientError as error:
                print(f"create_schedule {expr!r}:", error.response["Error"])
        time.sleep(0)
        print(
            "\nSQS 'scheduled' queue after creating the schedule (moto never fires):",
            drain(sqs.get_queue_url(QueueName="scheduled")["QueueUrl"]),
        )


if __name__ == "__main__":
    main()
