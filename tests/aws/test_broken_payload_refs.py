"""A reference to a payload object that does not exist is refused at once, on the emulators.

Events over EventBridge's 256 KB, and messages over SQS's, travel as a reference to an object
of the payload bucket. Anyone with ``events:PutEvents`` can send a reference to a key that
does not exist: that can never succeed, so the router drops that one event with a warning
naming it and the key (the rest of its batch goes on), and a function queue's record
referring to it is dead-lettered on its first delivery with the reason, instead of being
retried until the queue's maxReceiveCount.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.dlq import DeadLetterQueues
from runtime.backends.aws.payloads import REF_KEY, BrokenReferenceError, PayloadError, S3Payloads
from runtime.dlq import DeadLetter
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from stepkit_emulators.lambda_events import sqs_lambda_event
from tests.conftest import START

pytestmark = pytest.mark.aws

TS = int(START.timestamp() * 1000)


def _app() -> App:
    app = App("vault")

    @app.function(id="ingest", trigger=TriggerEvent("video/uploaded"), retries=0)
    def ingest(ctx: Context) -> str:
        return str(ctx.event.data["title"])

    @app.function(id="watch", trigger=TriggerEvent("video/requested"), retries=0)
    def watch(ctx: Context) -> Any:
        got = ctx.step.wait_for_event("uploaded", event="video/uploaded", match="data.title",
                                      timeout="1h")
        return got.data if got is not None else None

    return app


@pytest.fixture
def h(aws: AwsEmulators) -> Harness:
    return Harness.aws(_app(), aws, start=START)


def backend(h: Harness) -> AwsBackend:
    assert isinstance(h.backend, AwsBackend)
    return h.backend


def forged(event_id: str = "e-forged") -> dict[str, Any]:
    """An event's detail referring to an object of its own prefix that was never put."""
    return {"id": event_id, "name": "video/uploaded", "ts": TS,
            REF_KEY: {"key": f"runs/{event_id}/nope.json", "bytes": 300_000, "sha256": "0" * 64}}


def honest(title: str) -> dict[str, Any]:
    return {"id": f"e-{title}", "name": "video/uploaded", "data": {"title": title}, "user": {},
            "ts": TS}


def put_events(h: Harness, *details: dict[str, Any]) -> None:
    b = backend(h)
    b.clients["events"].put_events(Entries=[
        {"Source": "vault", "DetailType": d["name"], "Detail": json.dumps(d),
         "EventBusName": b.resources.bus} for d in details])


def dead_letters(h: Harness) -> list[DeadLetter]:
    b = backend(h)
    return DeadLetterQueues(b.resources, b.clients["sqs"]).messages()


def test_a_reference_to_a_missing_object_is_refused_at_once_and_the_rest_goes_on(
        h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stepkit"):
        put_events(h, forged(), honest("cats"))
        h.settle()  # no time passes: a record that failed would only come back later
    (run,) = h.runs()
    assert (run.status, run.output) == ("Completed", "cats")
    (dead,) = dead_letters(h)  # the trigger's delivery, in ingest's DLQ; none from the router
    assert dead.queue == backend(h).resources.function("ingest").dlq
    assert dead.error is not None and dead.error.startswith(
        "event e-forged ('video/uploaded'): its stored object runs/e-forged/nope.json cannot "
        "be read: s3://")
    assert dead.error.endswith("/runs/e-forged/nope.json does not exist")
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == ["event e-forged ('video/uploaded') dropped: its stored object "
                       f"runs/e-forged/nope.json cannot be read (s3://"
                       f"{backend(h).payload_bucket}/runs/e-forged/nope.json does not exist)"]
    assert all(r.levelno == logging.WARNING for r in caplog.records
               if "dropped" in r.getMessage())


def test_the_router_drops_only_the_broken_event_of_its_batch(h: Harness) -> None:
    h.send("video/requested", {"title": "dogs"})
    h.settle()
    assert h.only_run("watch").status == "Running"
    b = backend(h)
    envelopes = [{"detail-type": d["name"], "id": f"eb-{d['id']}", "time": "2026-01-01T00:00:00Z",
                  "source": "vault", "detail": d} for d in (forged(), honest("dogs"))]
    records = sqs_lambda_event(
        [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": json.dumps(e),
          "MD5OfBody": "", "Attributes": {"ApproximateReceiveCount": "1"}}
         for i, e in enumerate(envelopes)], queue_arn="arn:aws:sqs:us-east-1:1:router",
        region="us-east-1")
    assert b.router.handle_batch(records, None, router=True) == {"batchItemFailures": []}
    h.settle()
    assert h.only_run("watch").output == {"title": "dogs"}


def test_a_stored_message_whose_object_is_missing_is_dead_lettered_at_once(h: Harness) -> None:
    b = backend(h)
    fn = b.resources.function("ingest")
    queue_url = b.clients["sqs"].get_queue_url(QueueName=fn.queue)["QueueUrl"]
    ref = {"key": "runs/r-1/missing.json", "bytes": 300_000, "sha256": "0" * 64}
    b.clients["sqs"].send_message(QueueUrl=queue_url,
                                  MessageBody=json.dumps({"type": "stored", REF_KEY: ref}))
    h.settle()
    (dead,) = dead_letters(h)
    assert dead.queue == fn.dlq
    assert dead.error == (f"a stored message that cannot be read: s3://{b.payload_bucket}/"
                          "runs/r-1/missing.json does not exist")


def test_only_a_missing_object_or_other_bytes_are_permanent(aws: AwsEmulators) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="refs")
    payloads = S3Payloads("refs", s3)
    ref = payloads.offload("r1", "z" * 100_000)
    assert payloads.resolve(ref) == "z" * 100_000
    with pytest.raises(BrokenReferenceError, match=r"runs/r1/gone\.json does not exist") as gone:
        payloads.resolve({REF_KEY: {**ref[REF_KEY], "key": "runs/r1/gone.json"}})
    assert not gone.value.is_retriable
    with pytest.raises(BrokenReferenceError, match="malformed payload reference"):
        payloads.resolve({REF_KEY: {"bytes": 1}})
    s3.put_object(Bucket="refs", Key=ref[REF_KEY]["key"], Body=b'"tampered"')
    with pytest.raises(BrokenReferenceError, match="does not match its digest"):
        payloads.resolve(ref)
    # A bucket that is not there is no forged reference: it stays retriable.
    with pytest.raises(PayloadError) as failed:
        S3Payloads("no-such-bucket", s3).resolve(ref)
    assert failed.value.is_retriable and not isinstance(failed.value, BrokenReferenceError)
