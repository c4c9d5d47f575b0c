"""SQS adapter: every message goes straight to its function's queue, with a delay."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from runtime.backends.aws.payloads import REF_KEY, S3Payloads
from runtime.backends.aws.resources import MAX_SQS_DELAY
from runtime.backends.aws.timers import SchedulerTimers
from runtime.errors import StepkitError
from runtime.orchestration.protocols import Clock
from runtime.records import Message, TimerCancel

_BATCH = 10
#: SQS's limit on a message body (256 KiB), less room for the attributes SQS counts with it.
MAX_MESSAGE_BYTES = 250 * 1024
MAX_BATCH_BYTES = 256 * 1024  # SendMessageBatch: the bodies of one call together
#: The ``type`` of a body that holds a reference to a message kept in S3.
STORED = "stored"


class QueueError(StepkitError):
    """SQS refused messages.

    Attributes:
        codes: The codes SQS gave the entries it refused (throttling among them is pushback).
    """

    def __init__(self, message: str, *, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.codes = codes


def _batches(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``entries`` in SendMessageBatch calls: at most 10, and 256 KiB of bodies, each.

    SQS refuses a batch whose bodies add up to more than one message may hold (moto does
    not): ten 64 KiB matches must go in three calls, not one.
    """
    batches: list[list[dict[str, Any]]] = []
    size = 0
    for e in entries:
        n = len(str(e["MessageBody"]).encode())
        if not batches or len(batches[-1]) == _BATCH or size + n > MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(e)
        size += n
    return batches


def send_bodies(client: Any, url: str, entries: list[dict[str, Any]]) -> None:
    """Send ``entries`` (``MessageBody``, ...) with ``SendMessageBatch`` (see ``_batches``).

    Failed entries are retried once.

    Raises:
        QueueError: Some still failed.
    """
    for batch in _batches(entries):
        chunk = [{**e, "Id": str(n)} for n, e in enumerate(batch)]
        result = client.send_message_batch(QueueUrl=url, Entries=chunk)
        failed = result.get("Failed") or []
        if failed:
            retry = [chunk[int(f["Id"])] for f in failed]
            again = client.send_message_batch(QueueUrl=url, Entries=retry)
            if again.get("Failed"):
                reasons = sorted({f.get("Code", "?") for f in again["Failed"]})
                raise QueueError(
                    f"SQS refused {len(again['Failed'])} message(s) to {url}: "
                    f"{', '.join(reasons)}", codes=tuple(reasons))


class SqsQueue:
    """The ``Queue`` protocol on SQS.

    Every message goes straight to its function's queue: the worker's own (its next step,
    a timer hop) or another's (an invoked child's start, a parent's resolve, the router's
    matches and cancels). Only stepkit's roles may send to these queues, so control
    messages never travel where an outside producer could forge one (the app's bus
    carries only events). A message due later than SQS can delay (900 s) goes on a
    one-time Scheduler schedule that delivers it to the same queue when it is due
    (``timers``). Without timers, or for a message too large for a schedule, it is delivered
    early and re-enqueued by the worker for the remainder (a timer hop), without loading
    the run.

    A message over SQS's 256 KiB (an invoked child's START with large data) is put to the
    payload bucket and travels as a reference (``{"type": "stored", ...}``), which the worker
    reads back (the pattern of Amazon's SQS extended client); without a bucket it is refused
    here, naming it, since moto would accept what SQS refuses.

    Args:
        queue_url: The URL of a function's queue, by function id.
        clock: Time source for delays.
        client: A boto3 ``sqs`` client.
        timers: Where messages due beyond 900 s go; ``None``: SQS timer hops.
        payloads: Where bodies too large for SQS go; ``None``: they are refused.
    """

    def __init__(self, queue_url: Callable[[str], str], clock: Clock, client: Any,
                 *, timers: SchedulerTimers | None = None,
                 payloads: S3Payloads | None = None) -> None:
        self.queue_url = queue_url
        self.clock = clock
        self.client = client
        self.timers = timers
        self.payloads = payloads

    def send(self, messages: Sequence[Message]) -> None:
        """Enqueue each message on its function's queue, delayed until it is due.

        Raises:
            QueueError: SQS refused messages.
            TimerError: Scheduler refused a long timer.
        """
        now = self.clock.now()
        by_url: dict[str, list[dict[str, Any]]] = {}
        for m in messages:
            body = self.body(m)
            if (self.timers is not None and m.due is not None
                    and math.ceil(m.due - now) > MAX_SQS_DELAY and self.timers.schedule(m, body)):
                continue
            by_url.setdefault(self.queue_url(m.function_id), []).append({
                "MessageBody": body,
                "DelaySeconds": self.delay(m, now),
            })
        for url, entries in by_url.items():
            send_bodies(self.client, url, entries)

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        """Delete the schedules of moot timers (those set beyond SQS's 900 s delay).

        An SQS delayed message cannot be deleted: it fires into work that moved on, which
        does nothing.

        Raises:
            TimerError: Scheduler refused a delete (the delivery comes back to retry it).
        """
        if self.timers is None:
            return
        for t in timers:
            if math.ceil(t.due - t.set_at) > MAX_SQS_DELAY:
                self.timers.delete(t)

    def body(self, message: Message) -> str:
        """The SQS body of ``message``: its JSON, or a reference to it when too large.

        Raises:
            QueueError: It is too large and there is no payload bucket.
        """
        body = json.dumps(message.to_json(), separators=(",", ":"))
        size = len(body.encode())
        if size <= MAX_MESSAGE_BYTES:
            return body
        if self.payloads is None:
            raise QueueError(
                f"{message.kind.value} message {message.id} of run {message.run_id} is {size} "
                f"bytes, over the {MAX_MESSAGE_BYTES} bytes we put in one SQS message (SQS takes "
                "256 KiB with attributes), and no payload bucket is configured "
                "(STEPKIT_PAYLOAD_BUCKET)")
        ref = self.payloads.offload(message.run_id, message.to_json())
        return json.dumps({"type": STORED, REF_KEY: ref[REF_KEY]}, separators=(",", ":"))

    @staticmethod
    def delay(message: Message, now: float) -> int:
        """Seconds to delay: until due, capped at SQS's 900 s."""
        if message.due is None:
            return 0
        return max(0, min(MAX_SQS_DELAY, math.ceil(message.due - now)))
