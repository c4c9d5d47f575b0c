"""What real SQS refuses and moto accepts, refused (or split) by us first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.backends.aws.payloads import REF_KEY
from runtime.backends.aws.queue import MAX_BATCH_BYTES, QueueError, SqsQueue, _batches
from runtime.orchestration.clock import FakeClock
from runtime.records import Message, MessageKind


def test_batches_hold_at_most_ten_entries_and_256_kib_of_bodies() -> None:
    entries = [{"MessageBody": "x" * (64 * 1024)} for _ in range(10)]
    batches = _batches(entries)
    assert [len(b) for b in batches] == [4, 4, 2]  # 4 x 64 KiB = 256 KiB fits, a 5th does not
    assert all(sum(len(e["MessageBody"]) for e in b) <= MAX_BATCH_BYTES for b in batches)
    assert [len(b) for b in _batches([{"MessageBody": "m"}] * 25)] == [10, 10, 5]


class _Payloads:
    def __init__(self) -> None:
        self.put: list[Any] = []

    def offload(self, run_id: str, value: Any) -> Any:
        self.put.append((run_id, value))
        return {REF_KEY: {"key": f"runs/{run_id}/abc.json", "bytes": 1, "sha256": "abc"}}


def _start(size: int) -> Message:
    return Message(MessageKind.START, "fn", "r1", id="m1",
                   payload={"events": [{"data": {"blob": "x" * size}}]})


def test_a_message_too_large_for_sqs_is_refused_without_a_payload_bucket() -> None:
    queue = SqsQueue(lambda fn: "url", FakeClock(0), client=None)
    assert json.loads(queue.body(_start(1000))) == _start(1000).to_json()  # small: as it is
    with pytest.raises(QueueError, match=r"start message m1 of run r1 is \d+ bytes, over the "
                                         r"256000 bytes we put in one SQS message"):
        queue.body(_start(300 * 1024))


def test_a_message_too_large_for_sqs_travels_as_a_reference() -> None:
    payloads = _Payloads()
    queue = SqsQueue(lambda fn: "url", FakeClock(0), client=None,
                     payloads=payloads)  # type: ignore[arg-type]
    body = queue.body(_start(300 * 1024))
    assert body == ('{"type":"stored","$stepkit_payload":{"key":"runs/r1/abc.json",'
                    '"bytes":1,"sha256":"abc"}}')
    assert payloads.put[0][1] == _start(300 * 1024).to_json()
