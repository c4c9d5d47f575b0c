"""Probe moto's SQS: delays, limits, redrive, visibility, message fields, fake-clock skips.

Run: ``.venv/bin/python -m tests.aws_emulators.probe_sqs`` (results are in FINDINGS.md).
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


def receive(sqs: Any, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    response = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
        WaitTimeSeconds=kwargs.pop("WaitTimeSeconds", 0),
        **kwargs,
    )
    return list(response.get("Messages", []))


def main() -> None:
    import boto3

    with MotoServer() as server, MotoClock() as clock:
        sqs = boto3.client(
            "sqs",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        url = sqs.create_queue(QueueName="work")["QueueUrl"]
        show(
            "queue url / arn",
            [
                url,
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"],
            ],
        )

        # --- real-time delay ---------------------------------------------------------------
        sqs.send_message(QueueUrl=url, MessageBody="d2", DelaySeconds=2)
        print("\nDelaySeconds=2, receive at once:", len(receive(sqs, url)))
        time.sleep(2.2)
        got = receive(sqs, url)
        print("after 2.2 s real sleep:", [m["Body"] for m in got])
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

        # --- limits ------------------------------------------------------------------------
        for delay in (900, 901):
            try:
                sqs.send_message(QueueUrl=url, MessageBody=f"limit{delay}", DelaySeconds=delay)
                print(f"DelaySeconds={delay}: accepted")
            except ClientError as error:
                show(f"DelaySeconds={delay}", error.response["Error"])
        try:
            sqs.send_message_batch(
                QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x", "DelaySeconds": 901}]
            )
        except ClientError as error:
            show("send_message_batch DelaySeconds=901", error.response["Error"])
        for size in (262_144 + 1, 1_048_576 + 1):
            try:
                sqs.send_message(QueueUrl=url, MessageBody="x" * size)
                print(f"body of {size} bytes: accepted")
            except ClientError as error:
                show(f"body of {size} bytes", error.response["Error"])
        sqs.purge_queue(QueueUrl=url)

        # --- fake-clock skip: DelaySeconds=900 ----------------------------------------------
        sqs.send_message(QueueUrl=url, MessageBody="sleep-900", DelaySeconds=900)
        print("\nDelaySeconds=900, receive at once:", len(receive(sqs, url)))
        clock.advance(899)
        print("after clock.advance(899):", len(receive(sqs, url)))
        clock.advance(2)
        started = time.monotonic()
        got = receive(sqs, url, VisibilityTimeout=30)
        print(
            "after clock.advance(901 total):",
            [m["Body"] for m in got],
            f"(real wait {time.monotonic() - started:.3f}s)",
        )
        show("received message, verbatim", got[0])

        # --- visibility timeout follows the clock ---------------------------------------------
        print(
            "\nreceived with VisibilityTimeout=30; receive again at once:", len(receive(sqs, url))
        )
        clock.advance(29)
        print("after clock.advance(29):", len(receive(sqs, url)))
        clock.advance(2)
        again = receive(sqs, url, VisibilityTimeout=30)
        print(
            "after clock.advance(31 total):",
            [(m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in again],
        )
        handle = again[0]["ReceiptHandle"]
        print("old receipt handle still accepted for delete? ->", end=" ")
        try:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
            print("yes (moto accepts any past handle; real SQS: stale handles may fail silently)")
        except ClientError as error:
            print(error.response["Error"])
        sqs.send_message(QueueUrl=url, MessageBody="cmv")
        m = receive(sqs, url, VisibilityTimeout=60)[0]
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
        print(
            "\nChangeMessageVisibility(0) -> visible again:",
            [x["Body"] for x in receive(sqs, url, VisibilityTimeout=60)],
        )
        try:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=43201
            )
        except ClientError as error:
            show("ChangeMessageVisibility(43201)", error.response["Error"])
        del handle

        # --- long poll still ends in offset mode ---------------------------------------------
        empty = sqs.create_queue(QueueName="empty")["QueueUrl"]
        started = time.monotonic()
        receive(sqs, empty, WaitTimeSeconds=2)
        print(
            f"\nlong poll WaitTimeSeconds=2 on empty queue took {time.monotonic() - started:.2f}s"
        )

        # --- redrive to DLQ ---------------------------------------------------------------------
        dlq = sqs.create_queue(QueueName="work-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        main_q = sqs.create_queue(
            QueueName="work-main",
            Attributes={
                "VisibilityTimeout": "30",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
            },
        )["QueueUrl"]
        sqs.send_message(QueueUrl=main_q, MessageBody="poison")
        counts = []
        for _ in range(3):
            batch = receive(sqs, main_q)
            counts.append([m["Attributes"]["ApproximateReceiveCount"] for m in batch])
            clock.advance(31)  # let the visibility timeout lapse on the fake clock
        print("\nredrive maxReceiveCount=2, receive counts per attempt:", counts)
        moved = receive(sqs, dlq)
        show("message in DLQ (attributes)", [m["Attributes"] for m in moved])

        # --- source mode: harness clock drives moto, frozen ---------------------------------------
    fake_now = [1_900_000_000.0]
    with MotoServer() as server, MotoClock(source=lambda: fake_now[0]):
        sqs = boto3.client(
            "sqs",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        url = sqs.create_queue(QueueName="src")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="at-fake-time", DelaySeconds=900)
        print("\n[source mode] before skip:", len(receive(sqs, url)))
        fake_now[0] += 3 * 86400
        got = receive(sqs, url)
        print(
            "[source mode] after skipping 3 days:",
            [(m["Body"], m["Attributes"]["SentTimestamp"]) for m in got],
        )


if __name__ == "__main__":
    main()
