"""Decisions become commits: the one atomic write that records each engine decision.

Every rule about what a decision changes lives here: which step record it writes and on what
condition, what the run record becomes, which waiters appear or go, and what must be sent
once the commit lands (its outbox). The orchestrator applies the commit and sends the outbox.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from typing import Any

from runtime.app import App, FunctionDef
from runtime.core.ids import child_run_id
from runtime.durations import format_instant
from runtime.engine.decisions import (
    Decision,
    Invoke,
    Noop,
    RunCompleted,
    RunFailed,
    RunRetry,
    ScheduleBranches,
    SendEvents,
    Sleep,
    StepFailed,
    StepRef,
    StepRetry,
    StepSucceeded,
    WaitForEvent,
)
from runtime.engine.replay import COUNTED_OUTPUT_BYTES
from runtime.errors import FunctionNotFoundError
from runtime.events import (
    FUNCTION_CANCELLED,
    FUNCTION_FAILED,
    FUNCTION_FINISHED,
    FUNCTION_INVOKED,
)
from runtime.expressions import interpolate
from runtime.records import (
    Commit,
    ErrorInfo,
    EventOut,
    Message,
    MessageKind,
    Outgoing,
    RunPatch,
    RunRecord,
    RunState,
    RunStatus,
    StepRecord,
    StepStatus,
    StepWrite,
    Waiter,
    WaiterKind,
)

MAX_WAITERS_PER_COMMIT = 80  # under DynamoDB's 100 items per transaction, with the rest
_SYSTEM_IDS = uuid.UUID("3e0c6d1a-7b2f-4f59-8a61-2c9d0e4b5f73")
_log = logging.getLogger("stepkit")


def commit_for(
    app: App, fn: FunctionDef, state: RunState, msg: Message, d: Decision, now: float
) -> Commit | None:
    """The one commit that records decision ``d``, made from ``state`` for message ``msg``.

    Returns:
        ``None`` when there is nothing to record (``Noop``).
    """
    run = state.run
    nxt = Message(MessageKind.CONTINUE, fn.id, run.run_id, version=run.version + 1)
    base = Commit(msg_id=msg.id, expect_version=run.version)

    def write(ref: StepRef, **fields: Any) -> StepWrite:
        """The step's new record, conditioned on the record the decision was made from."""
        old = state.steps.get(ref.key)
        fields.setdefault("attempt", ref.attempt)
        fields.setdefault("branch", ref.branch)
        rec = StepRecord(
            key=ref.key,
            id=ref.id,
            kind=ref.kind,
            started_at=old.started_at if old and old.started_at else now,
            **fields,
        )
        return StepWrite(rec, old.status if old else None, old.attempt if old else 0)

    if isinstance(d, Noop):
        return None
    if isinstance(d, StepSucceeded | StepFailed):
        s = d.step
        done = isinstance(d, StepSucceeded)
        w = write(
            s,
            ended_at=now,
            status=StepStatus.COMPLETED if done else StepStatus.FAILED,
            output=d.output if isinstance(d, StepSucceeded) else None,
            error=d.error if isinstance(d, StepFailed) else None,
            detail={
                **_failed_attempts(state, s, d.error if isinstance(d, StepFailed) else None,
                                   now),
                # Counted against the run's 32 MiB (Limits.max_run_bytes); small ones are not.
                **({"output_bytes": d.size} if isinstance(d, StepSucceeded)
                   and d.size >= COUNTED_OUTPUT_BYTES else {}),
            },
        )
        _log.info("step %s of run %s %s", s.key, run.run_id, w.record.status.value)
        return replace(base, steps=(w,), outbox=(nxt,))
    if isinstance(d, StepRetry):
        s = d.step
        w = write(
            s,
            status=StepStatus.RETRYING,
            attempt=s.attempt + 1,
            error=d.error,
            wake_at=d.at,
            detail=_failed_attempts(state, s, d.error, now),
        )
        retry = (
            Message(
                MessageKind.BRANCH,
                fn.id,
                run.run_id,
                key=s.key,
                attempt=s.attempt + 1,
                due=d.at,
            )
            if s.branch
            else nxt.with_due(d.at)
        )
        _log.warning(
            "step %s of run %s failed (attempt %d): %s",
            s.key,
            run.run_id,
            s.attempt + 1,
            d.error.message,
        )
        return replace(base, steps=(w,), outbox=(retry,))
    if isinstance(d, Sleep):
        s = d.step
        w = write(
            s,
            status=StepStatus.SLEEPING,
            wake_at=d.until,
        )
        wake = Message(MessageKind.WAKE, fn.id, run.run_id, key=s.key, due=d.until)
        return replace(base, steps=(w,), outbox=(wake,))
    if isinstance(d, WaitForEvent):
        s = d.step
        w = write(
            s,
            status=StepStatus.WAITING,
            wake_at=d.until,
            detail={"event": d.event, "expression": d.expression, "since": _decision_point(state)},
        )
        waiter = Waiter(d.event, run.run_id, fn.id, s.key, WaiterKind.STEP, d.expression, d.until)
        wake = Message(MessageKind.WAKE, fn.id, run.run_id, key=s.key, due=d.until)
        return replace(base, steps=(w,), add_waiters=(waiter,), outbox=(wake,))
    if isinstance(d, Invoke):
        return _invoke_commit(app, fn, state, base, d, now, write, nxt)
    if isinstance(d, SendEvents):
        s = d.step
        ids = [e["id"] for e in d.events]
        w = write(
            s,
            status=StepStatus.COMPLETED,
            output=ids,
            ended_at=now,
        )
        sends: tuple[Outgoing, ...] = tuple(EventOut(e) for e in d.events)
        return replace(base, steps=(w,), outbox=(*sends, nxt))
    if isinstance(d, ScheduleBranches):
        writes = tuple(write(s, status=StepStatus.SCHEDULED, branch=True) for s in d.steps)
        msgs = tuple(Message(MessageKind.BRANCH, fn.id, run.run_id, key=s.key) for s in d.steps)
        if not d.more:
            return replace(base, steps=writes, outbox=msgs)
        # The next slice: scheduled by a replay at whatever version the run has by then (the
        # branches just scheduled move the version on, and a wait or sleep among them sends
        # no continuation of its own).
        more = Message(MessageKind.CONTINUE, fn.id, run.run_id, payload={"slice": True})
        return replace(base, steps=writes, outbox=(*msgs, more))
    if isinstance(d, RunRetry):
        _log.warning("run %s failed (attempt %d): %s", run.run_id, run.attempt + 1, d.error.message)
        return replace(
            base,
            run=RunPatch(attempt=run.attempt + 1, error=d.error),
            outbox=(nxt.with_due(d.at),),
        )
    if isinstance(d, RunCompleted | RunFailed):
        status = RunStatus.COMPLETED if isinstance(d, RunCompleted) else RunStatus.FAILED
        output = d.output if isinstance(d, RunCompleted) else None
        error = d.error if isinstance(d, RunFailed) else None
        _log.info("run %s %s", run.run_id, status.value)
        return replace(
            base,
            run=RunPatch(
                status=status,
                output=output,
                error=error,
                ended_at=now,
                clear_error=error is None,
            ),
            # One transaction holds at most 100 items: the orchestrator removes the rest after.
            remove_waiters=waiters_of(fn, state)[:MAX_WAITERS_PER_COMMIT],
            outbox=finish_outbox(run, status, output, error, now),
        )
    raise AssertionError(f"unhandled decision {d!r}")


def _decision_point(state: RunState) -> int:
    """When (epoch ms) the run reached its current point: its trigger, or its latest result.

    A wait committed now also matches events sent since then (its lookback), so an event
    answering the run's previous step cannot slip in before the waiter exists.
    """
    points = [int(state.run.events[0].get("ts") or 0)]
    points += [int(r.ended_at * 1000) for r in state.steps.values() if r.ended_at is not None]
    return max(points)


def _invoke_commit(
    app: App,
    fn: FunctionDef,
    state: RunState,
    base: Commit,
    d: Invoke,
    now: float,
    write: Any,
    nxt: Message,
) -> Commit:
    s, run = d.step, state.run
    try:
        child_fn = app.get(d.function_id)
    except FunctionNotFoundError as exc:
        w = write(
            s,
            status=StepStatus.FAILED,
            ended_at=now,
            error=ErrorInfo(type(exc).__name__, str(exc), False),
        )
        return replace(base, steps=(w,), outbox=(nxt,))
    child_id = child_run_id(run.run_id, s.key, now)
    event = {
        "id": child_id,
        "name": FUNCTION_INVOKED,
        "data": d.data,
        "user": {},
        "ts": int(now * 1000),
    }
    w = write(
        s,
        status=StepStatus.INVOKING,
        wake_at=d.until,
        detail={"function_id": child_fn.id, "child_run_id": child_id},
    )
    parent = {"run_id": run.run_id, "function_id": fn.id, "key": s.key}
    start = Message(
        MessageKind.START,
        child_fn.id,
        child_id,
        id=f"start-{child_id}",
        payload={"events": [event], "parent": parent},
    )
    outbox: list[Outgoing] = [start]
    if d.until is not None:
        outbox.append(Message(MessageKind.WAKE, fn.id, run.run_id, key=s.key, due=d.until))
    return replace(base, steps=(w,), outbox=tuple(outbox))


MAX_ATTEMPT_HISTORY = 20  # as many attempts as retries allow (0-20)


def _failed_attempts(state: RunState, s: StepRef, error: ErrorInfo | None,
                     now: float) -> dict[str, Any]:
    """The step's ``detail`` with its failed attempts so far: ``{"errors": [...]}``.

    Each failed attempt keeps its number, when it failed and its error (cut to 500
    characters), so the dashboard and CLI can show the history of a retried step, not only
    its last error. ``error`` is ``None`` for a step that succeeded (after failures or not).
    """
    old = state.steps.get(s.key)
    errors = list((old.detail if old else {}).get("errors") or [])
    if error is not None:
        errors.append({"attempt": s.attempt + 1, "at": format_instant(now),
                       "error": f"{error.name}: {error.message}"[:500]})
    return {"errors": errors[-MAX_ATTEMPT_HISTORY:]} if errors else {}


def finish_outbox(
    run: RunRecord,
    status: RunStatus,
    output: Any,
    error: ErrorInfo | None,
    now: float,
) -> tuple[Outgoing, ...]:
    """System events (and the parent's wake-up) for a run that just finished."""
    # System events carry references where a copy could pass the 256 KB event limit: the
    # trigger when it is large (its id and name instead), the output when it is large (read it
    # from the run, whose id is here).
    trigger = run.events[0]
    data: dict[str, Any] = {
        "function_id": run.function_id,
        "run_id": run.run_id,
        "status": status.value,
        "event": trigger if _small(trigger) else {"id": trigger["id"], "name": trigger["name"]},
    }
    if error is not None:
        data["error"] = {"name": error.name, "message": error.message}
    names = [FUNCTION_FINISHED]
    if status is RunStatus.FAILED:
        names.insert(0, FUNCTION_FAILED)
    elif status is RunStatus.CANCELLED:
        names.insert(0, FUNCTION_CANCELLED)
    out: list[Outgoing] = []
    for name in names:
        eid = uuid.uuid5(_SYSTEM_IDS, f"{run.run_id}/{name}").hex
        body = data
        if name == FUNCTION_FINISHED:
            big = not _small(output)
            body = {**data, "output_omitted": True} if big else {**data, "output": output}
        out.append(
            EventOut({"id": eid, "name": name, "data": body, "user": {}, "ts": int(now * 1000)})
        )
    if run.parent is not None:
        p = run.parent
        out.append(
            Message(
                MessageKind.RESOLVE,
                p.function_id,
                p.run_id,
                key=p.key,
                id=f"resolve-{run.run_id}",
                payload={"child_run_id": run.run_id},
            )
        )
    return tuple(out)


_INLINE_BYTES = 64 * 1024


def _small(value: Any) -> bool:
    """Whether ``value`` may be copied into a system event (under 64 KiB of JSON)."""
    return len(json.dumps(value, separators=(",", ":"))) <= _INLINE_BYTES


def cancel_waiters(fn: FunctionDef, run: RunRecord, now: float) -> list[Waiter]:
    """The waiters of ``fn``'s ``cancel_on`` for ``run``, with its own values filled in."""
    return [
        Waiter(
            event_name=spec.event,
            run_id=run.run_id,
            function_id=fn.id,
            key=f"cancel:{i}",
            kind=WaiterKind.CANCEL,
            expression=interpolate(spec.expression, {"event": run.events[0]})
            if spec.expression
            else "",
            expires_at=now + spec.timeout.total_seconds() if spec.timeout else None,
        )
        for i, spec in enumerate(fn.cancel_on)
    ]


def step_waiter(run: RunRecord, rec: StepRecord) -> Waiter:
    """The waiter of a ``wait_for_event`` step (as its commit added it, for removal)."""
    return Waiter(
        rec.detail["event"],
        run.run_id,
        run.function_id,
        rec.key,
        WaiterKind.STEP,
        rec.detail.get("expression", ""),
    )


def waiters_of(fn: FunctionDef | None, state: RunState) -> tuple[Waiter, ...]:
    """Every waiter a run may still have, to remove when it finishes.

    Each is rebuilt with its expression, so that stores find it under its value index.
    """
    run = state.run
    found = cancel_waiters(fn, run, run.created_at) if fn else []
    found += [step_waiter(run, rec) for rec in state.steps.values()
              if rec.status is StepStatus.WAITING]
    return tuple(found)
