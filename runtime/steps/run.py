"""``step.run``: run a function once, retrying on error, and record its JSON result.

Plan: the memoized result, else a :class:`RunOp`. Decide: call the function now
(:class:`StepSucceeded`, :class:`StepRetry` or :class:`StepFailed`). Commit: the result and
the run's next CONTINUE, or the retry with its message due at the backoff. A run step is
never pending between invocations, so nothing resolves it from outside.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from runtime.engine.decisions import Decision, StepFailed, StepRef, StepRetry, StepSucceeded
from runtime.engine.outcomes import info, json_value, outputs_bytes, step_error
from runtime.engine.template import Interrupt, Performing, StepTemplate
from runtime.errors import NonRetriableError, StepLimitError, WorkerLostError
from runtime.records import Commit, Message, MessageKind, StepKind, StepStatus
from runtime.steps.base import CommitContext, StepKindSpec, commit_result

T = TypeVar("T")
_COMPLETED = StepStatus.COMPLETED
_log = logging.getLogger("stepkit")


@dataclass(frozen=True)
class RunOp:
    """A ``step.run`` to perform: the function and its arguments."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def decide(self, ref: StepRef, env: Performing) -> Decision:
        """Run the function: its JSON result, or its error (retried or for good)."""
        rs = env.rs
        if rs.lost:  # its last attempt killed its worker: that is the attempt's outcome
            lost = step_error(env.fn, rs, ref, WorkerLostError(
                f"step '{ref.id}' attempt {ref.attempt + 1} never came back: its worker "
                "died (a timeout or out of memory) while it ran"))
            # Retried at once: the queue held the message for its visibility timeout (six
            # times the function's) before this delivery, which is backoff enough.
            return replace(lost, at=rs.now) if isinstance(lost, StepRetry) else lost
        rs.performing = True
        env.ctx.attempt = ref.attempt
        try:
            result = self.fn(*self.args, **self.kwargs)
        except Interrupt:
            err = NonRetriableError(
                f"step '{ref.id}' called another step inside step.run; nest none")
            return StepFailed(ref, info(err))
        except Exception as exc:
            return step_error(env.fn, rs, ref, exc)
        finally:
            rs.performing = False
        if inspect.iscoroutine(result) or inspect.isasyncgen(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: no "coroutine was never awaited" warning either
            err = NonRetriableError(
                f"step '{ref.id}' returned a coroutine (an async function was called without "
                "awaiting it); steps run synchronously: use a plain function, and "
                "asyncio.run(...) inside it for async code")
            return StepFailed(ref, info(err))
        try:
            value, size = json_value(result, f"step '{ref.id}'", env.limits,
                                     lambda: outputs_bytes(rs.history))
            return StepSucceeded(ref, value, size)
        except StepLimitError as exc:
            return StepFailed(ref, info(exc))


class RunSteps(StepTemplate):
    """``ctx.step.run``."""

    def run(self, step_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` once, retrying on error; return its (JSON) result.

        Raises:
            StepError: The step failed for good (retries exhausted or non-retriable).
        """
        s = self._s
        if not s.scope and type(step_id) is str:
            # The path every replayed step of the main line takes, inlined (_find + _memo for
            # a completed run step at a top-level key): it runs once per recorded step on
            # every invocation, so its cost is what makes long runs slow.
            counted = ("", step_id)
            n = s.counters[counted]
            key = step_id if n == 0 else f"{step_id}:{n}"
            rec = s.history.get(key)
            # A record there is this step's only if it says so: "fetch:1" is also the key of
            # the second "fetch" (an id with ":" is escaped in its own key, see step_key).
            if (rec is not None and rec.status is _COMPLETED and rec.kind is StepKind.RUN
                    and rec.id == step_id):
                s.counters[counted] = n + 1
                s.visited.add(key)
                s.scope_visited[""] += 1
                ended = rec.ended_at
                if ended is not None and ended > s.checkpoint:
                    s.checkpoint = ended
                return rec.output  # type: ignore[no-any-return]
        key, rec = self._find(step_id, StepKind.RUN)
        if self._memo(rec):
            assert rec is not None
            return rec.output  # type: ignore[no-any-return]
        if not callable(fn):
            raise NonRetriableError(f"step '{step_id}': fn is not callable ({type(fn).__name__})")
        ref = self._ref(key, step_id, StepKind.RUN, rec)
        raise self._suspend(ref, rec, RunOp(fn, args, kwargs))


def commit_retry(d: StepRetry, cx: CommitContext) -> Commit:
    """An attempt failed: record its error and send the retry, due at its backoff.

    A branch's retry is its own BRANCH message for the next attempt; the main line's is its
    next CONTINUE, delayed.
    """
    s, run = d.step, cx.state.run
    w = cx.write(s, status=StepStatus.RETRYING, attempt=s.attempt + 1, error=d.error,
                 wake_at=d.at, detail=cx.attempts(s, d.error))
    retry = (Message(MessageKind.BRANCH, cx.fn.id, run.run_id, key=s.key, attempt=s.attempt + 1,
                     due=d.at)
             if s.branch else cx.next.with_due(d.at))
    _log.warning("step %s of run %s failed (attempt %d): %s", s.key, run.run_id, s.attempt + 1,
                 d.error.message)
    return replace(cx.base, steps=(w,), outbox=(retry,))


SPEC = StepKindSpec(
    StepKind.RUN,
    commits={StepSucceeded: commit_result, StepFailed: commit_result, StepRetry: commit_retry},
)
