"""The step kinds, one module each, and the table the engine and orchestrator use.

Each module holds everything about one kind: its ``ctx.step`` method (planning), its op
(what performing it decides), its decision and the commit that records it, and how a pending
step of its kind resolves (a wake, a match, a child run's end). A new step kind is one new
module plus one line in :data:`KINDS` (and its ``ctx.step`` mixin in :class:`Steps`).

===========  ================  ==================================================
kind         module            resolves by
===========  ================  ==================================================
run          ``run.py``        (never pending: performed where it is reached)
sleep        ``sleep.py``      WAKE at its time (or a skip)
wait         ``wait.py``       MATCH (an event), WAKE at its timeout; lookback
invoke       ``invoke.py``     RESOLVE (the child run ended), WAKE at its timeout
send_event   ``send.py``       (never pending)
parallel     ``parallel.py``   (its branches are steps of the kinds above)
===========  ================  ==================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime.records import Commit, StepKind
from runtime.steps import invoke, parallel, run, send, sleep, wait
from runtime.steps.base import CommitContext, StepKindSpec
from runtime.steps.invoke import InvokeSteps
from runtime.steps.parallel import ParallelSteps
from runtime.steps.run import RunSteps
from runtime.steps.send import SendSteps
from runtime.steps.sleep import SleepSteps
from runtime.steps.wait import WaitSteps

KINDS: dict[StepKind, StepKindSpec] = {
    spec.kind: spec for spec in (run.SPEC, sleep.SPEC, wait.SPEC, invoke.SPEC, send.SPEC)
}
#: The commit of every decision a step makes, by the decision's type.
COMMITS: dict[type, Callable[[Any, CommitContext], Commit]] = {
    **{t: c for spec in KINDS.values() for t, c in spec.commits.items()},
    **parallel.COMMITS,
}


class Steps(RunSteps, SleepSteps, WaitSteps, InvokeSteps, SendSteps, ParallelSteps):
    """The step tools available as ``ctx.step``."""


__all__ = ["COMMITS", "KINDS", "Steps"]
