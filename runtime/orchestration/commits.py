"""Decisions become commits: the one atomic write that records each engine decision.

A step's decision is committed by its own kind (:data:`runtime.steps.COMMITS`, one module
per kind); the run's own decisions (retry the handler, completed, failed) are committed
here, with what every finished run sends (:func:`finish_outbox`) and the waiters it drops.
The orchestrator applies the commit and sends its outbox.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from typing import Any

from runtime.app import App, FunctionDef
from runtime.engine.decisions import (
    Decision,
    Noop,
    RunBlocked,
    RunCompleted,
    RunFailed,
    RunRetry,
)
from runtime.events import FUNCTION_CANCELLED, FUNCTION_FAILED, FUNCTION_FINISHED
from runtime.expressions import ExpressionError, interpolate
from runtime.messages import ResolvePayload
from runtime.orchestration.blocking import block, unblocked
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
    StepStatus,
    Waiter,
    WaiterKind,
)
from runtime.steps import COMMITS, KINDS
from runtime.steps.base import CommitContext, moot_timers

MAX_WAITERS_PER_COMMIT = 80  # under DynamoDB's 100 items per transaction, with the rest
_SYSTEM_IDS = uuid.UUID("3e0c6d1a-7b2f-4f59-8a61-2c9d0e4b5f73")
_log = logging.getLogger("stepkit")


def commit_for(
    app: App, fn: FunctionDef, state: RunState, msg: Message, d: Decision, now: float
) -> Commit | None:
    """The one commit that records decision ``d``, made from ``state`` for message ``msg``.

    Returns:
        ``None`` when there is nothing to record (a ``Noop``, unless the run was blocked:
        then the commit that makes it Running again).
    """
    cx = CommitContext(app, fn, state, msg, now)
    if isinstance(d, Noop):
        return unblocked(state, d, None, cx.base)
    commit = COMMITS.get(type(d)) or _RUN_COMMITS.get(type(d))
    if commit is None:
        raise AssertionError(f"unhandled decision {d!r}")
    return unblocked(state, d, commit(d, cx), cx.base)


def _retry_handler(d: RunRetry, cx: CommitContext) -> Commit:
    """The handler raised outside any step: count the attempt, replay again at ``d.at``."""
    run = cx.state.run
    _log.warning("run %s failed (attempt %d): %s", run.run_id, run.attempt + 1, d.error.message)
    return replace(cx.base, run=RunPatch(attempt=run.attempt + 1, error=d.error),
                   outbox=(cx.next.with_due(d.at),))


def _end(d: RunCompleted | RunFailed, cx: CommitContext) -> Commit:
    """The run finished: its status, output or error, its waiters dropped, its system events."""
    run = cx.state.run
    status = RunStatus.COMPLETED if isinstance(d, RunCompleted) else RunStatus.FAILED
    output = d.output if isinstance(d, RunCompleted) else None
    error = d.error if isinstance(d, RunFailed) else None
    _log.info("run %s %s", run.run_id, status.value)
    return replace(
        cx.base,
        run=RunPatch(status=status, output=output, error=error, ended_at=cx.now,
                     clear_error=error is None),
        # One transaction holds at most 100 items: the orchestrator removes the rest after.
        remove_waiters=waiters_of(cx.fn, cx.state)[:MAX_WAITERS_PER_COMMIT],
        outbox=(*finish_outbox(run, status, output, error, cx.now,
                               full=cx.fn.full_finished_event),
                *moot_timers(cx.state, cx.msg.id, ending=True)),
    )


_RUN_COMMITS: dict[type, Any] = {RunRetry: _retry_handler, RunCompleted: _end, RunFailed: _end,
                                 RunBlocked: block}


def finish_outbox(
    run: RunRecord,
    status: RunStatus,
    output: Any,
    error: ErrorInfo | None,
    now: float,
    *,
    full: bool = False,
) -> tuple[Outgoing, ...]:
    """System events (and the parent's wake-up) for a run that just finished.

    ``function.finished`` is sent by every run, so by default it carries ids and status:
    the run's and function's ids, its status and error, and its trigger's id and name (the
    output is the run's, read by its id). Copying the trigger and output made it the
    largest write of a run, twice over (the event log and the event's timeline). ``full``
    (``finished_event="full"``) copies them as ``function.failed`` and ``function.cancelled``
    do: those are rare, and ``on_failure`` handlers read the trigger.
    """
    # Copies stay references where they could pass the 256 KB event limit: the trigger when
    # it is large (its id and name instead), the output when it is large (read it from the
    # run, whose id is here).
    trigger = run.events[0]
    ref = {"id": trigger["id"], "name": trigger["name"]}
    data: dict[str, Any] = {
        "function_id": run.function_id,
        "run_id": run.run_id,
        "status": status.value,
        "event": trigger if _small(trigger) else ref,
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
        if name == FUNCTION_FINISHED and not full:
            body = {**data, "event": ref}
        elif name == FUNCTION_FINISHED:
            big = not _small(output)
            body = {**data, "output_omitted": True} if big else {**data, "output": output}
        out.append(
            EventOut({"id": eid, "name": name, "data": body, "user": {}, "ts": int(now * 1000)})
        )
    if run.parent is not None:
        p = run.parent
        out.append(Message(MessageKind.RESOLVE, p.function_id, p.run_id, key=p.key,
                           id=f"resolve-{run.run_id}",
                           payload=ResolvePayload(run.run_id).to_json()))
    return tuple(out)


_INLINE_BYTES = 64 * 1024


def _small(value: Any) -> bool:
    """Whether ``value`` may be copied into a system event (under 64 KiB of JSON)."""
    return len(json.dumps(value, separators=(",", ":"))) <= _INLINE_BYTES


def cancel_waiters(fn: FunctionDef, run: RunRecord, now: float, *,
                   strict: bool = True) -> list[Waiter]:
    """The waiters of ``fn``'s ``cancel_on`` for ``run``, with its own values filled in.

    Args:
        fn: The run's function.
        run: The run (its triggering event's values are frozen into the expressions).
        now: When the run was created (the waiters' expiry counts from it).
        strict: For a new run: a value that cannot be frozen raises. Otherwise (a run that
            exists) such a waiter was never created, and is left out.

    Raises:
        ExpressionError: ``strict``, and a ``cancel_on`` reads a value of the run's event
            too deep or too large to compare (:func:`runtime.expressions.interpolate`),
            naming the ``cancel_on`` and the path.
    """
    found: list[Waiter] = []
    for i, spec in enumerate(fn.cancel_on):
        try:
            expression = (interpolate(spec.expression, {"event": run.events[0]})
                          if spec.expression else "")
        except ExpressionError as exc:
            if strict:
                raise ExpressionError(f"cancel_on[{i}] ('{spec.event}'): {exc}") from None
            continue
        found.append(Waiter(
            event_name=spec.event, run_id=run.run_id, function_id=fn.id, key=f"cancel:{i}",
            kind=WaiterKind.CANCEL, expression=expression,
            expires_at=now + spec.timeout.total_seconds() if spec.timeout else None,
        ))
    return found


def waiters_of(fn: FunctionDef | None, state: RunState) -> tuple[Waiter, ...]:
    """Every waiter a run may still have, to remove when it finishes.

    Each is rebuilt with its expression, so that stores find it under its value index.
    """
    run = state.run
    found = cancel_waiters(fn, run, run.created_at, strict=False) if fn else []
    for rec in state.steps.values():
        waiter = KINDS[rec.kind].waiter
        if waiter is not None and rec.status is StepStatus.WAITING:  # holds its waiter
            found.append(waiter(run, rec))
    return tuple(found)
