"""``step.wait_for_event``: wait for a matching event, or ``None`` once the timeout passes.

Plan: the memoized event, else a :class:`WaitOp` (the match compiled to CEL with this run's
own event values filled in). Decide: :class:`WaitForEvent`. Commit: the step Waiting (its
:class:`WaitDetail`), its waiter, and a WAKE due at the timeout. Resolve: a MATCH hands it
the event (:func:`on_match`); a WAKE at the timeout ends it with ``None`` (:func:`on_wake`).
An event sent before the waiter existed is found by the lookback (:func:`lookback`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from runtime.durations import user_duration
from runtime.engine.decisions import Decision, StepRef
from runtime.engine.template import Performing, StepTemplate
from runtime.errors import NonRetriableError
from runtime.events import Event, name_problem, shown_name
from runtime.expressions import Expression, ExpressionError, interpolate, match_expression
from runtime.records import (
    Commit,
    Message,
    RunRecord,
    RunState,
    StepKind,
    StepRecord,
    StepStatus,
    Waiter,
    WaiterKind,
)
from runtime.steps.base import (
    CommitContext,
    Hop,
    Resolution,
    StepKindSpec,
    due_hop,
    wake_message,
)
from runtime.steps.sleep import check_sleep


@dataclass(frozen=True)
class WaitForEvent:
    """Suspend until an event named ``event`` matches ``expression`` or ``until`` passes."""

    step: StepRef
    event: str
    expression: str
    until: float


@dataclass(frozen=True)
class WaitOp:
    """A wait to begin: the event name, the CEL match (values filled in), the timeout."""

    event: str
    expression: str
    until: float

    def decide(self, ref: StepRef, env: Performing) -> Decision:
        """Wait."""
        return WaitForEvent(ref, self.event, self.expression, self.until)


@dataclass(frozen=True)
class WaitDetail:
    """What a waiting step's record keeps (its ``detail``): what it waits for, since when.

    Attributes:
        event: The event name.
        expression: The CEL match over ``async``, this run's values filled in.
        since: Epoch ms from which a timeline event may answer it (its lookback).
    """

    event: str
    expression: str = ""
    since: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The record's ``detail``."""
        return {"event": self.event, "expression": self.expression, "since": self.since}

    @classmethod
    def of(cls, rec: StepRecord) -> WaitDetail:
        """The detail of waiting step ``rec``."""
        since = rec.detail.get("since")
        return cls(rec.detail["event"], rec.detail.get("expression", ""),
                   None if since is None else int(since))


class WaitSteps(StepTemplate):
    """``ctx.step.wait_for_event``."""

    def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: str | timedelta,
        match: str | None = None,
        if_: str | None = None,
    ) -> Event | None:
        """Wait for an event; return it, or ``None`` if ``timeout`` passes first.

        Args:
            step_id: The step id.
            event: The event name to wait for.
            timeout: How long to wait.
            match: A field path equal in the run's event and the awaited one, e.g. ``"data.id"``.
            if_: CEL over ``event`` (this run's event) and ``async`` (the awaited one).
        """
        ref, rec = self._lookup(step_id, StepKind.WAIT)
        if self._memo(rec):
            assert rec is not None
            return Event.model_validate(rec.output) if rec.output is not None else None
        where = f"step.wait_for_event '{step_id}'"
        if match and if_:
            raise NonRetriableError(f"{where}: give match or if_, not both")
        try:
            delta = user_duration(timeout, where=f"{where} timeout")
            problem = name_problem(event)
            if problem is not None:
                raise ValueError(f"{where}: invalid event name {shown_name(event)}: {problem}")
            source = match_expression(match) if match else (if_ or "")
            if source:
                Expression.check_names(source, ("event", "async"), where=where)
            try:
                expression = (interpolate(source, {"event": self._s.run.events[0]})
                              if source else "")
            except ExpressionError as exc:  # a value of the run's own event: not comparable
                raise ExpressionError(f"{where}: {exc}") from None
            if expression:
                Expression.compile(expression, where=where)
        except (ValueError, ExpressionError) as exc:
            raise NonRetriableError(str(exc)) from None
        check_sleep(step_id, delta)
        until = self._kept(rec, self._s.now + delta.total_seconds())
        assert until is not None
        raise self._suspend(ref, rec, WaitOp(event, expression, until))


def decision_point(state: RunState, step: StepRef) -> int:
    """When (epoch ms) the run reached ``step``: its trigger, or the latest result before it.

    A wait committed now also matches events sent since then (its lookback), so an event
    answering the run's previous step cannot slip in before the waiter exists. In a parallel
    branch, only results on its way count (the main line's, its own branch's, the branches
    enclosing it): a sibling that ended first says nothing of when this branch began, and
    a branch's wait may be committed minutes after its group (a redelivery).
    """
    scope = _scope(step.key, step.branch)
    points = [int(state.run.events[0].get("ts") or 0)]
    points += [int(r.ended_at * 1000) for r in state.steps.values()
               if r.ended_at is not None and _before(_scope(r.key, r.branch), scope)]
    return max(points)


def _scope(key: str, branch: bool) -> str:
    """The branch a step is in: ``""`` on the main line, ``"1"``, ``"1.0"`` (nested)."""
    return key.rpartition("@")[2] if branch and "@" in key else ""


def _before(scope: str, of: str) -> bool:
    """Whether steps in ``scope`` come before those in ``of`` (the same or an enclosing one)."""
    return not scope or of == scope or of.startswith(f"{scope}.")


def commit(d: WaitForEvent, cx: CommitContext) -> Commit:
    """The step Waiting, its waiter, and its WAKE due at the timeout."""
    s, run = d.step, cx.state.run
    detail = WaitDetail(d.event, d.expression, decision_point(cx.state, s))
    w = cx.write(s, status=StepStatus.WAITING, wake_at=d.until, detail=detail.to_json())
    waiter = Waiter(d.event, run.run_id, cx.fn.id, s.key, WaiterKind.STEP, d.expression, d.until)
    wake = wake_message(cx.fn.id, run.run_id, s.key, d.until)
    return replace(cx.base, steps=(w,), add_waiters=(waiter,), outbox=(wake,))


def waiter(run: RunRecord, rec: StepRecord) -> Waiter:
    """The waiter of waiting step ``rec`` (as its commit added it, for removal)."""
    detail = WaitDetail.of(rec)
    return Waiter(detail.event, run.run_id, run.function_id, rec.key, WaiterKind.STEP,
                  detail.expression)


def on_wake(rec: StepRecord, msg: Message, now: float) -> Hop | Resolution | None:
    """The timeout: once due, a wait still waiting ends with no event (``None``)."""
    assert rec.wake_at is not None
    hop = due_hop(rec.wake_at, now)
    if hop is not None:
        return hop
    return Resolution() if rec.status is StepStatus.WAITING else None


def on_match(rec: StepRecord, event: dict[str, Any]) -> Resolution | None:
    """A matching event: a wait still waiting ends with it."""
    return Resolution(output=event) if rec.status is StepStatus.WAITING else None


@dataclass(frozen=True)
class Lookback:
    """Which timeline events a just-committed wait must check (sent before its waiter).

    Attributes:
        event: The event name.
        since_ms: From when.
        expression: The wait's match.
        exclude: Ids that may not answer it: the run's own trigger(s), and events that
            resolved another of its waits (one event resolves a given run's wait once).
    """

    event: str
    since_ms: int
    expression: str
    exclude: frozenset[str]


def lookback(state: RunState, rec: StepRecord) -> Lookback | None:
    """The lookback of waiting step ``rec``; ``None`` for a record with no ``since``."""
    detail = WaitDetail.of(rec)
    if detail.since is None:
        return None
    own = {e["id"] for e in state.run.events}
    own |= {r.output["id"] for r in state.steps.values()
            if r.kind is StepKind.WAIT and isinstance(r.output, dict) and "id" in r.output}
    return Lookback(detail.event, detail.since, detail.expression, frozenset(own))


SPEC = StepKindSpec(StepKind.WAIT, commits={WaitForEvent: commit}, on_wake=on_wake,
                    waiter=waiter)
