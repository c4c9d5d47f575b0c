"""What a step's or the handler's outcome becomes: its JSON value, its error, its retry time.

Pure helpers shared by :func:`runtime.engine.replay.execute` (the handler's own outcome) and
the ``step.run`` kind (:mod:`runtime.steps.run`): the output limits, how an exception is
recorded, and when a retry is due (deterministic backoff, or ``RetryAfterError``).
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runtime.durations import MAX_SLEEP, user_duration
from runtime.engine.decisions import Decision, RunFailed, RunRetry, StepFailed, StepRef, StepRetry
from runtime.errors import NonRetriableError, RetryAfterError, StepError, StepLimitError
from runtime.records import ErrorInfo, StepRecord
from runtime.values import problem

if TYPE_CHECKING:
    from runtime.app import FunctionDef
    from runtime.engine.template import ReplayState

BACKOFF_INITIAL = 2.0
BACKOFF_MAX = 3600.0


@dataclass(frozen=True)
class Limits:
    """Per-run limits."""

    max_steps: int = 1000
    max_output_bytes: int = 4 * 1024 * 1024  # a step's or the handler's output (Inngest: 4 MB)
    max_run_bytes: int = 32 * 1024 * 1024  # all of a run's step outputs and its own


#: Outputs smaller than this are not counted against a run's total (nor recorded for it).
COUNTED_OUTPUT_BYTES = 1024


def outputs_bytes(steps: Mapping[str, StepRecord]) -> int:
    """What a run's recorded step outputs weigh, as counted against ``max_run_bytes``."""
    return sum(int(rec.detail.get("output_bytes", 0)) for rec in steps.values())


def step_error(fn: FunctionDef, rs: ReplayState, ref: StepRef, exc: Exception) -> Decision:
    """A step's exception: retried at its backoff, or failed for good (no retries left)."""
    error = info(exc)
    if not error.retriable or ref.attempt >= fn.retries:
        return StepFailed(ref, error)
    seed = f"{rs.run.run_id}/{ref.key}"
    try:
        at = retry_at(exc, rs, seed, ref.attempt, where=f"step '{ref.id}'")
    except ValueError as bad:
        return StepFailed(ref, info(NonRetriableError(str(bad))))
    return StepRetry(ref, error, at)


def handler_error(fn: FunctionDef, rs: ReplayState, exc: Exception) -> Decision:
    """The handler's own exception (outside steps): retried, or the run failed for good."""
    error = info(exc)
    if isinstance(exc, StepError) or not error.retriable or rs.run.attempt >= fn.retries:
        return RunFailed(error)
    try:
        at = retry_at(exc, rs, rs.run.run_id, rs.run.attempt, where="the handler")
    except ValueError as bad:
        return RunFailed(info(NonRetriableError(str(bad))))
    return RunRetry(error, at)


def backoff(attempt: int, seed: str) -> float:
    """Exponential backoff with jitter, deterministic per seed: 50-100% of 2s * 2^attempt."""
    ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2.0**attempt)
    frac = int(hashlib.sha256(f"{seed}/{attempt}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return ceiling * (0.5 + 0.5 * frac)


def retry_at(exc: Exception, rs: ReplayState, seed: str, attempt: int, *, where: str) -> float:
    """When to retry; ``ValueError`` (naming ``where``) for an invalid ``RetryAfterError``."""
    if isinstance(exc, RetryAfterError):
        after = exc.after
        if isinstance(after, datetime):
            if after.tzinfo is None:
                raise ValueError(f"RetryAfterError in {where}: a datetime must be timezone-aware")
            return max(rs.now, after.timestamp())
        delay = user_duration(after, where=f"RetryAfterError in {where}")  # names bad types
        if delay > MAX_SLEEP:
            raise ValueError(f"RetryAfterError in {where}: {delay} is over the one-year limit")
        return rs.now + delay.total_seconds()
    return rs.now + backoff(attempt, seed)


MAX_ERROR_MESSAGE = 8 * 1024  # characters of an error message kept in a record


def info(exc: BaseException) -> ErrorInfo:
    """How ``exc`` is recorded: its name, message (cut to 8 KiB), retriability, stack."""
    stack = _storable("".join(traceback.format_exception(exc))[-4000:])
    retriable = bool(getattr(exc, "is_retriable", True))
    message = _storable(str(exc))
    if len(message) > MAX_ERROR_MESSAGE:  # a record must fit the store's item limit
        message = (
            f"{message[:MAX_ERROR_MESSAGE]}... [{len(message) - MAX_ERROR_MESSAGE} more "
            "characters cut: error messages are kept to 8 KiB]"
        )
    return ErrorInfo(_storable(type(exc).__name__), message, retriable, stack)


def _storable(text: str) -> str:
    """``text`` with any lone surrogate written out as a backslash escape.

    An error is recorded as it came (it is not refused, unlike a value), and UTF-8 stores
    cannot hold a surrogate.
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_value(value: Any, where: str, limits: Limits,
                used: Callable[[], int]) -> tuple[Any, int]:
    """Round-trip ``value`` through JSON, so the first run returns what replays will.

    Returns the value and its size in bytes of JSON, checked against the limits of one
    output and of the run (``used``: what its recorded outputs weigh already; summed only
    for an output that counts, so a run of small steps pays nothing for the check).
    """
    found = problem(value, "output")
    if found is not None:
        raise StepLimitError(
            f"{where} returned a value stepkit cannot store exactly: {found}"
        )
    text = json.dumps(value, separators=(",", ":"))
    size = len(text.encode())
    if size > limits.max_output_bytes:
        raise StepLimitError(
            f"{where} output is {size} bytes of JSON, over the {limits.max_output_bytes}-byte "
            "limit of one output; store large data elsewhere and return a reference"
        )
    total = used() + size if size >= COUNTED_OUTPUT_BYTES else 0
    if total > limits.max_run_bytes:
        raise StepLimitError(
            f"{where} output is {size} bytes of JSON, and the run's outputs would then weigh "
            f"{total} bytes, over the {limits.max_run_bytes}-byte limit of one run; "
            "store large data elsewhere and return references"
        )
    return json.loads(text), size
