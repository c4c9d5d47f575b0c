"""``step.parallel``: run each callable (typically one step) as a concurrent branch.

Plan: replay every branch in its own scope; the steps they reach without a result are the
group's new work. Decide (:func:`schedule`): a lone main-line step is performed at once;
otherwise the new branches are scheduled, at most :data:`MAX_BRANCHES_PER_COMMIT` per commit
(:class:`ScheduleBranches`). Commit: each step Scheduled, one BRANCH message each, and for a
wider group a slice message that schedules the next slice once these are committed. A branch
step is then performed by its BRANCH (a replay that targets its key) and recorded by its
own kind's commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from runtime.engine.decisions import StepRef
from runtime.engine.template import Interrupt, PlannedOp, StepTemplate
from runtime.messages import slice_message
from runtime.records import Commit, Message, MessageKind, StepStatus
from runtime.steps.base import CommitContext

T = TypeVar("T")
#: Each slice is one commit, and stores cap the items one atomic write may touch
#: (DynamoDB: 100 per transaction).
MAX_BRANCHES_PER_COMMIT = 50


@dataclass(frozen=True)
class ScheduleBranches:
    """Run each step as its own piece of work (parallel branches).

    ``more``: the group has further new branches than one commit may schedule; the commit
    continues the main line at once to schedule the next slice.
    """

    steps: tuple[StepRef, ...]
    more: bool = False


class ParallelSteps(StepTemplate):
    """``ctx.step.parallel``."""

    def parallel(self, branches: Sequence[Callable[[], T]]) -> tuple[T, ...]:
        """Run each callable (typically one ``step.run``) as a concurrent branch.

        Returns:
            The branches' results, in order, once all have finished.
        """
        s = self._s
        results: list[T] = []
        ops: list[PlannedOp] = []
        outer = s.scope
        entry = s.scope_checkpoint.get(outer, s.checkpoint) if outer else s.checkpoint
        s.parallel_depth += 1
        try:
            for i, branch in enumerate(branches):
                s.scope = f"{outer}.{i}" if outer else str(i)
                s.scope_checkpoint[s.scope] = entry
                try:
                    results.append(branch())
                except Interrupt as it:
                    ops.extend(it.ops)
        finally:
            s.parallel_depth -= 1
            s.scope = outer
        if ops:
            raise s.interrupt(ops)
        return tuple(results)


def schedule(new: Sequence[PlannedOp]) -> ScheduleBranches:
    """The next slice of new branches to schedule (``more``: a slice follows)."""
    return ScheduleBranches(tuple(o.ref for o in new[:MAX_BRANCHES_PER_COMMIT]),
                            more=len(new) > MAX_BRANCHES_PER_COMMIT)


def commit(d: ScheduleBranches, cx: CommitContext) -> Commit:
    """Each step Scheduled with its BRANCH message; and the next slice's message, if any."""
    run_id, fn_id = cx.state.run.run_id, cx.fn.id
    writes = tuple(cx.write(s, status=StepStatus.SCHEDULED, branch=True) for s in d.steps)
    msgs = tuple(Message(MessageKind.BRANCH, fn_id, run_id, key=s.key) for s in d.steps)
    if not d.more:
        return replace(cx.base, steps=writes, outbox=msgs)
    # The next slice: scheduled by a replay at whatever version the run has by then (the
    # branches just scheduled move the version on, and a wait or sleep among them sends
    # no continuation of its own).
    return replace(cx.base, steps=writes, outbox=(*msgs, slice_message(fn_id, run_id)))


#: Parallel is not a kind of step record (its branches are steps of their own kinds): it
#: registers only the commit of its decision.
COMMITS: dict[type, Callable[[Any, CommitContext], Commit]] = {ScheduleBranches: commit}
