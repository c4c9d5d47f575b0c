"""``step.invoke``: run another function as a child run and return its output.

Plan: the memoized output, else an :class:`InvokeOp` (data checked for size and JSON).
Decide: :class:`Invoke`. Commit: the step Invoking (its :class:`InvokeDetail`), the child's
START, and a WAKE at the timeout if there is one; an unknown function fails the step at
once. Resolve: the child's RESOLVE hands back its output or error
(:func:`on_child_finished`); a WAKE at the timeout fails it (:func:`on_wake`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from runtime.durations import user_duration
from runtime.engine.decisions import Decision, StepRef
from runtime.engine.template import Performing, StepTemplate
from runtime.errors import FunctionNotFoundError, NonRetriableError
from runtime.events import FUNCTION_INVOKED, MAX_INVOKE_BYTES
from runtime.messages import StartPayload
from runtime.orchestration.ids import child_run_id
from runtime.records import (
    Commit,
    ErrorInfo,
    Message,
    Outgoing,
    ParentRef,
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
)
from runtime.steps.base import (
    CommitContext,
    Hop,
    Resolution,
    StepKindSpec,
    due_hop,
    wake_message,
)
from runtime.values import problem

if TYPE_CHECKING:
    from runtime.app import FunctionDef


@dataclass(frozen=True)
class Invoke:
    """Start a run of ``function_id`` with ``data`` and suspend until it ends or ``until``."""

    step: StepRef
    function_id: str
    data: dict[str, Any]
    until: float | None


@dataclass(frozen=True)
class InvokeOp:
    """An invoke to begin: the function, its data, the timeout (if any)."""

    function_id: str
    data: dict[str, Any]
    until: float | None

    def decide(self, ref: StepRef, env: Performing) -> Decision:
        """Invoke."""
        return Invoke(ref, self.function_id, self.data, self.until)


@dataclass(frozen=True)
class InvokeDetail:
    """What an invoking step's record keeps (its ``detail``): the child function and run."""

    function_id: str
    child_run_id: str

    def to_json(self) -> dict[str, Any]:
        """The record's ``detail``."""
        return {"function_id": self.function_id, "child_run_id": self.child_run_id}

    @classmethod
    def of(cls, rec: StepRecord) -> InvokeDetail:
        """The detail of invoking step ``rec``."""
        return cls(str(rec.detail.get("function_id")), str(rec.detail.get("child_run_id")))


class InvokeSteps(StepTemplate):
    """``ctx.step.invoke``."""

    def invoke(
        self,
        step_id: str,
        *,
        function: FunctionDef | str,
        data: Mapping[str, Any] | None = None,
        timeout: str | timedelta | None = None,
    ) -> Any:
        """Run another function as a child run and return its output.

        Raises:
            StepError: The child run failed, was cancelled or timed out.
        """
        ref, rec = self._lookup(step_id, StepKind.INVOKE)
        if self._memo(rec):
            assert rec is not None
            return rec.output
        function_id = function if isinstance(function, str) else function.id
        if data is not None and not isinstance(data, Mapping):
            raise NonRetriableError(
                f"step.invoke '{step_id}': data must be a dict, got {type(data).__name__}")
        found = problem(data or {}, "data")
        if found is not None:
            raise NonRetriableError(f"step.invoke '{step_id}': {found}")
        size = len(json.dumps(dict(data or {}), separators=(",", ":")).encode())
        if size > MAX_INVOKE_BYTES:
            raise NonRetriableError(
                f"step.invoke '{step_id}': data is {size} bytes of JSON, over the "
                f"{MAX_INVOKE_BYTES}-byte limit (it becomes the child's triggering event)"
            )
        until = None
        if timeout is not None:
            try:
                delta = user_duration(timeout, where=f"step.invoke '{step_id}' timeout")
            except ValueError as exc:
                raise NonRetriableError(str(exc)) from None
            until = self._s.now + delta.total_seconds()
        op = InvokeOp(function_id, dict(data or {}), self._kept(rec, until))
        raise self._suspend(ref, rec, op)


def commit(d: Invoke, cx: CommitContext) -> Commit:
    """The step Invoking, the child's START and the timeout's WAKE; or failed: no such function."""
    s, run, now = d.step, cx.state.run, cx.now
    try:
        child_fn = cx.app.get(d.function_id)
        if child_fn.retired:
            raise FunctionNotFoundError(
                f"function '{child_fn.id}' is retired (draining before removal): it starts "
                "no new runs")
    except FunctionNotFoundError as exc:
        w = cx.write(s, status=StepStatus.FAILED, ended_at=now,
                     error=ErrorInfo(type(exc).__name__, str(exc), False))
        return replace(cx.base, steps=(w,), outbox=(cx.next,))
    child_id = child_run_id(run.run_id, s.key, now)
    event = {"id": child_id, "name": FUNCTION_INVOKED, "data": d.data, "user": {},
             "ts": int(now * 1000)}
    w = cx.write(s, status=StepStatus.INVOKING, wake_at=d.until,
                 detail=InvokeDetail(child_fn.id, child_id).to_json())
    parent = ParentRef(run.run_id, cx.fn.id, s.key)
    outbox: list[Outgoing] = [StartPayload((event,), parent=parent).message(child_fn.id,
                                                                              child_id)]
    if d.until is not None:
        outbox.append(wake_message(cx.fn.id, run.run_id, s.key, d.until))
    return replace(cx.base, steps=(w,), outbox=tuple(outbox))


def on_wake(rec: StepRecord, msg: Message, now: float) -> Hop | Resolution | None:
    """The timeout: once due, an invoke still waiting for its child fails."""
    assert rec.wake_at is not None
    hop = due_hop(rec.wake_at, now)
    if hop is not None:
        return hop
    if rec.status is not StepStatus.INVOKING:
        return None
    return Resolution(error=ErrorInfo(
        "InvokeTimeoutError",
        f"invoked function '{rec.detail.get('function_id')}' did not finish in time",
        retriable=False,
    ))


def on_child_finished(child: RunRecord) -> Resolution | None:
    """The child run's end: its output, or its error; ``None`` while it is not finished."""
    if not child.status.finished:
        return None
    if child.status is RunStatus.COMPLETED:
        return Resolution(output=child.output)
    err = child.error or ErrorInfo("Error", "child run failed", False)
    return Resolution(error=ErrorInfo(
        err.name, f"invoked run {child.run_id} {child.status.value.lower()}: {err.message}",
        False))


SPEC = StepKindSpec(StepKind.INVOKE, commits={Invoke: commit}, on_wake=on_wake)
