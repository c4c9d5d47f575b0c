"""One invocation: replay the handler over the history and decide what happens next.

Pure: no clock is read (``now`` is an argument), nothing is stored or sent. The only code run
is the user's handler and, for a new ``step.run``, that step's function.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from runtime.engine.context import Context
from runtime.engine.decisions import Decision, Noop, RunBlocked, RunCompleted, RunFailed
from runtime.engine.outcomes import Limits, handler_error, info, json_value, outputs_bytes
from runtime.engine.template import Interrupt, Performing, PlannedOp, ReplayState
from runtime.errors import NondeterminismError, NonRetriableError, StepLimitError
from runtime.records import RunState
from runtime.steps.parallel import schedule

if TYPE_CHECKING:
    from runtime.app import FunctionDef

_log = logging.getLogger("stepkit.run")


def execute(
    fn: FunctionDef,
    state: RunState,
    *,
    now: float,
    target: str | None = None,
    limits: Limits = Limits(),  # noqa: B008 - frozen
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    lost: bool = False,
) -> Decision:
    """Replay ``fn`` over ``state`` and decide the next piece of work.

    Args:
        fn: The function.
        state: The run and its step records.
        now: The invocation time (epoch seconds).
        target: For a parallel branch, the key of the one step this invocation performs.
        limits: Per-run limits.
        logger: Where ``ctx.logger`` writes.
        lost: The last attempt of the step this replay performs never came back (its worker
            died): a ``step.run`` records it as failed (``WorkerLostError``, retried by its
            ``retries``) instead of running its function again.
    """
    rs = ReplayState(
        run=state.run, history=state.steps, now=now, target=target, max_steps=limits.max_steps,
        lost=lost,
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
        if target:
            return Noop("branch target not reached")
        if isinstance(rs.fatal, NondeterminismError):  # a deploy may fix it: hold the run
            return RunBlocked(info(rs.fatal))
        return RunFailed(info(rs.fatal))
    if rs.interrupted is not None:  # also when user code swallowed the interrupt
        return _plan(Performing(fn, ctx, rs, limits), rs.interrupted)
    if target is not None:
        return Noop(f"branch '{target}' was not reached by the handler")
    if raised is not None:
        return handler_error(fn, rs, raised)
    if inspect.iscoroutine(output):
        output.close()
        return RunFailed(info(NonRetriableError(
            "the handler returned a coroutine (it calls an async function without awaiting "
            "it); handlers run synchronously: use asyncio.run(...) inside a step")))
    try:
        value, _ = json_value(output, "the handler", limits, lambda: outputs_bytes(state.steps))
        return RunCompleted(value)
    except StepLimitError as exc:
        return RunFailed(info(exc))


def _plan(env: Performing, ops: list[PlannedOp]) -> Decision:
    """The decision for the new work the replay stopped at.

    A branch invocation performs its target; the main line performs a lone step at once,
    and schedules new parallel branches as their own pieces of work.
    """
    target = env.rs.target
    if target is not None:
        op = next((o for o in ops if o.ref.key == target), None)
        return op.op.decide(op.ref, env) if op else Noop("branch target not reached")
    new = [o for o in ops if not o.in_flight]
    if not new:
        return Noop("waiting on steps in flight")
    if len(ops) == 1 and not ops[0].ref.branch:
        return ops[0].op.decide(ops[0].ref, env)
    return schedule(new)
