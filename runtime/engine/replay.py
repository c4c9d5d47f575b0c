"""One invocation: replay the handler over the history and decide what happens next.

Pure: no clock is read (``now`` is an argument), nothing is stored or sent. The only code run
is the user's handler and, for a new ``step.run``, that step's function.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runtime.durations import MAX_SLEEP, user_duration
from runtime.engine.context import Context
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
from runtime.engine.steps import Interrupt, PlannedOp, ReplayState
from runtime.errors import NonRetriableError, RetryAfterError, StepError, StepLimitError
from runtime.records import ErrorInfo, RunState, StepKind, StepRecord

if TYPE_CHECKING:
    from runtime.app import FunctionDef

_log = logging.getLogger("stepkit.run")
BACKOFF_INITIAL = 2.0
MAX_BRANCHES_PER_COMMIT = 50
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


def execute(
    fn: FunctionDef,
    state: RunState,
    *,
    now: float,
    target: str | None = None,
    limits: Limits = Limits(),
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> Decision:
    """Replay ``fn`` over ``state`` and decide the next piece of work.

    Args:
        fn: The function.
        state: The run and its step records.
        now: The invocation time (epoch seconds).
        target: For a parallel branch, the key of the one step this invocation performs.
        limits: Per-run limits.
        logger: Where ``ctx.logger`` writes.
    """
    rs = ReplayState(
        run=state.run, history=state.steps, now=now, target=target, max_steps=limits.max_steps
    )
    name = state.run.events[0].get("name") if state.run.events else None
    model = next((f.model for f in fn.events if f.model is not None and f.event == name), None)
    ctx = Context(rs, logger or _log, model)
    try:
        output = fn.handler(ctx)
        raised: Exception | None = None
    except Interrupt:
        output, raised = None, None
    except Exception as exc:  # the handler's own error; decided below
        output, raised = None, exc
    if rs.fatal is not None:
        return Noop("branch target not reached") if target else RunFailed(_info(rs.fatal))
    if rs.interrupted is not None:  # also when user code swallowed the interrupt
        return _plan(fn, ctx, rs, rs.interrupted, limits)
    if target is not None:
        return Noop(f"branch '{target}' was not reached by the handler")
    if raised is not None:
        return _handler_error(fn, rs, raised)
    if inspect.iscoroutine(output):
        output.close()
        return RunFailed(_info(NonRetriableError(
            "the handler returned a coroutine (it calls an async function without awaiting "
            "it); handlers run synchronously: use asyncio.run(...) inside a step")))
    try:
        value, _ = _json_value(output, "the handler", limits, lambda: outputs_bytes(state.steps))
        return RunCompleted(value)
    except StepLimitError as exc:
        return RunFailed(_info(exc))


def _plan(
    fn: FunctionDef, ctx: Context, rs: ReplayState, ops: list[PlannedOp], limits: Limits
) -> Decision:
    if rs.target is not None:
        op = next((o for o in ops if o.ref.key == rs.target), None)
        return _perform(fn, ctx, rs, op, limits) if op else Noop("branch target not reached")
    new = [o for o in ops if not o.in_flight]
    if not new:
        return Noop("waiting on steps in flight")
    if len(ops) == 1 and not ops[0].ref.branch:
        return _perform(fn, ctx, rs, ops[0], limits)
    # Wide groups are scheduled in slices: each slice is one commit, and stores cap the
    # items one atomic write may touch (DynamoDB: 100). The slice's commit continues the
    # main line at once, whose replay schedules the next slice.
    return ScheduleBranches(
        tuple(o.ref for o in new[:MAX_BRANCHES_PER_COMMIT]),
        more=len(new) > MAX_BRANCHES_PER_COMMIT,
    )


def _perform(
    fn: FunctionDef, ctx: Context, rs: ReplayState, op: PlannedOp, limits: Limits
) -> Decision:
    ref = op.ref
    if ref.kind is StepKind.SLEEP:
        assert op.until is not None
        return StepSucceeded(ref, None) if op.until <= rs.now else Sleep(ref, op.until)
    if ref.kind is StepKind.WAIT:
        assert op.until is not None
        return WaitForEvent(ref, op.event, op.expression, op.until)
    if ref.kind is StepKind.INVOKE:
        return Invoke(ref, op.function_id, op.data, op.until)
    if ref.kind is StepKind.SEND:
        return SendEvents(ref, op.events)
    assert op.fn is not None
    rs.performing = True
    ctx.attempt = ref.attempt
    try:
        result = op.fn(*op.args, **op.kwargs)
    except Interrupt:
        err = NonRetriableError(f"step '{ref.id}' called another step inside step.run; nest none")
        return StepFailed(ref, _info(err))
    except Exception as exc:
        return _step_error(fn, rs, ref, exc)
    finally:
        rs.performing = False
    if inspect.iscoroutine(result) or inspect.isasyncgen(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited: no "coroutine was never awaited" warning either
        err = NonRetriableError(
            f"step '{ref.id}' returned a coroutine (an async function was called without "
            "awaiting it); steps run synchronously: use a plain function, and asyncio.run(...) "
            "inside it for async code")
        return StepFailed(ref, _info(err))
    try:
        value, size = _json_value(result, f"step '{ref.id}'", limits,
                                  lambda: outputs_bytes(rs.history))
        return StepSucceeded(ref, value, size)
    except StepLimitError as exc:
        return StepFailed(ref, _info(exc))


def _step_error(fn: FunctionDef, rs: ReplayState, ref: StepRef, exc: Exception) -> Decision:
    info = _info(exc)
    if not info.retriable or ref.attempt >= fn.retries:
        return StepFailed(ref, info)
    seed = f"{rs.run.run_id}/{ref.key}"
    try:
        at = _retry_at(exc, rs, seed, ref.attempt, where=f"step '{ref.id}'")
    except ValueError as bad:
        return StepFailed(ref, _info(NonRetriableError(str(bad))))
    return StepRetry(ref, info, at)


def _handler_error(fn: FunctionDef, rs: ReplayState, exc: Exception) -> Decision:
    info = _info(exc)
    if isinstance(exc, StepError) or not info.retriable or rs.run.attempt >= fn.retries:
        return RunFailed(info)
    try:
        at = _retry_at(exc, rs, rs.run.run_id, rs.run.attempt, where="the handler")
    except ValueError as bad:
        return RunFailed(_info(NonRetriableError(str(bad))))
    return RunRetry(info, at)


def backoff(attempt: int, seed: str) -> float:
    """Exponential backoff with jitter, deterministic per seed: 50-100% of 2s * 2^attempt."""
    ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2.0**attempt)
    frac = int(hashlib.sha256(f"{seed}/{attempt}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return ceiling * (0.5 + 0.5 * frac)


def _retry_at(exc: Exception, rs: ReplayState, seed: str, attempt: int, *, where: str) -> float:
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


def _info(exc: BaseException) -> ErrorInfo:
    stack = "".join(traceback.format_exception(exc))[-4000:]
    retriable = bool(getattr(exc, "is_retriable", True))
    message = str(exc)
    if len(message) > MAX_ERROR_MESSAGE:  # a record must fit the store's item limit
        message = (
            f"{message[:MAX_ERROR_MESSAGE]}... [{len(message) - MAX_ERROR_MESSAGE} more "
            "characters cut: error messages are kept to 8 KiB]"
        )
    return ErrorInfo(type(exc).__name__, message, retriable, stack)


def _json_value(value: Any, where: str, limits: Limits,
                used: Callable[[], int]) -> tuple[Any, int]:
    """Round-trip ``value`` through JSON, so the first run returns what replays will.

    Returns the value and its size in bytes of JSON, checked against the limits of one
    output and of the run (``used``: what its recorded outputs weigh already; summed only
    for an output that counts, so a run of small steps pays nothing for the check).
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        path, problem = _find_non_json(value, "output", set())
        raise StepLimitError(
            f"{where} returned a value that is not JSON-serialisable: {problem} at {path}; "
            "return dicts, lists, strings, numbers, booleans or None"
        ) from None
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


def _find_non_json(value: Any, path: str, seen: set[int]) -> tuple[str, str]:
    """The first place JSON cannot encode, as (path, what is wrong there); ("", "") if none."""
    if isinstance(value, dict | list | tuple):
        if id(value) in seen:
            return path, "a circular reference"
        seen = seen | {id(value)}
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            if isinstance(value, dict) and not isinstance(k, str | int | float | bool | None):
                return f"{path} key {k!r}", f"a {type(k).__name__} key"
            found = _find_non_json(v, f"{path}[{k!r}]", seen)
            if found[0]:
                return found
        return "", ""
    if value is None or isinstance(value, str | int | bool):
        return "", ""
    if isinstance(value, float):
        finite = value == value and abs(value) != float("inf")
        return ("", "") if finite else (path, f"the float {value}")
    return path, f"a {type(value).__name__}"
