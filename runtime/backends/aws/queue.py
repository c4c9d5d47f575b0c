"""SQS adapter: every message goes straight to its function's queue, with a delay."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from runtime.backends.aws.resources import MAX_SQS_DELAY
from runtime.backends.aws.timers import SchedulerTimers
from runtime.core.protocols import Clock
from runtime.errors import StepkitError
from runtime.records import Message

_BATCH = 10


class QueueError(StepkitError):
    """SQS refused messages."""


def send_bodies(client: Any, url: str, entries: list[dict[str, Any]]) -> None:
    """Send ``entries`` (``MessageBody``, ...) with ``SendMessageBatch``, 10 at a time.

    Failed entries are retried once.

    Raises:
        QueueError: Some still failed.
    """
    for i in range(0, len(entries), _BATCH):
        chunk = [{**e, "Id": str(n)} for n, e in enumerate(entries[i : i + _BATCH])]
        result = client.send_message_batch(QueueUrl=url, Entries=chunk)
        failed = result.get("Failed") or []
        if failed:
            retry = [chunk[int(f["Id"])] for f in failed]
            again = client.send_message_batch(QueueUrl=url, Entries=retry)
            if again.get("Failed"):
                reasons = sorted({f.get("Code", "?") for f in again["Failed"]})
                raise QueueError(
                    f"SQS refused {len(again['Failed'])} message(s) to {url}: "
                    f"{', '.join(reasons)}"
                )


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

    Args:
        queue_url: The URL of a function's queue, by function id.
        clock: Time source for delays.
        client: A boto3 ``sqs`` client.
        timers: Where messages due beyond 900 s go; ``None``: SQS timer hops.
    """

    def __init__(self, queue_url: Callable[[str], str], clock: Clock, client: Any,
                 *, timers: SchedulerTimers | None = None) -> None:
        self.queue_url = queue_url
        self.clock = clock
        self.client = client
        self.timers = timers

    def send(self, messages: Sequence[Message]) -> None:
        """Enqueue each message on its function's queue, delayed until it is due.

        Raises:
            QueueError: SQS refused messages.
            TimerError: Scheduler refused a long timer.
        """
        now = self.clock.now()
        by_url: dict[str, list[dict[str, Any]]] = {}
        for m in messages:
            body = json.dumps(m.to_json(), separators=(",", ":"))
            if (self.timers is not None and m.due is not None
                    and math.ceil(m.due - now) > MAX_SQS_DELAY and self.timers.schedule(m, body)):
                continue
            by_url.setdefault(self.queue_url(m.function_id), []).append({
                "MessageBody": body,
                "DelaySeconds": self.delay(m, now),
            })
        for url, entries in by_url.items():
            send_bodies(self.client, url, entries)

    @staticmethod
    def delay(message: Message, now: float) -> int:
        """Seconds to delay: until due, capped at SQS's 900 s."""
        if message.due is None:
            return 0
        return max(0, min(MAX_SQS_DELAY, math.ceil(message.due - now)))
