"""What every step kind shares: the commit context, the result commits, resolutions.

Each step kind (:mod:`runtime.steps.run`, ``sleep``, ``wait``, ``invoke``, ``send``,
``parallel``) keeps in its own module its ``ctx.step`` method (planning), its op (deciding),
its decision and the commit that records it, and how a pending step of its kind resolves.
A resolution is a value too (:class:`Resolution` or :class:`Hop`): the orchestrator applies
it with :func:`resolution_commit`, the one rule for ending a pending step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from runtime.durations import format_instant
from runtime.engine.decisions import StepFailed, StepRef, StepSucceeded
from runtime.engine.outcomes import COUNTED_OUTPUT_BYTES
from runtime.records import (
    Commit,
    ErrorInfo,
    Message,
    MessageKind,
    RunRecord,
    RunState,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    TimerCancel,
    Waiter,
)

if TYPE_CHECKING:
    from runtime.app import App, FunctionDef

#: Slack when comparing a due time with the clock: a message due within it is due now.
DUE_SLACK = 0.001
MAX_ATTEMPT_HISTORY = 20  # as many attempts as retries allow (0-20)
_log = logging.getLogger("stepkit")


@dataclass(frozen=True)
class CommitContext:
    """What a decision's commit is made from: the run as the decision saw it, and the message.

    Attributes:
        app: Every function (an invoke looks up its child).
        fn: The run's function.
        state: The run state the engine decided on.
        msg: The message being handled (its id is the commit's).
        now: The time of the commit.
    """

    app: App
    fn: FunctionDef
    state: RunState
    msg: Message
    now: float

    @property
    def base(self) -> Commit:
        """An empty commit conditioned on the run's version, made by this message."""
        return Commit(msg_id=self.msg.id, expect_version=self.state.run.version)

    @property
    def next(self) -> Message:
        """The run's next CONTINUE (at the version the commit makes)."""
        run = self.state.run
        return Message(MessageKind.CONTINUE, self.fn.id, run.run_id, version=run.version + 1)

    def write(self, ref: StepRef, **fields: Any) -> StepWrite:
        """The step's new record, conditioned on the record the decision was made from."""
        old = self.state.steps.get(ref.key)
        fields.setdefault("attempt", ref.attempt)
        fields.setdefault("branch", ref.branch)
        rec = StepRecord(key=ref.key, id=ref.id, kind=ref.kind,
                         started_at=old.started_at if old and old.started_at else self.now,
                         **fields)
        return StepWrite(rec, old.status if old else None, old.attempt if old else 0)

    def attempts(self, ref: StepRef, error: ErrorInfo | None) -> dict[str, Any]:
        """The step's ``detail`` with its failed attempts so far: ``{"errors": [...]}``.

        Each failed attempt keeps its number, when it failed and its error (cut to 500
        characters), so the dashboard and CLI can show the history of a retried step, not
        only its last error. ``error`` is ``None`` for a step that succeeded.
        """
        old = self.state.steps.get(ref.key)
        errors = list((old.detail if old else {}).get("errors") or [])
        if error is not None:
            errors.append({"attempt": ref.attempt + 1, "at": format_instant(self.now),
                           "error": f"{error.name}: {error.message}"[:500]})
        return {"errors": errors[-MAX_ATTEMPT_HISTORY:]} if errors else {}


def commit_result(d: StepSucceeded | StepFailed, cx: CommitContext) -> Commit:
    """A step got its result (any kind that ends at once): record it, continue the run."""
    done = isinstance(d, StepSucceeded)
    detail = cx.attempts(d.step, None if done else d.error)  # type: ignore[union-attr]
    if isinstance(d, StepSucceeded) and d.size >= COUNTED_OUTPUT_BYTES:
        detail["output_bytes"] = d.size  # counted against the run's 32 MiB (max_run_bytes)
    w = cx.write(
        d.step, ended_at=cx.now, detail=detail,
        status=StepStatus.COMPLETED if done else StepStatus.FAILED,
        output=d.output if isinstance(d, StepSucceeded) else None,
        error=d.error if isinstance(d, StepFailed) else None,
    )
    _log.info("step %s of run %s %s", d.step.key, cx.state.run.run_id, w.record.status.value)
    return replace(cx.base, steps=(w,), outbox=(cx.next,))


def wake_message(function_id: str, run_id: str, key: str, due: float) -> Message:
    """The WAKE of pending step ``key``, its id derived from the step.

    So a commit that ends the step otherwise (a match, a child's end, the run's end) can name
    the timer to delete.
    """
    return Message(MessageKind.WAKE, function_id, run_id, id=wake_id(run_id, key), key=key,
                   due=due)


def wake_id(run_id: str, key: str) -> str:
    """The id of step ``key``'s WAKE timer."""
    return f"wake-{run_id}-{key}"


def timeout_id(run_id: str) -> str:
    """The id of the run's finish-deadline TIMEOUT timer."""
    return f"timeout-{run_id}"


def moot_timers(state: RunState, msg_id: str, *, ending: bool) -> tuple[TimerCancel, ...]:
    """The timers a commit made by ``msg_id`` makes moot, to delete once it lands.

    The WAKE of each step it ends (``ending``: the run ends, so every pending step's, and its
    TIMEOUT too), except the timer that is the message itself (it has fired).
    """
    run = state.run
    out = [TimerCancel(wake_id(run.run_id, rec.key), run.function_id, rec.wake_at,
                       rec.started_at or run.created_at)
           for rec in state.steps.values()
           if rec.wake_at is not None and rec.status in _TIMED
           and wake_id(run.run_id, rec.key) != msg_id]
    if ending and run.deadline is not None and timeout_id(run.run_id) != msg_id:
        out.append(TimerCancel(timeout_id(run.run_id), run.function_id, run.deadline,
                               run.created_at))
    return tuple(out)


_TIMED = (StepStatus.SLEEPING, StepStatus.WAITING, StepStatus.INVOKING)


@dataclass(frozen=True)
class Hop:
    """Not due yet: send the message again, due at ``due`` (a timer hop)."""

    due: float


@dataclass(frozen=True)
class Resolution:
    """A pending step ends: completed with ``output``, or failed with ``error``."""

    output: Any = None
    error: ErrorInfo | None = None

    @property
    def status(self) -> StepStatus:
        """The step's final status."""
        return StepStatus.FAILED if self.error else StepStatus.COMPLETED


#: How a step kind's pending step answers its WAKE (its ``wake_at`` passed, or a skip):
#: ``None`` when there is nothing to do.
OnWake = Callable[[StepRecord, Message, float], "Hop | Resolution | None"]


@dataclass(frozen=True)
class StepKindSpec:
    """One step kind's entry in the table the orchestrator dispatches through.

    Attributes:
        kind: The kind.
        commits: The commit of each decision type this kind makes.
        on_wake: How its pending step answers a WAKE; ``None``: it never sleeps.
        waiter: The waiter its pending step holds (removed when it resolves or the run
            ends); ``None``: it holds none.
    """

    kind: StepKind
    commits: dict[type, Callable[[Any, CommitContext], Commit]]
    on_wake: OnWake | None = None
    waiter: Callable[[RunRecord, StepRecord], Waiter] | None = None


def resolution_commit(spec: StepKindSpec, state: RunState, rec: StepRecord,
                      resolution: Resolution, msg_id: str, now: float) -> Commit:
    """End pending step ``rec`` with ``resolution`` and continue the run (its one commit).

    Conditioned on the step still being in the status it was read in, so a second
    resolution (a late wake after a match, a duplicate) commits nothing.
    """
    new = replace(rec, status=resolution.status, output=resolution.output,
                  error=resolution.error, ended_at=now)
    run = state.run
    own = RunState(run, {rec.key: rec})  # its own timer only: other steps go on pending
    return Commit(
        msg_id=msg_id,
        expect_version=run.version,
        steps=(StepWrite(new, rec.status, rec.attempt),),
        remove_waiters=(spec.waiter(run, rec),) if spec.waiter else (),
        outbox=(Message(MessageKind.CONTINUE, run.function_id, run.run_id,
                        version=run.version + 1),
                *moot_timers(own, msg_id, ending=False)),
    )


def due_hop(wake_at: float, now: float) -> Hop | None:
    """A :class:`Hop` to ``wake_at`` if it is still ahead of ``now``; else ``None`` (due)."""
    return Hop(wake_at) if wake_at > now + DUE_SLACK else None
