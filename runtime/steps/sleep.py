"""``step.sleep`` / ``step.sleep_until``: pause the run until a time.

Plan: the memoized end, else a :class:`SleepOp` until the time (a pending sleep keeps the
time it was given). Decide: :class:`Sleep`, or at once :class:`StepSucceeded` when the time
has passed. Commit: the step Sleeping with its ``wake_at``, and a WAKE due then. Resolve: the
WAKE ends it (:func:`on_wake`; early deliveries hop again, a skip ends it now).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from runtime.durations import MAX_SLEEP, parse_instant, user_duration
from runtime.engine.decisions import Decision, StepRef, StepSucceeded
from runtime.engine.template import Performing, StepTemplate
from runtime.errors import NonRetriableError
from runtime.messages import is_skip
from runtime.records import Commit, Message, StepKind, StepRecord, StepStatus
from runtime.steps.base import (
    CommitContext,
    Hop,
    Resolution,
    StepKindSpec,
    due_hop,
    wake_message,
)


@dataclass(frozen=True)
class Sleep:
    """Suspend until ``until``."""

    step: StepRef
    until: float


@dataclass(frozen=True)
class SleepOp:
    """A sleep to begin: until when."""

    until: float

    def decide(self, ref: StepRef, env: Performing) -> Decision:
        """Sleep, or go on at once if the time has already passed."""
        return StepSucceeded(ref, None) if self.until <= env.rs.now else Sleep(ref, self.until)


def check_sleep(step_id: str, delta: timedelta) -> None:
    """Refuse a pause over the one-year limit (sleeps, and the timeouts of waits).

    Raises:
        NonRetriableError: It is longer.
    """
    if delta > MAX_SLEEP:
        raise NonRetriableError(
            f"step '{step_id}': sleeping {delta} is over the one-year limit ({MAX_SLEEP})"
        )


class SleepSteps(StepTemplate):
    """``ctx.step.sleep`` and ``ctx.step.sleep_until``."""

    def sleep(self, step_id: str, duration: str | timedelta) -> None:
        """Pause the run for ``duration`` ("30s", "15m", "1h", "3d", "1w" or a timedelta)."""
        ref, rec = self._lookup(step_id, StepKind.SLEEP)
        if self._memo(rec):
            return
        try:
            delta = user_duration(duration, where=f"step.sleep '{step_id}'")
        except ValueError as exc:
            raise NonRetriableError(str(exc)) from None
        check_sleep(step_id, delta)
        until = self._until(rec, self._s.now + delta.total_seconds())
        raise self._suspend(ref, rec, SleepOp(until))

    def sleep_until(self, step_id: str, until: datetime | str) -> None:
        """Pause the run until a time (aware ``datetime`` or ISO 8601 string)."""
        ref, rec = self._lookup(step_id, StepKind.SLEEP)
        if self._memo(rec):
            return
        try:
            at = parse_instant(until, where=f"step.sleep_until '{step_id}'").timestamp()
        except ValueError as exc:
            raise NonRetriableError(str(exc)) from None
        check_sleep(step_id, timedelta(seconds=at - self._s.now))
        raise self._suspend(ref, rec, SleepOp(self._until(rec, at)))

    def _until(self, rec: StepRecord | None, at: float) -> float:
        kept = self._kept(rec, at)
        assert kept is not None
        return kept


def commit(d: Sleep, cx: CommitContext) -> Commit:
    """The step Sleeping until its time, and its WAKE due then."""
    s = d.step
    w = cx.write(s, status=StepStatus.SLEEPING, wake_at=d.until)
    wake = wake_message(cx.fn.id, cx.state.run.run_id, s.key, d.until)
    return replace(cx.base, steps=(w,), outbox=(wake,))


def on_wake(rec: StepRecord, msg: Message, now: float) -> Hop | Resolution | None:
    """A WAKE ends the sleep once its time has come, or now when it is a skip."""
    if is_skip(msg) and rec.status is StepStatus.SLEEPING:
        return Resolution()
    assert rec.wake_at is not None
    hop = due_hop(rec.wake_at, now)
    if hop is not None:
        return hop
    return Resolution() if rec.status is StepStatus.SLEEPING else None


SPEC = StepKindSpec(StepKind.SLEEP, commits={Sleep: commit}, on_wake=on_wake)
