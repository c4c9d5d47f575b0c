"""The ports every part of the orchestration shares, and the few rules about using them.

One :class:`Ports` per orchestrator: the app, the backend's store, queue, bus and clock, the
metrics sink, the per-run limits and the logger. Parts read the ports through it on every
call, so a test or chaos mode may wrap one (``ports.store = FaultyStore(ports.store)``).
The rules written once here: a commit reports its metrics once it landed (:meth:`commit`),
a losing commit is retried a bounded number of times and then raised, never dropped
(:meth:`retrying`), an early message hops to its due time (:meth:`hop`), and a send on a
last delivery is retried in place (:meth:`send_hard`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtime.app import App
from runtime.engine import Limits
from runtime.errors import StepkitError
from runtime.orchestration.metrics import observe_commit, observe_created
from runtime.orchestration.protocols import Bus, Clock, Metrics, Queue, Store
from runtime.records import (
    Commit,
    EventOut,
    Message,
    Outgoing,
    RunRecord,
    StepRecord,
    TimerCancel,
    Waiter,
)

#: Tries of one commit that keeps losing races, within one delivery.
COMMIT_TRIES = 64
#: Tries of an idempotent action on a message's last delivery (no redelivery follows).
LAST_SEND_TRIES = 8


class CommitContentionError(StepkitError):
    """A commit lost the race for its run more times than it may retry in one delivery.

    Raised so that the message is redelivered (and retried later) instead of dropped.
    """


@dataclass
class Ports:
    """What the orchestration reads and writes through (each may be wrapped in place)."""

    app: App
    store: Store
    queue: Queue
    bus: Bus
    clock: Clock
    metrics: Metrics
    limits: Limits
    log: logging.Logger
    #: When the current invocation must be done (``time.monotonic()``), if it has a limit (a
    #: Lambda's timeout, shared by every record of its batch): a checkpoint chain ends in
    #: time for it.
    deadline: float | None = None

    def commit(self, function_id: str, run_id: str, commit: Commit) -> bool:
        """``Store.commit``, reporting to the metrics what a commit that landed did."""
        if not self.store.commit(run_id, commit):
            return False
        observe_commit(self.metrics, function_id, commit)
        return True

    def create(self, run: RunRecord, waiters: Sequence[Waiter],
               steps: Sequence[StepRecord] = ()) -> RunRecord | None:
        """``Store.create_run``, reporting a run this call created; the run, if it did."""
        if not self.store.create_run(run, waiters, (), steps):
            return None
        observe_created(self.metrics, run)
        return run

    @staticmethod
    def retrying(what: str, attempt: Callable[[], bool | None]) -> bool:
        """Run ``attempt`` until it lands or has nothing to do; raise if it keeps losing.

        ``attempt`` reads the run afresh and returns ``True`` (its commit landed),
        ``False`` (nothing to do: the work is done or moot) or ``None`` (it lost a race:
        try again).

        Raises:
            CommitContentionError: It lost :data:`COMMIT_TRIES` races in a row; the message
                is redelivered later.
        """
        for _ in range(COMMIT_TRIES):
            landed = attempt()
            if landed is not None:
                return landed
        raise CommitContentionError(f"{what}: lost {COMMIT_TRIES} commit races in a row")

    def send(self, outbox: Sequence[Outgoing]) -> None:
        """Send a commit's outbox: its events to the bus, its messages to the queues.

        Timers it made moot are deleted after.
        """
        messages = [o for o in outbox if isinstance(o, Message)]
        events = [o.event for o in outbox if isinstance(o, EventOut)]
        if events:
            self.bus.publish(events)
        if messages:
            self.queue.send(messages)
        moot = [o for o in outbox if isinstance(o, TimerCancel)]
        if moot:
            # A delete refused (throttled) raises like any send: the delivery comes back and
            # its redelivery deletes them again (idempotent), so none outlives its purpose.
            self.queue.cancel(moot)

    def send_hard(self, outbox: Sequence[Outgoing]) -> None:
        """:meth:`send`, retried in place: on a message's last delivery none follows."""
        self.in_place(lambda: self.send(outbox), "sending an outbox")

    def in_place(self, action: Callable[[], object], what: str) -> None:
        """Run an idempotent ``action``, retrying here: on a last delivery none follows."""
        for attempt in range(LAST_SEND_TRIES):
            try:
                action()
                return
            except Exception:
                if attempt == LAST_SEND_TRIES - 1:
                    raise
                self.log.warning("%s failed; trying again", what)

    def hop(self, msg: Message, due: float) -> None:
        """Send ``msg`` again, due at ``due`` (a queue that cannot delay that long hops)."""
        self.queue.send([msg.with_due(due)])
