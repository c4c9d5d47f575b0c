"""What a run is doing, in words: one place for the API, the CLI, the dashboard and DynamoDB.

A running run's pending steps each say what they wait for (sleeping until T, waiting for an
event until T, invoking a function, retrying at T, queued as a parallel branch); with none
pending its next piece of work is queued or under way. Each entry has a machine ``kind`` and a
``message`` for people; the DynamoDB commit log keeps the message of a step a commit left
pending (``doing``), so the table itself reads as a timeline.
"""

from __future__ import annotations

from typing import Any

from runtime.durations import format_instant
from runtime.records import RunState, StepRecord, StepStatus


def _iso(ts: float | None) -> str | None:
    return None if ts is None else format_instant(ts)


def _when(ts: float | None) -> str:
    return "-" if ts is None else format_instant(ts, timespec="seconds")


def timeline(steps: dict[str, StepRecord]) -> list[StepRecord]:
    """Order steps by start time; ties keep the store's order (the order they first ran)."""
    return sorted(
        steps.values(), key=lambda r: r.started_at if r.started_at is not None else float("inf")
    )


def step_activity(rec: StepRecord, retries: int | None = None) -> dict[str, Any] | None:
    """What a pending step is doing, or ``None`` for a step that has its result.

    Args:
        rec: The step record.
        retries: The function's retries, to say "attempt k of n" (unknown: "attempt k").
    """
    if rec.status.final:  # nearly every commit's step: nothing to format (the worker's path)
        return None
    until, when = _iso(rec.wake_at), _when(rec.wake_at)
    if rec.status is StepStatus.SLEEPING:
        return {"kind": "sleeping", "step": rec.key, "until": until,
                "message": f"sleeping in step '{rec.key}' until {when}"}
    if rec.status is StepStatus.WAITING:
        name = rec.detail.get("event")
        return {"kind": "waiting", "step": rec.key, "event": name, "until": until,
                "message": f"waiting for event '{name}' in step '{rec.key}'"
                           + (f" until {when}" if rec.wake_at is not None else "")}
    if rec.status is StepStatus.INVOKING:
        child, target = rec.detail.get("child_run_id"), rec.detail.get("function_id")
        return {"kind": "invoking", "step": rec.key, "function": target,
                "child_run_id": child, "until": until,
                "message": f"invoking '{target}' (run {child}) in step '{rec.key}'"}
    if rec.status is StepStatus.RETRYING:
        total = retries + 1 if retries is not None else None
        error = f"{rec.error.name}: {rec.error.message}" if rec.error else None
        return {"kind": "retrying", "step": rec.key, "attempt": rec.attempt + 1,
                "of": total, "next_at": until, "last_error": error,
                "message": f"retrying step '{rec.key}': attempt {rec.attempt + 1}"
                           + (f" of {total}" if total else "") + f" at {when}"
                           + (f" (last error {error[:200]})" if error else "")}
    if rec.status is StepStatus.SCHEDULED:
        return {"kind": "scheduled", "step": rec.key,
                "message": f"parallel step '{rec.key}' queued"}
    return None


def activity(state: RunState, retries: int | None = None) -> list[dict[str, Any]]:
    """What a running run is doing, one entry per step in flight (empty once it ended).

    Each has a ``kind`` (``sleeping``, ``waiting``, ``invoking``, ``retrying``, ``scheduled``,
    or ``running`` when no step is pending: its next piece of work is queued or under way),
    the ``step``, its times and a ``message`` for people. Steps come in the order they started.
    """
    if state.run.status.finished:
        return []
    out = [a for rec in timeline(state.steps) if (a := step_activity(rec, retries)) is not None]
    return out or [{"kind": "running",
                    "message": "running: its next step is queued or under way"}]
