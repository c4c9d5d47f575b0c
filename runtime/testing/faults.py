"""Fault injection for tests: make at-least-once delivery happen on purpose."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.orchestration.protocols import Queue
from runtime.records import Message, TimerCancel


class DuplicatingQueue:
    """Wraps a queue so every message is sent twice, as SQS may deliver it."""

    def __init__(self, inner: Queue) -> None:
        self.inner = inner

    def send(self, messages: Sequence[Message]) -> None:
        """Send each message twice."""
        self.inner.send([*messages, *messages])

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        """Delete moot timers (as the wrapped queue does)."""
        self.inner.cancel(timers)
