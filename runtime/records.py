"""The durable state of runs: run and step records, waiters, queue messages and commits.

These frozen dataclasses are what the engine reads and what backends persist. Times are
seconds since the Unix epoch (floats); backends render them as ISO strings where people read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any
from uuid import uuid4

from runtime.errors import MalformedMessageError
from runtime.expressions import index_term


class RunStatus(StrEnum):
    """Lifecycle of a run."""

    RUNNING = "Running"
    #: In flight, but its function's code cannot go on with it: the code no longer replays
    #: the run's history (nondeterminism) or the function is not deployed. Nothing is
    #: retried or burned; it is tried again every ``BLOCKED_RETRY`` and goes on (Running)
    #: once the deployed code can, or is cancelled or rerun by hand.
    BLOCKED = "Blocked"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SKIPPED = "Skipped"  # flow control started no run (rate limit, idempotency, singleton)

    @property
    def finished(self) -> bool:
        """Whether the run can no longer change."""
        return self is not RunStatus.RUNNING and self is not RunStatus.BLOCKED


class StepKind(StrEnum):
    """What a step does."""

    RUN = "run"
    SLEEP = "sleep"
    WAIT = "wait_for_event"
    INVOKE = "invoke"
    SEND = "send_event"


class StepStatus(StrEnum):
    """Where a step is; the first five are pending, the last two final.

    Capitalized like :class:`RunStatus`, so a run and its steps read the same everywhere
    (API, CLI, dashboard, DynamoDB items).
    """

    SCHEDULED = "Scheduled"  # a parallel branch queued as its own piece of work
    RETRYING = "Retrying"  # an attempt failed; the next is scheduled
    SLEEPING = "Sleeping"
    WAITING = "Waiting"
    INVOKING = "Invoking"
    COMPLETED = "Completed"
    FAILED = "Failed"

    @classmethod
    def _missing_(cls, value: object) -> StepStatus | None:
        """Read records written before statuses were capitalized (``"completed"``)."""
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None

    @property
    def final(self) -> bool:
        """Whether the step has its result."""
        return self in (StepStatus.COMPLETED, StepStatus.FAILED)


@dataclass(frozen=True)
class ErrorInfo:
    """A recorded error: class name, message, whether it may be retried, and the traceback."""

    name: str
    message: str
    retriable: bool = True
    stack: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ErrorInfo:
        """Inverse of :meth:`to_json`."""
        return cls(**raw)


@dataclass(frozen=True)
class StepRecord:
    """One step of a run.

    Attributes:
        key: Unique within the run: the step id, plus ``:N`` for its N-th reuse.
        id: The id the user gave.
        kind: What the step does.
        status: Where it is.
        attempt: Failed attempts so far.
        output: JSON result once completed.
        error: The last error (retrying) or the final one (failed).
        wake_at: When a sleep ends, a wait or invoke times out, or a retry is due.
        branch: Whether the step runs as a parallel branch (its own piece of work).
        started_at: First time the step was seen.
        ended_at: When the step got its result.
        detail: Kind-specific facts shown in timelines (event waited for, child run id...).
    """

    key: str
    id: str
    kind: StepKind
    status: StepStatus
    attempt: int = 0
    output: Any = None
    error: ErrorInfo | None = None
    wake_at: float | None = None
    branch: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (a new dict; ``output`` and ``detail`` are shared, not copied).

        Built field by field: ``asdict`` deep-copies the output, on every commit.
        """
        return {
            "key": self.key, "id": self.id, "kind": self.kind.value,
            "status": self.status.value, "attempt": self.attempt, "output": self.output,
            "error": self.error.to_json() if self.error else None, "wake_at": self.wake_at,
            "branch": self.branch, "started_at": self.started_at, "ended_at": self.ended_at,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StepRecord:
        """Inverse of :meth:`to_json`."""
        data = dict(raw)
        data["kind"] = StepKind(data["kind"])
        data["status"] = StepStatus(data["status"])
        data["error"] = ErrorInfo.from_json(data["error"]) if data.get("error") else None
        return cls(**data)


@dataclass(frozen=True)
class ParentRef:
    """The step of another run that invoked this run."""

    run_id: str
    function_id: str
    key: str


@dataclass(frozen=True)
class RerunOf:
    """The run this run reruns, and the step it was forked from (``None``: from the start)."""

    run_id: str
    step: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run of a function.

    Attributes:
        run_id: Unique id (a ULID, sortable by time).
        function_id: Which function.
        events: The triggering event(s), JSON-ready.
        status: Lifecycle state.
        version: Bumped by every committed change; only a message carrying the current version
            may advance the run, which makes stale and duplicate deliveries harmless.
        attempt: Failed attempts of the handler itself (errors outside steps).
        created_at: When the run was created.
        ended_at: When it finished.
        output: The handler's return value once completed.
        error: Why it failed or was cancelled.
        parent: The invoking step, for runs started by ``step.invoke``.
        rerun_of: The run this one reruns (by hand: ``stepkit rerun``, the API, the dashboard).
        deadline: When the run times out (``timeouts.finish``).
        last_msg: Id of the message whose commit was last applied, so a redelivery of it after a
            crash re-sends the outbox instead of being dropped as stale.
        outbox: What that commit still had to send.
        held_by: Flow control that delayed its start (``"throttle"``), if any.
        held_until: When that hold ends and the run's first step runs.
    """

    run_id: str
    function_id: str
    events: tuple[dict[str, Any], ...]
    status: RunStatus = RunStatus.RUNNING
    version: int = 0
    attempt: int = 0
    created_at: float = 0.0
    ended_at: float | None = None
    output: Any = None
    error: ErrorInfo | None = None
    parent: ParentRef | None = None
    rerun_of: RerunOf | None = None
    deadline: float | None = None
    last_msg: str | None = None
    outbox: tuple[Outgoing, ...] = ()
    held_by: str | None = None
    held_until: float | None = None

    def held(self, now: float) -> bool:
        """Whether flow control still holds the run back at ``now``."""
        return (
            self.status is RunStatus.RUNNING
            and self.version == 0
            and self.held_until is not None
            and self.held_until > now
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "function_id": self.function_id,
            "events": list(self.events),
            "status": self.status.value,
            "version": self.version,
            "attempt": self.attempt,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "output": self.output,
            "error": self.error.to_json() if self.error else None,
            "parent": asdict(self.parent) if self.parent else None,
            "rerun_of": asdict(self.rerun_of) if self.rerun_of else None,
            "deadline": self.deadline,
            "last_msg": self.last_msg,
            "outbox": [o.to_json() for o in self.outbox],
            "held_by": self.held_by,
            "held_until": self.held_until,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_json`."""
        return cls(
            run_id=raw["run_id"],
            function_id=raw["function_id"],
            events=tuple(raw["events"]),
            status=RunStatus(raw["status"]),
            version=int(raw["version"]),
            attempt=int(raw["attempt"]),
            created_at=float(raw["created_at"]),
            ended_at=raw.get("ended_at"),
            output=raw.get("output"),
            error=ErrorInfo.from_json(raw["error"]) if raw.get("error") else None,
            parent=ParentRef(**raw["parent"]) if raw.get("parent") else None,
            rerun_of=RerunOf(**raw["rerun_of"]) if raw.get("rerun_of") else None,
            deadline=raw.get("deadline"),
            last_msg=raw.get("last_msg"),
            outbox=tuple(outgoing_from_json(o) for o in raw.get("outbox") or ()),
            held_by=raw.get("held_by"),
            held_until=raw.get("held_until"),
        )


@dataclass(frozen=True)
class RunState:
    """A run with all its step records: the engine's input."""

    run: RunRecord
    steps: dict[str, StepRecord]


class WaiterKind(StrEnum):
    """What a matching event does."""

    STEP = "step"  # resolves a wait_for_event step
    CANCEL = "cancel"  # cancels the run (cancel_on)


@dataclass(frozen=True)
class Waiter:
    """A run waiting for an event.

    Attributes:
        event_name: The event name that may resolve it.
        run_id: The waiting run.
        function_id: Its function.
        key: The step key (STEP) or ``cancel:N`` (CANCEL).
        kind: What a match does.
        expression: CEL over ``async`` (the incoming event) with the run's own event values
            already interpolated; empty matches any event of that name.
        expires_at: When the waiter lapses.

    Stores keep a waiter under its :attr:`index` when it has one, so that an event is
    compared only with the waiters its own value could match (see ARCHITECTURE.md).
    """

    event_name: str
    run_id: str
    function_id: str
    key: str
    kind: WaiterKind
    expression: str = ""
    expires_at: float | None = None

    @property
    def index(self) -> tuple[str, str] | None:
        """``(path, value key)`` every matching event has (:func:`index_term`), if any."""
        return index_term(self.expression)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        raw = asdict(self)
        raw["kind"] = self.kind.value
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Waiter:
        """Inverse of :meth:`to_json`."""
        return cls(**{**raw, "kind": WaiterKind(raw["kind"])})


class MessageKind(StrEnum):
    """The pieces of work a function queue carries."""

    START = "start"  # create the run (idempotent) then act as CONTINUE at version 0
    CONTINUE = "continue"  # replay the main line; valid only at the run's current version
    BRANCH = "branch"  # perform one scheduled parallel step
    WAKE = "wake"  # a step's wake_at passed: end a sleep, time out a wait/invoke
    RESOLVE = "resolve"  # an invoked child run finished: resolve the parent's invoke step
    TIMEOUT = "timeout"  # the run's finish deadline passed
    MATCH = "match"  # an event matched a waiter: resolve the wait (payload: the event)
    CANCEL = "cancel"  # cancel the run (payload: the reason)
    FLUSH = "flush"  # a debounce or batch window's time is up: start its run (payload: gate)


@dataclass(frozen=True)
class Message:
    """A unit of work for a function's queue.

    Attributes:
        kind: What to do.
        function_id: The function (and so the queue).
        run_id: The run.
        id: Unique per send; re-sending the same message keeps its id.
        version: For CONTINUE, the run version it was issued for.
        key: For BRANCH and WAKE, the step key.
        attempt: For BRANCH, the attempt it performs.
        due: Epoch seconds before which it must not run; queues that cannot delay that long
            deliver early and the worker re-enqueues it for the rest (a timer hop).
        payload: The kind's JSON payload, read and built only through
            :mod:`runtime.messages` (``StartPayload``, ``MatchPayload``...).
    """

    kind: MessageKind
    function_id: str
    run_id: str
    id: str = field(default_factory=lambda: uuid4().hex)
    version: int | None = None
    key: str | None = None
    attempt: int = 0
    due: float | None = None
    payload: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the queue message body)."""
        # Field by field: asdict would deep-copy the payload (a START's events) each time.
        raw = {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}
        raw["kind"] = self.kind.value
        raw["type"] = "message"
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Message:
        """Inverse of :meth:`to_json`.

        Raises:
            MalformedMessageError: A field is missing, unknown or of the wrong type.
        """
        kind = _message_kind(raw)
        unknown = sorted(set(raw) - set(_MESSAGE_FIELDS) - {"kind", "type"})
        if unknown:
            raise MalformedMessageError(kind.value, unknown[0],
                                        f"only {', '.join(_MESSAGE_FIELDS)}",
                                        found=raw[unknown[0]])
        data = {}
        for name, (types, expected) in _MESSAGE_FIELDS.items():
            value = message_field(raw, kind.value, name, types, expected,
                                  required=name in ("function_id", "run_id"))
            if value is not None:
                data[name] = value
        return cls(kind, **data)

    def with_due(self, due: float | None) -> Message:
        """The same message, due at another time."""
        return replace(self, due=due)


#: A message's fields on the wire (besides ``kind``), their types and what they must be.
_MESSAGE_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "function_id": ((str,), "a function id (a string)"),
    "run_id": ((str,), "a run id (a string)"),
    "id": ((str,), "a message id (a string)"),
    "version": ((int,), "a run version (an integer)"),
    "key": ((str,), "a step key (a string)"),
    "attempt": ((int,), "an attempt number (an integer)"),
    "due": ((int, float), "a time in epoch seconds (a number)"),
    "payload": ((dict,), "a JSON object"),
}


def _message_kind(raw: dict[str, Any]) -> MessageKind:
    kinds = ", ".join(k.value for k in MessageKind)
    if "kind" not in raw:
        raise MalformedMessageError("queue", "kind", f"one of {kinds}")
    try:
        return MessageKind(raw["kind"])
    except (ValueError, TypeError):
        raise MalformedMessageError("queue", "kind", f"one of {kinds}",
                                    found=raw["kind"]) from None


def message_field(raw: dict[str, Any], kind: str, name: str, types: tuple[type, ...],
                  expected: str, *, required: bool = False, within: str = "") -> Any:
    """``raw[name]`` if it is of one of ``types``; ``None`` if absent (or null) and optional.

    Args:
        raw: The message, or a part of it.
        kind: The message's kind, for the error.
        name: The field.
        types: What it may be (a bool is no number unless ``bool`` is among them).
        expected: What it must be, in words, for the error.
        required: Whether it must be there.
        within: Where ``raw`` is in the message (``payload.``), for the error.

    Raises:
        MalformedMessageError: Naming the message kind, the field and what was expected.
    """
    if name not in raw:
        if required:
            raise MalformedMessageError(kind, within + name, expected)
        return None
    value = raw[name]
    if value is None and not required:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise MalformedMessageError(kind, within + name, expected, found=value)
    return value


@dataclass(frozen=True)
class EventOut:
    """An event to publish after a commit (``send_event`` and system events)."""

    event: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": "event", "event": self.event}


@dataclass(frozen=True)
class TimerCancel:
    """A timer a commit made moot (a wait answered, a run ended): delete it if it can be.

    Best effort: a timer left in place fires into a step or run that has moved on, which
    does nothing. On AWS it is the one-time Scheduler schedule of a message due beyond SQS's
    delay (each counts against the account's schedules quota until it fires); locally the
    queued message.

    Attributes:
        message_id: The timer message's id.
        function_id: Its function (and so its queue).
        due: When it is due.
        set_at: When it was set (so a queue knows whether it went to a schedule).
    """

    message_id: str
    function_id: str
    due: float
    set_at: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": "cancel", "message_id": self.message_id,
                "function_id": self.function_id, "due": self.due, "set_at": self.set_at}


Outgoing = Message | EventOut | TimerCancel


def outgoing_from_json(raw: dict[str, Any]) -> Outgoing:
    """Parse an outbox entry."""
    if raw.get("type") == "event":
        return EventOut(event=raw["event"])
    if raw.get("type") == "cancel":
        return TimerCancel(str(raw["message_id"]), str(raw["function_id"]), float(raw["due"]),
                           float(raw["set_at"]))
    return Message.from_json(raw)


@dataclass(frozen=True)
class StepWrite:
    """A step record to write, on condition of the record's current state.

    Attributes:
        record: The new record.
        expect_status: The status the stored record must have; ``None`` means it must not exist.
        expect_attempt: The attempt count the stored record must have (when it exists).
    """

    record: StepRecord
    expect_status: StepStatus | None = None
    expect_attempt: int = 0


@dataclass(frozen=True)
class RunPatch:
    """Changes to a run record; ``None`` leaves a field as it is."""

    status: RunStatus | None = None
    attempt: int | None = None
    output: Any = None
    error: ErrorInfo | None = None
    ended_at: float | None = None
    clear_error: bool = False  # drop an earlier attempt's error (the run completed after all)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: only the fields it sets."""
        raw: dict[str, Any] = {"status": self.status.value if self.status else None,
                               "attempt": self.attempt, "output": self.output,
                               "error": self.error.to_json() if self.error else None,
                               "ended_at": self.ended_at, "clear_error": self.clear_error or None}
        return {k: v for k, v in raw.items() if v is not None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunPatch:
        """Inverse of :meth:`to_json`."""
        return cls(
            status=RunStatus(raw["status"]) if "status" in raw else None,
            attempt=raw.get("attempt"), output=raw.get("output"),
            error=ErrorInfo.from_json(raw["error"]) if "error" in raw else None,
            ended_at=raw.get("ended_at"), clear_error=bool(raw.get("clear_error")),
        )


@dataclass(frozen=True)
class Commit:
    """One atomic change to a run: everything in it is applied, or nothing.

    A commit applies only while the run is unfinished, its version equals ``expect_version``
    and every step write's condition holds; it then bumps the version by one and records
    ``msg_id`` and the ``outbox``.
    """

    msg_id: str
    expect_version: int
    steps: tuple[StepWrite, ...] = ()
    run: RunPatch | None = None
    add_waiters: tuple[Waiter, ...] = ()
    remove_waiters: tuple[Waiter, ...] = ()
    outbox: tuple[Outgoing, ...] = ()


def commit_holds(state: RunState | None, commit: Commit) -> bool:
    """Whether ``commit``'s conditions hold on ``state`` (the run as stored, or ``None``).

    The run must exist, be unfinished and at ``expect_version``; every step write's stored
    record must be absent (``expect_status`` is ``None``) or have the expected status and
    attempt. A store that checks this on the exact stored version, and makes its write
    conditional on that version not having moved, applies the same rule as one that checks
    inside a transaction.
    """
    if state is None or state.run.status.finished or state.run.version != commit.expect_version:
        return False
    for w in commit.steps:
        stored = state.steps.get(w.record.key)
        if w.expect_status is None:
            if stored is not None:
                return False
        elif stored is None or (stored.status, stored.attempt) != (w.expect_status,
                                                                     w.expect_attempt):
            return False
    return True


def patched(run: RunRecord, patch: RunPatch | None) -> RunRecord:
    """``run`` with the fields ``patch`` sets (version, last message and outbox untouched)."""
    if patch is None:
        return run
    changes: dict[str, Any] = {
        name: value for name in ("status", "attempt", "output", "error", "ended_at")
        if (value := getattr(patch, name)) is not None
    }
    if patch.clear_error:
        changes["error"] = None
    return replace(run, **changes)


def committed_run(run: RunRecord, commit: Commit) -> RunRecord:
    """The run record once ``commit`` is applied: its patch, the version after it, its outbox."""
    return replace(patched(run, commit.run), version=commit.expect_version + 1,
                   last_msg=commit.msg_id, outbox=commit.outbox)


def applied(state: RunState, commit: Commit) -> RunState:
    """The run state once ``commit`` is applied: the version after it, its steps and patch."""
    run = committed_run(state.run, commit)
    steps = dict(state.steps)
    steps.update((w.record.key, w.record) for w in commit.steps)
    return RunState(run, steps)


@dataclass(frozen=True)
class Committed:
    """What the commit-log keeps of one applied commit, found by the message that made it.

    Attributes:
        version: The run version the commit made.
        outbox: What the commit had to send (re-sent when its message is redelivered).
        step_keys: The step records it wrote.
    """

    version: int
    outbox: tuple[Outgoing, ...]
    step_keys: tuple[str, ...]


@dataclass(frozen=True)
class Gate:
    """The flow-control state kept under one ``(scope, key)`` (see :mod:`runtime.flow`).

    Attributes:
        state: JSON-ready state; ``None`` when there is none (never written, or expired).
        version: Bumped by every write; a write names the version it read.
    """

    state: dict[str, Any] | None = None
    version: int = 0


@dataclass(frozen=True)
class GateWrite:
    """A new state for a gate, on condition that its version is still ``expect_version``.

    Attributes:
        scope: What kind of gate and for what, e.g. ``"throttle:send-digest"``.
        key: The flow-control key's value (``""`` when the option has no key).
        state: The new state.
        expect_version: The version that was read (0: the gate does not exist yet).
        expires_at: When the state may be forgotten (it no longer matters after this).
    """

    scope: str
    key: str
    state: dict[str, Any]
    expect_version: int
    expires_at: float | None = None


def check_distinct(gates: Sequence[GateWrite]) -> None:
    """Refuse two writes of one gate in one ``create_run`` (one transaction writes an item once).

    Raises:
        ValueError: A ``(scope, key)`` appears twice.
    """
    if len({(g.scope, g.key) for g in gates}) != len(gates):
        raise ValueError("create_run: the same gate (scope, key) is written more than once")
