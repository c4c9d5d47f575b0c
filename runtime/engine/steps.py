"""``ctx.step``: memoized steps, and the interrupt that suspends a handler at new work.

Every step method follows one template: compute the step's key, return the memoized result if
the history has one, otherwise describe the work (a :class:`PlannedOp`) and unwind the handler
with :class:`Interrupt`, a ``BaseException`` so a user's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.durations import MAX_SLEEP, parse_instant, user_duration
from runtime.engine.decisions import StepRef
from runtime.errors import NondeterminismError, NonRetriableError, StepError, StepLimitError
from runtime.events import _NAME as _EVENT_NAME
from runtime.events import MAX_EVENT_BYTES, MAX_INVOKE_BYTES, Event, validate_events
from runtime.expressions import Expression, ExpressionError, interpolate, match_expression
from runtime.records import RunRecord, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from runtime.app import FunctionDef

T = TypeVar("T")
_IN_FLIGHT = (StepStatus.SCHEDULED, StepStatus.SLEEPING, StepStatus.WAITING, StepStatus.INVOKING)
_FINAL = frozenset(status for status in StepStatus if status.final)
_COMPLETED = StepStatus.COMPLETED
_EVENT_IDS = uuid.UUID("8b1c3f5e-2d4a-4c6b-9e7f-0a1b2c3d4e5f")


@dataclass(frozen=True)
class PlannedOp:
    """New work found during replay, with what is needed to perform it."""

    ref: StepRef
    in_flight: bool
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    until: float | None = None
    event: str = ""
    expression: str = ""
    function_id: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    events: tuple[dict[str, Any], ...] = ()


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
        # Only final history records are ever visited (``Steps._memo``): comparing counts is
        # the same test as "every final record was visited", in O(1) per log call.
        if self._final is None:
            self._final = sum(1 for r in self.history.values() if r.status.final)
        return len(self.visited) >= self._final

    def interrupt(self, ops: list[PlannedOp]) -> Interrupt:
        """Record the ops (in case user code swallows the interrupt) and build it."""
        self.interrupted = ops
        return Interrupt(ops)


class Steps:
    """The step tools available as ``ctx.step``."""

    def __init__(self, state: ReplayState) -> None:
        self._s = state

    # -- the common template -------------------------------------------------------------

    def _lookup(self, step_id: str, kind: StepKind) -> tuple[StepRef, StepRecord | None]:
        key, rec = self._find(step_id, kind)
        return self._ref(key, step_id, kind, rec), rec

    def _find(self, step_id: str, kind: StepKind) -> tuple[str, StepRecord | None]:
        """The step's key and its record.

        Replay runs this for every step of the history on every invocation, so it builds
        nothing a memoized step does not need.
        """
        s = self._s
        if not isinstance(step_id, str) or not step_id:
            raise NonRetriableError(f"step id must be a non-empty string, got {step_id!r}")
        # Counted per branch: a branch's keys never depend on how far its siblings got.
        scope = s.scope
        if scope and not s.scoped:
            scope = ""
        counted = (scope, step_id)
        n = s.counters[counted]
        s.counters[counted] = n + 1
        key = step_id if n == 0 else f"{step_id}:{n}"
        if scope:
            key = f"{key}@{scope}"
        rec = s.history.get(key)
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

    def _suspend(self, ref: StepRef, rec: StepRecord | None, **op: Any) -> Interrupt:
        s = self._s
        in_flight = (
            rec is not None
            and ref.key != s.target
            and (rec.status in _IN_FLIGHT or (rec.status is StepStatus.RETRYING and rec.branch))
        )
        if rec is not None and rec.wake_at is not None and "until" in op:
            op["until"] = rec.wake_at  # a pending record keeps the deadline it was given
        return s.interrupt([PlannedOp(ref=ref, in_flight=in_flight, **op)])

    # -- the steps -----------------------------------------------------------------------

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
            if rec is not None and rec.status is _COMPLETED and rec.kind is StepKind.RUN:
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
        raise self._suspend(ref, rec, fn=fn, args=args, kwargs=kwargs)

    def sleep(self, step_id: str, duration: str | timedelta) -> None:
        """Pause the run for ``duration`` ("30s", "15m", "1h", "3d", "1w" or a timedelta)."""
        ref, rec = self._lookup(step_id, StepKind.SLEEP)
        if self._memo(rec):
            return
        try:
            delta = user_duration(duration, where=f"step.sleep '{step_id}'")
        except ValueError as exc:
            raise NonRetriableError(str(exc)) from None
        self._check_sleep(step_id, delta)
        raise self._suspend(ref, rec, until=self._s.now + delta.total_seconds())

    def sleep_until(self, step_id: str, until: datetime | str) -> None:
        """Pause the run until a time (aware ``datetime`` or ISO 8601 string)."""
        ref, rec = self._lookup(step_id, StepKind.SLEEP)
        if self._memo(rec):
            return
        try:
            at = parse_instant(until, where=f"step.sleep_until '{step_id}'").timestamp()
        except ValueError as exc:
            raise NonRetriableError(str(exc)) from None
        self._check_sleep(step_id, timedelta(seconds=at - self._s.now))
        raise self._suspend(ref, rec, until=at)

    @staticmethod
    def _check_sleep(step_id: str, delta: timedelta) -> None:
        if delta > MAX_SLEEP:
            raise NonRetriableError(
                f"step '{step_id}': sleeping {delta} is over the one-year limit ({MAX_SLEEP})"
            )

    def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: str | timedelta,
        match: str | None = None,
        if_: str | None = None,
    ) -> Event | None:
        """Wait for an event; return it, or ``None`` if ``timeout`` passes first.

        Args:
            step_id: The step id.
            event: The event name to wait for.
            timeout: How long to wait.
            match: A field path equal in the run's event and the awaited one, e.g. ``"data.id"``.
            if_: CEL over ``event`` (this run's event) and ``async`` (the awaited one).
        """
        ref, rec = self._lookup(step_id, StepKind.WAIT)
        if self._memo(rec):
            assert rec is not None
            return Event.model_validate(rec.output) if rec.output is not None else None
        where = f"step.wait_for_event '{step_id}'"
        if match and if_:
            raise NonRetriableError(f"{where}: give match or if_, not both")
        try:
            delta = user_duration(timeout, where=f"{where} timeout")
            if not isinstance(event, str) or not _EVENT_NAME.match(event):
                raise ValueError(f"{where}: invalid event name {event!r}")
            source = match_expression(match) if match else (if_ or "")
            if source:
                Expression.check_names(source, ("event", "async"), where=where)
            expression = interpolate(source, {"event": self._s.run.events[0]}) if source else ""
            if expression:
                Expression.compile(expression, where=where)
        except (ValueError, ExpressionError) as exc:
            raise NonRetriableError(str(exc)) from None
        self._check_sleep(step_id, delta)
        raise self._suspend(
            ref, rec, event=event, expression=expression, until=self._s.now + delta.total_seconds()
        )

    def invoke(
        self,
        step_id: str,
        *,
        function: FunctionDef | str,
        data: Mapping[str, Any] | None = None,
        timeout: str | timedelta | None = None,
    ) -> Any:
        """Run another function as a child run and return its output.

        Raises:
            StepError: The child run failed, was cancelled or timed out.
        """
        ref, rec = self._lookup(step_id, StepKind.INVOKE)
        if self._memo(rec):
            assert rec is not None
            return rec.output
        function_id = function if isinstance(function, str) else function.id
        try:
            size = len(json.dumps(dict(data or {}), allow_nan=False,
                                  separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise NonRetriableError(
                f"step.invoke '{step_id}': data is not JSON-serialisable: {exc}"
            ) from None
        if size > MAX_INVOKE_BYTES:
            raise NonRetriableError(
                f"step.invoke '{step_id}': data is {size} bytes of JSON, over the "
                f"{MAX_INVOKE_BYTES}-byte limit (it becomes the child's triggering event)"
            )
        until = None
        if timeout is not None:
            try:
                delta = user_duration(timeout, where=f"step.invoke '{step_id}' timeout")
            except ValueError as exc:
                raise NonRetriableError(str(exc)) from None
            until = self._s.now + delta.total_seconds()
        raise self._suspend(ref, rec, function_id=function_id, data=dict(data or {}), until=until)

    def send_event(
        self, step_id: str, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]]
    ) -> list[str]:
        """Send one or more events; return their ids. Sent once, even when replayed."""
        ref, rec = self._lookup(step_id, StepKind.SEND)
        if self._memo(rec):
            assert rec is not None
            return list(rec.output)
        items = [events] if isinstance(events, Event | Mapping) else list(events)
        prepared: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            raw = item.to_json() if isinstance(item, Event) else dict(item)
            if not raw.get("id"):
                # Deterministic ids make a re-sent step's events duplicates, dropped downstream.
                raw["id"] = uuid.uuid5(_EVENT_IDS, f"{self._s.run.run_id}/{ref.key}/{i}").hex
            prepared.append(raw)
        valid = validate_events(prepared, now_ms=int(self._s.now * 1000))
        total = sum(len(json.dumps(e.to_json(), separators=(",", ":")).encode()) for e in valid)
        if total > MAX_EVENT_BYTES:
            raise NonRetriableError(
                f"step.send_event '{step_id}': {len(valid)} events total {total} bytes, over the "
                f"{MAX_EVENT_BYTES}-byte limit of one send; split them over several steps"
            )
        raise self._suspend(ref, rec, events=tuple(e.to_json() for e in valid))

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
