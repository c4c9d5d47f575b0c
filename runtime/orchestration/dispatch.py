"""Dispatch: one queue message to the part that does its kind of work.

The rules every delivery passes first are here: an early message hops to its due time; a
message of a function the app no longer has is kept until it is back (:mod:`blocking`); one
that would run a paused function's code is held until it is resumed (:mod:`pausing`); the
last deliveries before the dead-letter queue never strand a run (:mod:`delivery`); a
redelivery whose work is done re-sends its commit's outbox; a message whose commit is the
run's last, or for a finished run, does nothing. Then :data:`Dispatcher.table` names the
one handler of each message kind.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.app import FunctionDef
from runtime.messages import CancelPayload, Deferral, as_returned, is_deferred, resent
from runtime.orchestration.blocking import Absent
from runtime.orchestration.delivery import Delivery, mine
from runtime.orchestration.finishing import Finisher
from runtime.orchestration.pausing import Holder, Pauses, died_before
from runtime.orchestration.ports import Ports
from runtime.orchestration.replaying import Replayer
from runtime.orchestration.resolving import Resolver
from runtime.orchestration.starting import Starter
from runtime.records import Message, MessageKind, RunState
from runtime.steps.base import DUE_SLACK

#: A message kind's handler: (function, run state, message, now, redelivered) -> whether it
#: did the message's work.
Handler = Callable[[FunctionDef, RunState, Message, float, bool], bool]


#: Kinds that only record what happened to a run (no code of its function runs): applied
#: even while a deploy has removed its function.
_RECORDS_ONLY = frozenset({MessageKind.CANCEL, MessageKind.TIMEOUT})


class Dispatcher:
    """Performs queue messages: delivery rules first, then the handler of the message's kind."""

    def __init__(self, ports: Ports, starter: Starter, replayer: Replayer, resolver: Resolver,
                 finisher: Finisher, delivery: Delivery, pauses: Pauses | None = None) -> None:
        self.ports = ports
        self.replayer = replayer
        self.starter = starter
        self.delivery = delivery
        self.finisher = finisher
        self.absent = Absent(ports)
        self.holder = Holder(ports, pauses or Pauses(ports))
        #: The handler of each kind of message about an existing, unfinished run (START
        #: and FLUSH create runs and are handled before the run is read).
        self.table: dict[MessageKind, Handler] = {
            MessageKind.CONTINUE: replayer.on_continue,
            MessageKind.BRANCH: replayer.on_branch,
            MessageKind.WAKE: lambda fn, state, msg, now, _: resolver.on_wake(state, msg, now),
            MessageKind.MATCH: lambda fn, state, msg, now, _: resolver.on_match(state, msg),
            MessageKind.RESOLVE: lambda fn, state, msg, now, _: resolver.on_child_finished(
                state, msg),
            MessageKind.TIMEOUT: lambda fn, state, msg, now, _: finisher.on_timeout(
                fn, state, msg, now),
            MessageKind.CANCEL: lambda fn, state, msg, now, _: finisher.cancel(
                state.run.run_id, CancelPayload.of(msg).reason, msg.id),
        }

    def handle(self, msg: Message, *, receive_count: int = 1,
               max_receives: int | None = None) -> None:
        """Perform one queue message. Safe to call again with the same message.

        Args:
            msg: The message.
            receive_count: Which delivery of this queue entry this is (SQS's
                ``ApproximateReceiveCount``). Above one, the earlier delivery failed or
                crashed, possibly after its commit: work already done is re-sent, not redone.
            max_receives: The queue's deliveries before dead-lettering. On the last one, a
                message that would run user code fails its run instead
                (:meth:`Finisher.give_up`).
        """
        p = self.ports
        now = p.clock.now()
        if msg.due is not None and msg.due > now + DUE_SLACK:
            p.hop(msg, msg.due)  # delivered early (a delay queue's cap): hop again
            return
        fn = p.app.find(msg.function_id)
        if receive_count > 1:
            # The queue delivers a message again only when a delivery never came back (a
            # failure or a pushback is sent again as a new message, runtime.orchestration.
            # pushback): its worker died, or Lambda was throttled and never ran it. The
            # replay tells which, from the mark a delivery leaves before it runs user code.
            msg = as_returned(msg)
        redelivered = receive_count > 1 or resent(msg) or is_deferred(msg)
        if fn is None and msg.kind in _RECORDS_ONLY:  # needs no code of the function's
            self._finish_absent(msg, now)
            return
        if fn is None:  # a deploy removed it: keep the message until it is back
            self.absent.on_message(msg, now, redelivered=redelivered)
            return
        if self.holder.holds(msg, now, redelivered=redelivered,
                             died=died_before(msg, receive_count)):
            return  # its function is paused: kept until it is resumed
        # Deliveries that died or failed (pushbacks never count). The last two before the
        # dead-letter queue: the first of them gives up, the second is there in case giving
        # up itself failed.
        failed = receive_count - 1 + Deferral.of(msg).failures
        last = max_receives is not None and failed >= max(max_receives - 2, 1)
        if last and msg.kind is not MessageKind.START:
            self.delivery.last_delivery(
                fn, msg, receive_count, lambda: self.handle(msg, receive_count=receive_count))
            return
        if msg.kind is MessageKind.FLUSH:
            self.starter.on_flush(fn, msg, now, redelivered, last)
            return
        if msg.kind is MessageKind.START:
            self._start(fn, msg, now, redelivered, last, receive_count)
            return
        state = p.store.load(msg.run_id)
        if state is None:
            p.log.warning("message %s for unknown run %s dropped", msg.kind, msg.run_id)
            return
        if redelivered and self.delivery.committed(state, msg):
            self.delivery.resend(fn, msg, state, hard=last)  # a message commits once
            # A place in line it left (it waited, was woken, then failed) would hold up the
            # line until it lapses: give its turn on.
            self.replayer.slots.forget(fn, state, msg)
            return
        if mine(state, msg) or state.run.status.finished:
            # Its work is done (or moot): a message that waited in line gives its turn on
            # (a copy of it may have put its place back while the work ran).
            self.replayer.slots.forget(fn, state, msg)
            return
        self.table[msg.kind](fn, state, msg, now, redelivered)

    def _finish_absent(self, msg: Message, now: float) -> None:
        """A TIMEOUT or CANCEL of a run whose function a deploy removed: applied, not kept.

        Neither runs the function's code, so a run that is Blocked on its absent function
        is still cancelled, or timed out at its deadline. Each commits once (its commit is
        named after the message), so a duplicate changes nothing.
        """
        state = self.ports.store.load(msg.run_id)
        if state is None or state.run.status.finished:
            return
        if msg.kind is MessageKind.TIMEOUT:
            self.finisher.on_timeout(None, state, msg, now)
        else:
            self.finisher.cancel(state.run.run_id, CancelPayload.of(msg).reason, msg.id)

    def _start(self, fn: FunctionDef, msg: Message, now: float, redelivered: bool, last: bool,
               receive_count: int) -> None:
        """START, also on its last deliveries.

        A death in its first step is that step's failed attempt, and its other receives may
        be Lambda's throttling: no run is failed for a start that only never got to run.
        """
        self.starter.on_start(fn, msg, now, redelivered, last)
