"""The API's JSON: the one place that turns records into what the dev server returns.

Times are ISO-8601 UTC strings with millisecond precision (``2026-03-02T08:00:00.000Z``) and
durations are whole milliseconds, so the dashboard, the CLI and scripts all read the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runtime.activity import activity as run_activity
from runtime.activity import timeline
from runtime.durations import format_instant
from runtime.records import (
    ErrorInfo,
    RunRecord,
    RunState,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
)

if TYPE_CHECKING:
    from runtime.app import FunctionDef

_IN_PROGRESS = (StepStatus.SLEEPING, StepStatus.WAITING, StepStatus.INVOKING)


def iso(ts: float | None) -> str | None:
    """Render epoch seconds as an ISO-8601 UTC timestamp, or ``None`` for no time."""
    return None if ts is None else format_instant(ts)


def duration_ms(start: float | None, end: float | None) -> int | None:
    """Milliseconds from ``start`` to ``end``, or ``None`` unless both are known."""
    if start is None or end is None:
        return None
    return max(0, round((end - start) * 1000))


def error_json(error: ErrorInfo | None) -> dict[str, Any] | None:
    """Render an error as ``{name, message, retriable, stack}``."""
    return error.to_json() if error is not None else None


def function_json(fn: FunctionDef) -> dict[str, Any]:
    """Render a function: its id, triggers (events with their ``if``, crons) and retries."""
    triggers: list[dict[str, Any]] = [
        {
            "type": "event",
            "event": f.event,
            "if": f.condition.source if f.condition is not None else None,
        }
        for f in fn.events
    ]
    triggers += [{"type": "cron", "cron": c.spec} for c in fn.crons]
    return {
        "id": fn.id,
        "triggers": triggers,
        "retries": fn.retries,
        "cancel_on": [c.event for c in fn.cancel_on],
        "flow": flow_json(fn),
    }


def flow_json(fn: FunctionDef) -> dict[str, Any]:
    """A function's flow-control options as JSON (durations as strings); unset ones left out."""
    flow = fn.flow
    out: dict[str, Any] = {}
    if flow.idempotency is not None:
        out["idempotency"] = flow.idempotency
    for name, value in (("throttle", flow.throttle), ("rate_limit", flow.rate_limit),
                        ("singleton", flow.singleton), ("priority", flow.priority),
                        ("debounce", flow.debounce), ("batch_events", flow.batch)):
        if value is not None:
            out[name] = value.model_dump(mode="json", by_alias=True, exclude_none=True)
    if flow.concurrency:
        out["concurrency"] = [c.model_dump(mode="json", exclude_none=True)
                              for c in flow.concurrency]
    return out


def event_name(run: RunRecord) -> str | None:
    """Return the name of the run's (first) triggering event."""
    if not run.events:
        return None
    name = run.events[0].get("name")
    return name if isinstance(name, str) else None


def waiting_json(waiting: dict[str, Any] | None) -> dict[str, Any] | None:
    """Render why flow control holds a run back (``kind``, ``message``, ``until``)."""
    if waiting is None:
        return None
    return {**waiting, "until": iso(waiting.get("until"))}


def run_summary(run: RunRecord, waiting: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render a run as one row of the runs list.

    ``waiting`` says why flow control holds it back, if it does
    (:func:`runtime.orchestration.waiting.why_waiting`).
    """
    return {
        "run_id": run.run_id,
        "function_id": run.function_id,
        "status": run.status.value,
        "event": event_name(run),
        "created_at": iso(run.created_at),
        "ended_at": iso(run.ended_at),
        "duration_ms": duration_ms(run.created_at, run.ended_at),
        "waiting": waiting_json(waiting),
        "blocked": blocked_cause(run),
    }


def blocked_cause(run: RunRecord) -> str | None:
    """Why a Blocked run is blocked, in one line (``None`` for other runs)."""
    if run.status is not RunStatus.BLOCKED or run.error is None:
        return None
    text = f"{run.error.name}: {run.error.message}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."


def step_attempts(rec: StepRecord) -> int:
    """How many attempts of the step have started.

    ``StepRecord.attempt`` counts failed attempts; a final step adds the attempt that ended it,
    a pending sleep, wait or invoke is its one attempt in progress.
    """
    if rec.status.final:
        return rec.attempt + 1
    if rec.status in _IN_PROGRESS:
        return max(rec.attempt, 1)
    return rec.attempt  # retrying: the failed ones; scheduled: none yet



def step_json(rec: StepRecord, fn: FunctionDef | None = None,
              run_finished: bool = False) -> dict[str, Any]:
    """Render one step of a run's timeline.

    Args:
        rec: The step record.
        fn: The step's function, when registered, to give ``max_attempts`` of ``run`` steps.
        run_finished: The run has ended: a step still pending (a sleep a cancel cut short)
            shows as ``Abandoned`` rather than "sleeping until ...".

    """
    max_attempts = fn.retries + 1 if fn is not None and rec.kind is StepKind.RUN else None
    abandoned = run_finished and not rec.status.final  # shown as Abandoned
    return {
        "key": rec.key,
        "id": rec.id,
        "kind": rec.kind.value,
        "status": "Abandoned" if abandoned else rec.status.value,
        "attempts": step_attempts(rec),
        "max_attempts": max_attempts,
        "started_at": iso(rec.started_at),
        "ended_at": iso(rec.ended_at),
        "duration_ms": duration_ms(rec.started_at, rec.ended_at),
        "output": rec.output,
        "error": error_json(rec.error),
        "wake_at": iso(rec.wake_at),
        "branch": rec.branch,
        "detail": rec.detail,
    }


def run_detail(
    state: RunState, fn: FunctionDef | None = None, waiting: dict[str, Any] | None = None,
    reruns: Sequence[RunRecord] = (),
) -> dict[str, Any]:
    """Render a run with its events, output, error and step timeline.

    Args:
        state: The run and its step records.
        fn: The run's function, or ``None`` if it is no longer registered.
        waiting: Why flow control holds it back, if it does.
        reruns: Runs that rerun this one, newest first.

    """
    run = state.run
    parent, origin = run.parent, run.rerun_of
    return {
        **run_summary(run, waiting),
        "events": list(run.events),
        "output": run.output,
        "error": error_json(run.error),
        "failed_attempts": run.attempt,
        "deadline": iso(run.deadline),
        "parent": (
            {"run_id": parent.run_id, "function_id": parent.function_id, "key": parent.key}
            if parent is not None
            else None
        ),
        "rerun_of": (
            {"run_id": origin.run_id, "from_step": origin.step} if origin is not None else None
        ),
        "reruns": [{"run_id": r.run_id, "status": r.status.value,
                    "from_step": r.rerun_of.step if r.rerun_of else None,
                    "created_at": iso(r.created_at)} for r in reruns],
        "steps": [step_json(rec, fn, run.status.finished) for rec in timeline(state.steps)],
        "activity": activity(state, fn),
    }


def activity(state: RunState, fn: FunctionDef | None = None) -> list[dict[str, Any]]:
    """What a running run is doing (see :func:`runtime.activity.activity`)."""
    return run_activity(state, fn.retries if fn is not None else None)

