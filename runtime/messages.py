"""Typed payloads of queue messages, with the same JSON on the wire.

A :class:`~runtime.records.Message` carries its payload as the JSON object the queue holds;
these classes are the only code that reads or builds one, so each key is named once.
Every class renders only the keys it sets, as the payloads were written before they had
types, so messages already in queues read the same. Each reads its payload strictly: a
field missing or of the wrong type is a :class:`~runtime.errors.MalformedMessageError`
naming the kind, the field and what it must be, and :func:`checked` reads them all, so a
worker can refuse such a message as it receives it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from runtime.errors import MalformedMessageError
from runtime.records import Message, MessageKind, ParentRef, RerunOf, message_field

_IN = "payload."


def _field(raw: dict[str, Any], msg: Message, name: str, types: tuple[type, ...],
           expected: str, *, required: bool = False, within: str = _IN) -> Any:
    """A field of ``msg``'s payload (or of a part of it, ``within``), strictly typed."""
    return message_field(raw, msg.kind.value, name, types, expected, required=required,
                         within=within)


def resent(msg: Message) -> bool:
    """Whether ``msg`` is marked to re-send its commit's outbox (a redrive, a by-hand cancel).

    Such a message is treated as a redelivery even on its first receive.
    """
    return bool((msg.payload or {}).get("resend"))


@dataclass(frozen=True)
class StartPayload:
    """A START's payload: the triggering events and how the run was asked for.

    Attributes:
        events: The triggering event(s), JSON-ready.
        parent: The invoking step, for a ``step.invoke`` child.
        direct: Started by hand, by a cron fire or by a parent: triggers' ``if`` is not
            applied (again).
        rerun: Started by hand (a rerun, an invoke): flow control's start rules let it by.
        rerun_of: The run it reruns, and the step it forks from.
    """

    events: tuple[dict[str, Any], ...]
    parent: ParentRef | None = None
    direct: bool = False
    rerun: bool = False
    rerun_of: RerunOf | None = None

    def to_json(self) -> dict[str, Any]:
        """The payload as queued."""
        raw: dict[str, Any] = {"events": list(self.events)}
        if self.parent is not None:
            raw["parent"] = asdict(self.parent)
        if self.direct:
            raw["direct"] = True
        if self.rerun:
            raw["rerun"] = True
        if self.rerun_of is not None:
            raw["rerun_of"] = {"run_id": self.rerun_of.run_id, "step": self.rerun_of.step}
        return raw

    @classmethod
    def of(cls, msg: Message) -> StartPayload:
        """The payload of START ``msg``.

        Raises:
            MalformedMessageError: It has no events, or a field of the wrong type.
        """
        raw = msg.payload or {}
        events = _field(raw, msg, "events", (list,), "a list of event objects", required=True)
        if not events or not all(isinstance(e, dict) for e in events):
            raise MalformedMessageError(msg.kind.value, "payload.events",
                                        "a list of event objects", found=events)
        parent = _parent(raw, msg)
        # "fork": a START queued before reruns recorded their original.
        name = "rerun_of" if raw.get("rerun_of") else "fork"
        origin = _field(raw, msg, name, (dict,), "the run rerun {run_id, step}")
        return cls(
            events=tuple(events),
            parent=parent,
            direct=bool(raw.get("direct") or parent),
            rerun=bool(raw.get("rerun")),
            rerun_of=RerunOf(
                _field(origin, msg, "run_id", (str,), "a run id", required=True,
                       within=f"{_IN}{name}."),
                _field(origin, msg, "step", (str,), "a step id", within=f"{_IN}{name}."),
            ) if origin else None,
        )

    def message(self, function_id: str, run_id: str) -> Message:
        """The START message of run ``run_id`` (its id derived from the run's, so a copy is one)."""
        return Message(MessageKind.START, function_id, run_id, id=f"start-{run_id}",
                       payload=self.to_json())


def _parent(raw: dict[str, Any], msg: Message) -> ParentRef | None:
    """A START's invoking step, if it has one."""
    parent = _field(raw, msg, "parent", (dict,), "the invoking step {run_id, function_id, key}")
    if not parent:
        return None
    within = f"{_IN}parent."
    return ParentRef(*(_field(parent, msg, name, (str,), "a string", required=True,
                              within=within) for name in ("run_id", "function_id", "key")))


@dataclass(frozen=True)
class EventRef:
    """Where a matched event too large to travel inline is kept: the event timeline."""

    name: str
    ts: int
    event_id: str


@dataclass(frozen=True)
class MatchPayload:
    """A MATCH's payload: the event that matched the wait, inline or by reference."""

    event: dict[str, Any] | None = None
    ref: EventRef | None = None

    def to_json(self) -> dict[str, Any]:
        """The payload as queued."""
        if self.event is not None:
            return {"event": self.event}
        return {"ref": asdict(self.ref)} if self.ref is not None else {}

    @classmethod
    def of(cls, msg: Message) -> MatchPayload:
        """The payload of MATCH ``msg``.

        Raises:
            MalformedMessageError: It has neither an event nor a reference, or a field of
                the wrong type.
        """
        raw = msg.payload or {}
        event = _field(raw, msg, "event", (dict,), "an event object")
        ref = _field(raw, msg, "ref", (dict,), "an event reference {name, ts, event_id}",
                     required=event is None)
        if ref is None:
            return cls(event=event)
        within = f"{_IN}ref."
        return cls(event=event, ref=EventRef(
            _field(ref, msg, "name", (str,), "an event name", required=True, within=within),
            _field(ref, msg, "ts", (int,), "a time in epoch ms (an integer)", required=True,
                   within=within),
            _field(ref, msg, "event_id", (str,), "an event id", required=True, within=within)))


@dataclass(frozen=True)
class CancelPayload:
    """A CANCEL's payload: why, and whether to re-send (a cancel committed by its sender)."""

    reason: str
    resend: bool = False

    def to_json(self) -> dict[str, Any]:
        """The payload as queued."""
        return {"reason": self.reason, "resend": True} if self.resend else {"reason": self.reason}

    @classmethod
    def of(cls, msg: Message) -> CancelPayload:
        """The payload of CANCEL ``msg``."""
        raw = msg.payload or {}
        reason = _field(raw, msg, "reason", (str,), "a reason (a string)")
        return cls(reason or "cancelled", bool(raw.get("resend")))


@dataclass(frozen=True)
class ResolvePayload:
    """A RESOLVE's payload: the invoked child run that finished."""

    child_run_id: str

    def to_json(self) -> dict[str, Any]:
        """The payload as queued."""
        return {"child_run_id": self.child_run_id}

    @classmethod
    def of(cls, msg: Message) -> ResolvePayload:
        """The payload of RESOLVE ``msg``."""
        return cls(_field(msg.payload or {}, msg, "child_run_id", (str,), "a run id",
                          required=True))


def is_slice(msg: Message) -> bool:
    """Whether CONTINUE ``msg`` schedules a wide parallel group's next slice.

    Such a CONTINUE carries ``{"slice": true}`` and no version: it is not tied to one.
    """
    return bool((msg.payload or {}).get("slice"))


def slice_message(function_id: str, run_id: str) -> Message:
    """The CONTINUE that schedules a wide parallel group's next slice (at any version)."""
    return Message(MessageKind.CONTINUE, function_id, run_id, payload={"slice": True})



def is_skip(msg: Message) -> bool:
    """Whether WAKE ``msg`` ends a sleep now, by hand (the dev server's "skip")."""
    return bool((msg.payload or {}).get("skip"))


def skip_message(function_id: str, run_id: str, key: str) -> Message:
    """The WAKE that ends sleeping step ``key`` now; asking twice wakes it once (one id)."""
    return Message(MessageKind.WAKE, function_id, run_id, id=f"skip-{run_id}-{key}", key=key,
                   payload={"skip": True})



@dataclass(frozen=True)
class FlushPayload:
    """A FLUSH's payload: the debounce or batch window (gate) and the round of its timer."""

    scope: str
    key: str
    round: int

    def to_json(self) -> dict[str, Any]:
        """The payload as queued."""
        return {"scope": self.scope, "key": self.key, "round": self.round}

    @classmethod
    def of(cls, msg: Message) -> FlushPayload:
        """The payload of FLUSH ``msg``."""
        raw = msg.payload or {}
        return cls(_field(raw, msg, "scope", (str,), "a gate scope (a string)", required=True),
                   _field(raw, msg, "key", (str,), "a gate key (a string)", required=True),
                   _field(raw, msg, "round", (int,), "a round (an integer)", required=True))


def poll_round(msg: Message) -> int:
    """How many times ``msg`` has polled for a concurrency slot (0: it has not waited)."""
    return int((msg.payload or {}).get("poll") or 0)


def with_poll(msg: Message, poll: int, due: float) -> Message:
    """``msg`` re-sent to poll for a concurrency slot again (round ``poll``), due at ``due``."""
    return replace(msg, payload={**(msg.payload or {}), "poll": poll}, due=due)


def as_backstop(msg: Message) -> Message:
    """``msg`` as a waiter's backstop timer: it asks again only if its place is still there.

    The place goes when a wake-up served it (the woken message took the slot, or its run
    ended), and then the backstop has nothing to do: running on would perform the step a
    second time beside the woken invocation.
    """
    return replace(msg, payload={**(msg.payload or {}), "backstop": True})


def is_backstop(msg: Message) -> bool:
    """Whether ``msg`` is a waiter's backstop timer (:func:`as_backstop`)."""
    return bool((msg.payload or {}).get("backstop"))


def without_backstop(msg: Message) -> Message:
    """``msg`` as the work itself, not its backstop timer."""
    if not is_backstop(msg):
        return msg
    return replace(msg, payload={k: v for k, v in (msg.payload or {}).items()
                                 if k != "backstop"} or None)


@dataclass(frozen=True)
class Deferral:
    """How often a message was sent again instead of failing (its payload's ``deferred``).

    Attributes:
        pushbacks: Deliveries refused for now (throttled, conflicted): never counted.
        failures: Deliveries that raised otherwise: counted towards giving up.
        since: When the first of its pushbacks happened (epoch seconds).
    """

    pushbacks: int = 0
    failures: int = 0
    since: float | None = None

    @classmethod
    def of(cls, msg: Message) -> Deferral:
        """``msg``'s counts (all zero for a message never deferred)."""
        return cls.from_json((msg.payload or {}).get("deferred"))

    @classmethod
    def from_json(cls, raw: Any) -> Deferral:
        """Counts as :meth:`to_json` wrote them (all zero for anything else)."""
        if not isinstance(raw, dict):
            return cls()
        since = raw.get("since")
        return cls(int(raw.get("pushbacks") or 0), int(raw.get("failures") or 0),
                   float(since) if isinstance(since, (int, float)) else None)

    def to_json(self) -> dict[str, float]:
        """The counts as a message payload (or a router record) carries them."""
        raw: dict[str, float] = {"pushbacks": self.pushbacks, "failures": self.failures}
        if self.since is not None:
            raw["since"] = self.since
        return raw


def deferred(msg: Message, counts: Deferral, due: float) -> Message:
    """``msg`` sent again at ``due`` with ``counts``; its next delivery is a redelivery.

    Not a returned one (:func:`as_returned`): the delivery that sends it came back (it
    raised), so a delivery mark it left is no death, and must not be charged as one.
    """
    payload = {k: v for k, v in (msg.payload or {}).items() if k != "returned"}
    return replace(msg, payload={**payload, "deferred": counts.to_json()}, due=due)


def is_deferred(msg: Message) -> bool:
    """Whether ``msg`` is a copy sent again after a delivery that failed or was pushed back."""
    return isinstance((msg.payload or {}).get("deferred"), dict)


def as_returned(msg: Message) -> Message:
    """``msg`` as the queue delivered it again: an earlier delivery never came back.

    That delivery died (a Lambda timeout, out of memory), or Lambda was throttled and never
    ran it; which of the two, the delivery mark tells (``RunStore.mark_delivery``).
    """
    return replace(msg, payload={**(msg.payload or {}), "returned": True})


def is_returned(msg: Message) -> bool:
    """Whether the queue delivered ``msg`` again (:func:`as_returned`)."""
    return bool((msg.payload or {}).get("returned"))


#: The reader of each kind's payload (the other kinds carry only the keys below).
_PAYLOADS: dict[MessageKind, Callable[[Message], object]] = {
    MessageKind.START: StartPayload.of,
    MessageKind.MATCH: MatchPayload.of,
    MessageKind.CANCEL: CancelPayload.of,
    MessageKind.RESOLVE: ResolvePayload.of,
    MessageKind.FLUSH: FlushPayload.of,
}


def checked(msg: Message) -> Message:
    """``msg``, once its payload reads as its kind's: how a worker takes a message it receives.

    Reads the kind's payload and the keys any message may carry (its polls, its deferral
    counts), so a message stepkit never wrote is refused as it arrives, with what is wrong,
    instead of failing wherever a handler first reads the field.

    Raises:
        MalformedMessageError: Naming the kind, the field and what it must be.
    """
    read = _PAYLOADS.get(msg.kind)
    if read is not None:
        read(msg)
    raw = msg.payload or {}
    _field(raw, msg, "poll", (int,), "a number of polls (an integer)")
    counts = _field(raw, msg, "deferred", (dict,), "counts {pushbacks, failures, since}")
    if counts is not None:
        within = f"{_IN}deferred."
        for name in ("pushbacks", "failures"):
            _field(counts, msg, name, (int,), "a count (an integer)", within=within)
        _field(counts, msg, "since", (int, float), "a time in epoch seconds", within=within)
    return msg
