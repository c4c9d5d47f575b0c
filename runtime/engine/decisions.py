"""What one invocation of the engine decided: a value, never I/O.

The orchestrator turns a decision into one atomic commit plus the messages it implies
(:func:`runtime.orchestration.commits.commit_for`, through each step kind's own commit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from runtime.records import ErrorInfo, StepKind


@dataclass(frozen=True)
class StepRef:
    """Identifies a step: its key in the run, the user's id, its kind and attempt."""

    key: str
    id: str
    kind: StepKind
    attempt: int = 0
    branch: bool = False


@dataclass(frozen=True)
class StepSucceeded:
    """A step produced its result."""

    step: StepRef
    output: Any
    size: int = 0  # bytes of JSON, counted against the run's limit


@dataclass(frozen=True)
class StepRetry:
    """A step attempt failed; try again at ``at``."""

    step: StepRef
    error: ErrorInfo
    at: float


@dataclass(frozen=True)
class StepFailed:
    """A step failed for good; replay will raise ``StepError`` where it is called."""

    step: StepRef
    error: ErrorInfo


@dataclass(frozen=True)
class RunCompleted:
    """The handler returned."""

    output: Any


@dataclass(frozen=True)
class RunFailed:
    """The run failed for good."""

    error: ErrorInfo


@dataclass(frozen=True)
class RunBlocked:
    """The code cannot replay the run's history (nondeterminism): hold it, burn nothing."""

    error: ErrorInfo


@dataclass(frozen=True)
class RunRetry:
    """The handler raised outside any step; replay it again at ``at``."""

    error: ErrorInfo
    at: float


@dataclass(frozen=True)
class Noop:
    """Nothing to do now: the run waits on work already in flight."""

    reason: str


class Decision(Protocol):
    """Any decision of the engine: a frozen value, never I/O.

    The ones every step kind shares are here; each step kind defines its own beside its
    ``ctx.step`` method (:mod:`runtime.steps`), with the commit that records it.
    """
