"""SQS adapter: a function's own messages go to its queue with a delay; others via the bus."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from runtime.backends.aws.bus import EventBridgeBus
from runtime.backends.aws.resources import MAX_SQS_DELAY
from runtime.core.protocols import Clock
from runtime.errors import StepkitError
from runtime.records import Message

_BATCH = 10


class QueueError(StepkitError):
    """SQS refused messages."""


class SqsQueue:
    """The ``Queue`` protocol on SQS.

    Each Lambda may send only to its own queue (least privilege); a message for another
    function (an invoked child's start, a parent's resolve, the router's continues) travels as
    an EventBridge entry that the target function's message rule delivers to its queue.
    Delays longer than SQS allows (900 s) are delivered early and re-enqueued by the worker
    for the remainder (a timer hop), without loading the run.

    Args:
        own_function_id: The function whose queue this Lambda consumes (``None``: the router).
        own_queue_url: That queue's URL.
        bus: Routes other functions' messages.
        clock: Time source for delays.
        client: A boto3 ``sqs`` client.
    """

    def __init__(
        self,
        own_function_id: str | None,
        own_queue_url: str,
        bus: EventBridgeBus,
        clock: Clock,
        client: Any,
    ) -> None:
        self.own = own_function_id
        self.url = own_queue_url
        self.bus = bus
        self.clock = clock
        self.client = client

    def send(self, messages: Sequence[Message]) -> None:
        """Enqueue: own function directly, others through the bus."""
        mine = [m for m in messages if m.function_id == self.own]
        others = [m for m in messages if m.function_id != self.own]
        if others:
            self.bus.send_messages(others)
        now = self.clock.now()
        for i in range(0, len(mine), _BATCH):
            chunk = mine[i : i + _BATCH]
            entries = [
                {
                    "Id": str(n),
                    "MessageBody": json.dumps(m.to_json(), separators=(",", ":")),
                    "DelaySeconds": self.delay(m, now),
                }
                for n, m in enumerate(chunk)
            ]
            result = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            failed = result.get("Failed") or []
            if failed:
                retry = [entries[int(f["Id"])] for f in failed]
                again = self.client.send_message_batch(QueueUrl=self.url, Entries=retry)
                if again.get("Failed"):
                    reasons = sorted({f.get("Code", "?") for f in again["Failed"]})
                    raise QueueError(
                        f"SQS refused {len(again['Failed'])} message(s) to {self.url}: "
                        f"{', '.join(reasons)}"
                    )

    @staticmethod
    def delay(message: Message, now: float) -> int:
        """Seconds to delay: until due, capped at SQS's 900 s."""
        if message.due is None:
            return 0
        return max(0, min(MAX_SQS_DELAY, math.ceil(message.due - now)))
