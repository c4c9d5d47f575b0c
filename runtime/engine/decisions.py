"""What one invocation of the engine decided: a value, never I/O.

Backends turn a decision into one atomic commit plus the messages it implies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
class Sleep:
    """Suspend until ``until``."""

    step: StepRef
    until: float


@dataclass(frozen=True)
class WaitForEvent:
    """Suspend until an event named ``event`` matches ``expression`` or ``until`` passes."""

    step: StepRef
    event: str
    expression: str
    until: float


@dataclass(frozen=True)
class Invoke:
    """Start a run of ``function_id`` with ``data`` and suspend until it ends or ``until``."""

    step: StepRef
    function_id: str
    data: dict[str, Any]
    until: float | None


@dataclass(frozen=True)
class SendEvents:
    """Publish events (ids already assigned, deterministically) and record their ids."""

    step: StepRef
    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class ScheduleBranches:
    """Run each step as its own piece of work (parallel branches).

    ``more``: the group has further new branches than one commit may schedule; the commit
    continues the main line at once to schedule the next slice.
    """

    steps: tuple[StepRef, ...]
    more: bool = False


@dataclass(frozen=True)
class RunCompleted:
    """The handler returned."""

    output: Any


@dataclass(frozen=True)
class RunFailed:
    """The run failed for good."""

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


Decision = (
    StepSucceeded
    | StepRetry
    | StepFailed
    | Sleep
    | WaitForEvent
    | Invoke
    | SendEvents
    | ScheduleBranches
    | RunCompleted
    | RunFailed
    | RunRetry
    | Noop
)
