"""Clocks: the system clock, and a fake one tests skip forward."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from runtime.durations import parse_duration


class SystemClock:
    """The real time."""

    def now(self) -> float:
        """Epoch seconds."""
        return time.time()


class FakeClock:
    """A clock that only moves when told to, so a three-day sleep takes milliseconds.

    Args:
        start: Initial time (epoch seconds or aware datetime); defaults to the real time.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Epoch seconds."""
        with self._lock:
            return self._now

    def advance(self, by: str | float | timedelta) -> None:
        """Move forward by a duration ("3d", seconds, timedelta)."""
        delta = parse_duration(by, where="FakeClock.advance").total_seconds()
        with self._lock:
            self._now += delta

    def set(self, to: float | datetime) -> None:
        """Jump to a time (never backwards)."""
        ts = to.timestamp() if isinstance(to, datetime) else float(to)
        with self._lock:
            if ts < self._now:
                raise ValueError("FakeClock cannot move backwards")
            self._now = ts
