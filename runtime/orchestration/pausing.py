"""Paused functions: no run starts and no step runs, and nothing sent to them is lost.

A pause is one gate per function (scope :data:`PAUSE_SCOPE`, key the function id; on AWS
the item ``GATE#pause`` / the id), written by the control plane (:func:`pause`,
:func:`resume`) and read by every worker through :class:`Pauses`, which keeps what it read
for :data:`PAUSE_CACHE_SECONDS`: a warm worker reads it once per function per that time,
not once per message, and a pause (or a resume) takes effect within it.

While a function is paused the dispatcher holds every message that would run its code
(:data:`HELD_KINDS`: START, FLUSH, CONTINUE, BRANCH) with :class:`Holder`: the message is
sent again due in :data:`PAUSED_RETRY`, counted neither as a failure nor as a pushback, as
often as the pause lasts. Messages that only record what happened (a sleep's WAKE, a wait's
MATCH or timeout, a child's RESOLVE, a CANCEL) go on: their commits send the run's next
CONTINUE, which is then held. Cron fires are skipped while paused, as Inngest does: a
schedule's missed fires are not caught up on resume (a minutely cron paused for a day would
otherwise start 1,440 runs at once).

Held copies never multiply under duplicate delivery: each round of a held message claims a
gate of its own (:mod:`runtime.orchestration.rounds`, ``paused:<message id>`` /
``<pause epoch>/<round>``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from runtime.events import SCHEDULED_TIMER
from runtime.messages import StartPayload, is_deferred
from runtime.orchestration.ports import Ports
from runtime.orchestration.protocols import Clock, GateStore
from runtime.orchestration.rounds import round_claim
from runtime.records import Gate, GateWrite, Message, MessageKind

#: The gate scope of pauses: one gate per function id.
PAUSE_SCOPE = "pause"
#: How long a worker trusts the pause it read (seconds): the staleness bound of a pause.
PAUSE_CACHE_SECONDS = 5.0
#: How often a held message comes back to look again: the most a resume waits for it.
PAUSED_RETRY = 60.0
#: The kinds of message that run a function's code, held while it is paused.
HELD_KINDS = frozenset({MessageKind.START, MessageKind.FLUSH, MessageKind.CONTINUE,
                        MessageKind.BRANCH})
_ROUND = "paused"  # the payload key counting a held message's rounds
_TRIES = 16


@dataclass(frozen=True)
class Paused:
    """A function's pause.

    Attributes:
        since: When it was paused (epoch seconds).
        reason: Why, as the person who paused it said (``None``: not said).
        epoch: The pause gate's version: tells one pause from the next.
    """

    since: float
    reason: str | None = None
    epoch: int = 0

    @classmethod
    def of(cls, gate: Gate) -> Paused | None:
        """The pause a gate holds, if it holds one (a resumed gate holds none)."""
        state = gate.state or {}
        if not state.get("paused"):
            return None
        reason = state.get("reason")
        return cls(float(state["since"]), str(reason) if reason else None, gate.version)



def paused(store: GateStore, function_id: str) -> Paused | None:
    """``function_id``'s pause, read consistently (``None``: it runs)."""
    return Paused.of(store.gate(PAUSE_SCOPE, function_id))


def pause(store: GateStore, clock: Clock, function_id: str,
          reason: str | None = None) -> Paused:
    """Pause ``function_id`` (idempotent: a paused one keeps its ``since``, takes ``reason``).

    Raises:
        RuntimeError: The gate kept changing under us.
    """
    for _ in range(_TRIES):
        gate = store.gate(PAUSE_SCOPE, function_id)
        was = Paused.of(gate)
        since = was.since if was is not None else clock.now()
        state = {"paused": True, "since": since, "reason": reason or None}
        if was is not None and was.reason == state["reason"]:
            return was
        if store.put_gate(GateWrite(PAUSE_SCOPE, function_id, state, gate.version)):
            return Paused(since, reason or None, gate.version + 1)
    raise RuntimeError(f"pausing '{function_id}': its pause gate kept changing")


def resume(store: GateStore, clock: Clock, function_id: str) -> bool:
    """Resume ``function_id``; whether it was paused.

    Raises:
        RuntimeError: The gate kept changing under us.
    """
    for _ in range(_TRIES):
        gate = store.gate(PAUSE_SCOPE, function_id)
        if Paused.of(gate) is None:
            return False
        state = {"paused": False, "resumed_at": clock.now()}
        if store.put_gate(GateWrite(PAUSE_SCOPE, function_id, state, gate.version)):
            return True
    raise RuntimeError(f"resuming '{function_id}': its pause gate kept changing")


class Pauses:
    """The pauses a worker reads, each kept :data:`PAUSE_CACHE_SECONDS` (of its clock).

    Args:
        ports: The store and clock.
        ttl: How long a read is trusted; 0 reads on every ask.
    """

    def __init__(self, ports: Ports, ttl: float = PAUSE_CACHE_SECONDS) -> None:
        self.ports = ports
        self.ttl = ttl
        self._read: dict[str, tuple[float, Paused | None]] = {}
        self._lock = threading.Lock()

    def of(self, function_id: str) -> Paused | None:
        """``function_id``'s pause as of at most :attr:`ttl` ago."""
        now = self.ports.clock.now()
        with self._lock:
            cached = self._read.get(function_id)
        if cached is not None and now < cached[0] + self.ttl:
            return cached[1]
        found = paused(self.ports.store, function_id)
        with self._lock:
            self._read[function_id] = (now, found)
        return found

    def is_paused(self, function_id: str) -> bool:
        """Whether ``function_id`` is paused (as of at most :attr:`ttl` ago)."""
        return self.of(function_id) is not None


def is_cron_fire(msg: Message) -> bool:
    """Whether ``msg`` is the START of a cron fire."""
    if msg.kind is not MessageKind.START:
        return False
    start = StartPayload.of(msg)
    return start.direct and start.events[0].get("name") == SCHEDULED_TIMER


class Holder:
    """Holds the messages of paused functions (see the module doc)."""

    def __init__(self, ports: Ports, pauses: Pauses) -> None:
        self.ports = ports
        self.pauses = pauses

    def holds(self, msg: Message, now: float, *, redelivered: bool, died: bool) -> bool:
        """Whether ``msg`` is held (or skipped) because its function is paused.

        Args:
            msg: The message.
            now: The time.
            redelivered: The delivery counts as a redelivery: the copy held keeps that, so
                that after the resume it re-sends what its commit had to send.
            died: The delivery's earlier one died or failed (a queue redelivery or a
                deferred copy): it may send its round again after a lost claim.
        """
        if msg.kind not in HELD_KINDS:
            return False
        pause = self.pauses.of(msg.function_id)
        if pause is None:
            return False
        what = f"{msg.kind.value} message {msg.id} of paused function '{msg.function_id}'"
        if is_cron_fire(msg):
            self.ports.log.info("%s skipped: cron fires are skipped while paused", what)
            return True
        rounds = int((msg.payload or {}).get(_ROUND, 0))
        claim = round_claim(self.ports.store, "paused", msg, f"{pause.epoch}/{rounds}", now)
        if not claim.first(died=died):
            self.ports.log.info("%s: a duplicate of round %d, dropped", what, rounds)
            return True
        self.ports.send([held(msg, rounds + 1, now + PAUSED_RETRY, redelivered=redelivered)])
        claim.sent(died=died)
        if rounds == 0:
            self.ports.log.warning("%s held: sent again every %.0fs until it is resumed",
                                   what, PAUSED_RETRY)
        return True


def held(msg: Message, rounds: int, due: float, *, redelivered: bool) -> Message:
    """The copy of ``msg`` that comes back at ``due``, its ``rounds``-th.

    Not a deferred copy (its counts go: a pause is no failure, and a deferred copy may send
    its round again); one that counted as a redelivery stays one (``resend``).
    """
    payload = {k: v for k, v in (msg.payload or {}).items() if k != "deferred"}
    if redelivered:
        payload["resend"] = True
    return replace(msg, due=due, payload={**payload, _ROUND: rounds})


def died_before(msg: Message, receive_count: int) -> bool:
    """Whether an earlier delivery of ``msg`` died or failed (so it may send its round)."""
    return receive_count > 1 or is_deferred(msg)
