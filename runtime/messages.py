"""Typed payloads of queue messages, with the same JSON on the wire.

A :class:`~runtime.records.Message` carries its payload as the JSON object the queue holds;
these classes are the only code that reads or builds one, so each key is named once.
Every class renders only the keys it sets, as the payloads were written before they had
types, so messages already in queues read the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from runtime.records import Message, MessageKind, ParentRef, RerunOf


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
        """The payload of START ``msg``."""
        raw = msg.payload or {}
        parent = raw.get("parent")
        # "fork": a START queued before reruns recorded their original.
        origin = raw.get("rerun_of") or raw.get("fork")
        return cls(
            events=tuple(raw["events"]),
            parent=ParentRef(**parent) if parent else None,
            direct=bool(raw.get("direct") or parent),
            rerun=bool(raw.get("rerun")),
            rerun_of=RerunOf(str(origin["run_id"]), origin.get("step")) if origin else None,
        )

    def message(self, function_id: str, run_id: str) -> Message:
        """The START message of run ``run_id`` (its id derived from the run's, so a copy is one)."""
        return Message(MessageKind.START, function_id, run_id, id=f"start-{run_id}",
                       payload=self.to_json())


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
        """The payload of MATCH ``msg``."""
        raw = msg.payload or {}
        ref = raw.get("ref")
        return cls(event=raw.get("event"), ref=EventRef(**ref) if ref else None)


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
        return cls(str(raw.get("reason") or "cancelled"), bool(raw.get("resend")))


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
        return cls(str((msg.payload or {}).get("child_run_id", "")))


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
        return cls(str(raw["scope"]), str(raw["key"]), int(raw["round"]))


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
