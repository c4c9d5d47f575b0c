"""The template every ``ctx.step`` method follows, and the bookkeeping of one replay.

A step method computes the step's key, returns the memoized result if the history has one,
otherwise describes the work (a :class:`PlannedOp` carrying its kind's op) and unwinds the
handler with :class:`Interrupt`, a ``BaseException`` so a user's ``except Exception`` cannot
swallow it. The step kinds themselves live in :mod:`runtime.steps`, one module each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from runtime.engine.decisions import Decision, StepRef
from runtime.errors import NondeterminismError, NonRetriableError, StepError, StepLimitError
from runtime.records import RunRecord, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from runtime.app import FunctionDef
    from runtime.engine.context import Context
    from runtime.engine.outcomes import Limits

_IN_FLIGHT = (StepStatus.SCHEDULED, StepStatus.SLEEPING, StepStatus.WAITING, StepStatus.INVOKING)
_FINAL = frozenset(status for status in StepStatus if status.final)


@dataclass(frozen=True)
class Performing:
    """What a step's op may use to decide: the function, its context, the replay, limits."""

    fn: FunctionDef
    ctx: Context
    rs: ReplayState
    limits: Limits


class StepOp(Protocol):
    """New work of one step kind, as planned during replay (each kind has its own)."""

    def decide(self, ref: StepRef, env: Performing) -> Decision:
        """What performing it now decides (a ``step.run`` runs its function here)."""
        ...


@dataclass(frozen=True)
class PlannedOp:
    """New work found during replay: the step, whether it is in flight, and its kind's op."""

    ref: StepRef
    in_flight: bool
    op: StepOp


class Interrupt(BaseException):
    """Unwinds the handler at new work. Control flow, not an error."""

    def __init__(self, ops: list[PlannedOp]) -> None:
        super().__init__(f"{len(ops)} step(s) to perform")
        self.ops = ops


@dataclass
class ReplayState:
    """Mutable bookkeeping of one invocation's replay."""

    run: RunRecord
    history: Mapping[str, StepRecord]
    now: float
    target: str | None
    max_steps: int
    #: The attempt of the step this replay performs died with its worker (see ``execute``).
    lost: bool = False
    counters: defaultdict[tuple[str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    visited: set[str] = field(default_factory=set)
    checkpoint: float = 0.0
    parallel_depth: int = 0
    #: The parallel branch the handler is in: "" at the top, "2" in the third branch of a
    #: group, "2.0" in the first branch of a group inside it.
    scope: str = ""
    #: Per branch: the latest checkpoint and the steps passed, so ``ctx.now()`` and
    #: ``ctx.uuid()`` in a branch do not depend on how far its siblings got.
    scope_checkpoint: dict[str, float] = field(default_factory=dict)
    scope_visited: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    scope_uuids: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    _scoped: bool | None = None

    @property
    def scoped(self) -> bool:
        """Whether step keys in branches carry their branch (``id@2``).

        Runs that recorded a branch step before keys were scoped keep the old run-wide
        counters, so they replay unchanged across the upgrade.
        """
        if self._scoped is None:
            self._scoped = not any(r.branch and "@" not in r.key for r in self.history.values())
        return self._scoped
    fatal: BaseException | None = None
    interrupted: list[PlannedOp] | None = None
    performing: bool = False
    _final: int | None = None

    @property
    def live(self) -> bool:
        """Whether the handler is past the memoized history (so logs should be emitted)."""
        if self.performing:
            return True
        # Only final history records are ever visited (``StepTemplate._memo``): comparing
        # counts is the same test as "every final record was visited", in O(1) per log call.
        if self._final is None:
            self._final = sum(1 for r in self.history.values() if r.status.final)
        return len(self.visited) >= self._final

    def interrupt(self, ops: list[PlannedOp]) -> Interrupt:
        """Record the ops (in case user code swallows the interrupt) and build it."""
        self.interrupted = ops
        return Interrupt(ops)


#: The longest step id, in bytes of UTF-8: its key is part of DynamoDB keys (a waiter's sort
#: key is ``<run id>#<step key>``, and sort keys take at most 1,024 bytes), and escaping can
#: triple the reserved characters.
MAX_STEP_ID_BYTES = 256
#: Characters of the keys stepkit generates: ``id:2`` (the third call of ``id``), ``id@1.0``
#: (in a parallel branch). Escaped in a user's id, so no id can reach another's key.
_RESERVED = str.maketrans({"%": "%25", ":": "%3A", "@": "%40"})


def step_key(step_id: object) -> str:
    """The key of a step's first call: its id, with the generated keys' characters escaped.

    Raises:
        NonRetriableError: The id is not a non-empty string of valid UTF-8 within
            :data:`MAX_STEP_ID_BYTES` bytes.
    """
    if not isinstance(step_id, str) or not step_id:
        raise NonRetriableError(f"step id must be a non-empty string, got {step_id!r}")
    if step_id.isascii():
        size = len(step_id)
    else:
        try:
            size = len(step_id.encode("utf-8"))
        except UnicodeEncodeError:
            raise NonRetriableError(
                f"step id {step_id!r} contains a lone surrogate that UTF-8 cannot encode"
            ) from None
    if size > MAX_STEP_ID_BYTES:
        raise NonRetriableError(
            f"step id {step_id[:40]!r}... is {size} bytes, over the {MAX_STEP_ID_BYTES} a "
            "step id may have (it is part of the store's keys)")
    if "%" in step_id or ":" in step_id or "@" in step_id:
        return step_id.translate(_RESERVED)
    return step_id


class StepTemplate:
    """The lookup, memo and suspension every step kind's ``ctx.step`` method uses."""

    def __init__(self, state: ReplayState) -> None:
        self._s = state

    def _lookup(self, step_id: str, kind: StepKind) -> tuple[StepRef, StepRecord | None]:
        key, rec = self._find(step_id, kind)
        return self._ref(key, step_id, kind, rec), rec

    def _find(self, step_id: str, kind: StepKind) -> tuple[str, StepRecord | None]:
        """The step's key and its record.

        Replay runs this for every step of the history on every invocation, so it builds
        nothing a memoized step does not need.
        """
        s = self._s
        base = step_key(step_id)
        # Counted per branch: a branch's keys never depend on how far its siblings got.
        scope = s.scope
        if scope and not s.scoped:
            scope = ""
        counted = (scope, step_id)
        n = s.counters[counted]
        s.counters[counted] = n + 1
        suffix = (f":{n}" if n else "") + (f"@{scope}" if scope else "")
        key = base + suffix
        rec = s.history.get(key)
        if rec is None and base != step_id:
            # Recorded before ids were escaped (a run in flight across the upgrade): its
            # record is under the id as given, and says it is this step's.
            old = s.history.get(step_id + suffix)
            if old is not None and old.id == step_id:
                key, rec = step_id + suffix, old
        if rec is not None and rec.kind is not kind:
            err = NondeterminismError(
                f"nondeterminism at step '{key}': the run's history recorded a {rec.kind.value} "
                f"step there, but the handler now calls {kind.value}; code that changes the "
                "order or kind of steps must use new step ids"
            )
            s.fatal = err
            raise err
        if rec is None and len(s.history) >= s.max_steps:
            err2 = StepLimitError(
                f"run exceeded the maximum of {s.max_steps} steps at step '{key}'"
            )
            s.fatal = err2
            raise err2
        return key, rec

    def _ref(self, key: str, step_id: str, kind: StepKind, rec: StepRecord | None) -> StepRef:
        attempt = rec.attempt if rec is not None else 0
        return StepRef(key, step_id, kind, attempt, self._s.parallel_depth > 0)

    def _memo(self, rec: StepRecord | None) -> bool:
        if rec is None or rec.status not in _FINAL:
            return False
        s = self._s
        s.visited.add(rec.key)
        s.scope_visited[s.scope] += 1
        ended = rec.ended_at
        if ended is not None:
            if ended > s.checkpoint:
                s.checkpoint = ended
            if s.scope:
                s.scope_checkpoint[s.scope] = max(s.scope_checkpoint[s.scope], ended)
        if rec.status is StepStatus.FAILED:
            err = rec.error
            raise StepError(rec.id, err.name if err else "Error", err.message if err else "")
        return True

    @staticmethod
    def _kept(rec: StepRecord | None, until: float | None) -> float | None:
        """The deadline a pending step keeps: the one it was given, else ``until`` (new)."""
        if rec is not None and rec.wake_at is not None:
            return rec.wake_at
        return until

    def _suspend(self, ref: StepRef, rec: StepRecord | None, op: StepOp) -> Interrupt:
        s = self._s
        in_flight = (
            rec is not None
            and ref.key != s.target
            and (rec.status in _IN_FLIGHT or (rec.status is StepStatus.RETRYING and rec.branch))
        )
        return s.interrupt([PlannedOp(ref=ref, in_flight=in_flight, op=op)])
