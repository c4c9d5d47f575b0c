"""Shared run orchestration: messages and events in, engine decisions out as atomic commits.

Backends supply the I/O (:mod:`runtime.orchestration.protocols`); the orchestration holds every rule
about how a decision becomes state, so the local and AWS backends behave the same. This
module is the facade: it builds the parts, each one idea, over one :class:`Ports`:

==================  ===================================================================
part                what it does
==================  ===================================================================
``intake``          validate and publish events; route each to starts and waiters
``matching``        match an event to waiters, now or looking back over the timeline
``dispatch``        delivery rules, then one handler per message kind (its table)
``delivery``        redeliveries re-send their own commit's outbox; last deliveries
``starting``        START and FLUSH: create the run through flow control, begin it
``gates``           flow control at a run's start: idempotency, rate limit, singleton, throttle
``slots``           concurrency slots a step holds while it runs, and their line
``windows``         debounce and batch windows gathering events until their run starts
``replaying``       CONTINUE and BRANCH: replay with concurrency slots, commit, chains
``resolving``       WAKE, MATCH, RESOLVE: end a pending step through its kind's module
``finishing``       cancel, the finish timeout (TIMEOUT), giving up on a last delivery
``pausing``         a paused function's messages held (sent again later) until it resumes
``manual``          by hand: cancel, rerun, invoke, fire a cron, skip a sleep
==================  ===================================================================

Idempotency rests on these rules (ARCHITECTURE.md explains each):
- every change is one :class:`~runtime.records.Commit` conditioned on the run's version and
  the touched step's prior state, so a duplicate or late message cannot apply twice;
- every commit is made by a queue message (events and API cancels enqueue MATCH and CANCEL
  messages rather than committing), so a crash anywhere is followed by a redelivery;
- only a CONTINUE carrying the run's current version may advance the main line;
- every commit keeps its own outbox in the commit log, under the id of its message;
- a message that finds its work already done does nothing, unless it is a *redelivery* (the
  queue's receive count is above one: its earlier delivery failed or crashed). A redelivery
  re-sends the outbox of its own commit, so a send lost to a crash is always repeated, and a
  duplicate copy (which made no commit) never multiplies.
- a commit that keeps losing races raises (:class:`CommitContentionError`): the message is
  redelivered instead of being dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.app import App, FunctionDef
from runtime.engine import Limits
from runtime.events import Event
from runtime.orchestration.delivery import Delivery
from runtime.orchestration.dispatch import Dispatcher
from runtime.orchestration.finishing import Finisher
from runtime.orchestration.gates import FlowGates
from runtime.orchestration.intake import (
    EVENT_DEDUP_SECONDS,
    LOOKBACK_SECONDS,
    Intake,
    cron_message,
    start_message,
    starts,
)
from runtime.orchestration.manual import ManualControl, invoke_message, rerun_message
from runtime.orchestration.pausing import PAUSE_CACHE_SECONDS, Pauses
from runtime.orchestration.ports import CommitContentionError, Ports
from runtime.orchestration.protocols import Bus, Clock, Metrics, NoMetrics, Queue, RunQuery, Store
from runtime.orchestration.pushback import Backoff, Deferrer
from runtime.orchestration.replaying import Replayer, chained
from runtime.orchestration.resolving import Resolver
from runtime.orchestration.slots import Slots
from runtime.orchestration.starting import Starter
from runtime.records import Message, RunRecord

__all__ = [
    "EVENT_DEDUP_SECONDS",
    "LOOKBACK_SECONDS",
    "CommitContentionError",
    "Orchestrator",
    "chained",
    "invoke_message",
    "rerun_message",
]
_log = logging.getLogger("stepkit")


class Orchestrator:
    """Handles queue messages and incoming events for one app.

    Args:
        app: The registered functions.
        store: Run state.
        queue: Function queues.
        bus: The event bus.
        clock: Time source.
        limits: Per-run limits.
        logger: Where run and step logs go.
        metrics: Told of every run started and finished and every step ended or retried,
            once its commit landed; nothing by default.
        backoff: When a delivery that failed or was pushed back comes again.
        pause_cache: How long a worker trusts a function's pause it read (seconds): a
            pause or a resume takes effect within it.
    """

    def __init__(
        self,
        app: App,
        store: Store,
        queue: Queue,
        bus: Bus,
        clock: Clock,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen
        logger: logging.Logger | None = None,
        metrics: Metrics | None = None,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen
        pause_cache: float = PAUSE_CACHE_SECONDS,
    ) -> None:
        self.ports = Ports(app, store, queue, bus, clock, metrics or NoMetrics(), limits,
                           logger or _log)
        p = self.ports
        self.gates = FlowGates(self)
        self.finishing = Finisher(p)
        self.intake = Intake(p)
        self.slots = Slots(self)
        self.pauses = Pauses(p, pause_cache)
        self.replaying = Replayer(p, self.finishing, self.slots, self.pauses.is_paused)
        self.resolving = Resolver(p)
        self.delivery = Delivery(p, self.finishing)
        self.starting = Starter(p, self, self.gates, self.replaying, self.delivery)
        self.dispatch = Dispatcher(p, self.starting, self.replaying, self.resolving,
                                   self.finishing, self.delivery, self.pauses)
        self.manual = ManualControl(p, self.finishing)
        self.deferrer = Deferrer(p, backoff)

    # The ports, read and replaced through the facade (chaos mode and tests wrap them).

    @property
    def app(self) -> App:
        """The registered functions."""
        return self.ports.app

    @property
    def store(self) -> Store:
        """Run state."""
        return self.ports.store

    @store.setter
    def store(self, store: Store) -> None:
        self.ports.store = store

    @property
    def queue(self) -> Queue:
        """Function queues."""
        return self.ports.queue

    @queue.setter
    def queue(self, queue: Queue) -> None:
        self.ports.queue = queue

    @property
    def bus(self) -> Bus:
        """The event bus."""
        return self.ports.bus

    @bus.setter
    def bus(self, bus: Bus) -> None:
        self.ports.bus = bus

    @property
    def clock(self) -> Clock:
        """Time source."""
        return self.ports.clock

    @property
    def metrics(self) -> Metrics:
        """Told of runs and steps as their commits land."""
        return self.ports.metrics

    @metrics.setter
    def metrics(self, metrics: Metrics) -> None:
        self.ports.metrics = metrics

    # Events in.

    def send(
        self,
        events: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event],
        *,
        allow_system: bool = False,
    ) -> list[str]:
        """Validate and publish events (all or none); return their ids."""
        return self.intake.send(events, allow_system=allow_system)

    def route_event(self, event: dict[str, Any], *, start_runs: bool = True) -> None:
        """Handle one published event (see :meth:`Intake.route_event`)."""
        self.intake.route_event(event, start_runs=start_runs)

    def triggered(self, event: dict[str, Any]) -> list[FunctionDef]:
        """Functions that ``event`` starts."""
        return self.intake.triggered(event)

    def match_messages(self, event: dict[str, Any]) -> list[Message]:
        """One MATCH or CANCEL message per live waiter ``event`` matches."""
        return self.intake.match_messages(event)

    starts = staticmethod(starts)
    start_message = staticmethod(start_message)
    cron_message = staticmethod(cron_message)

    def fire_cron(self, fn: FunctionDef, cron: str, at: float) -> None:
        """Start ``fn`` for its cron schedule's fire time ``at`` (idempotent per fire time)."""
        self.ports.queue.send([cron_message(fn, cron, at)])

    # Queue messages.

    def handle(
        self, msg: Message, *, receive_count: int = 1, max_receives: int | None = None
    ) -> None:
        """Perform one queue message (see :meth:`Dispatcher.handle`).

        A delivery that raised is sent again later (pushback apart from failure, see
        :mod:`runtime.orchestration.pushback`); only if that cannot be done does it raise,
        and the queue delivers the message again itself.
        """
        try:
            self.dispatch.handle(msg, receive_count=receive_count, max_receives=max_receives)
        except Exception as exc:
            if not self.deferrer.defer(msg, exc, max_receives):
                raise

    # By hand.

    def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a running run now; whether it was running."""
        return self.manual.cancel(run_id, reason)

    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Start a new run with the same events (a fork from ``from_step``); its id."""
        return self.manual.rerun(run_id, from_step, new_id=new_id)

    def fire_cron_now(self, function_id: str) -> str:
        """Fire a function's cron trigger now, by hand; the run's id."""
        return self.manual.fire_cron_now(function_id)

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now; whether there was one to end."""
        return self.manual.skip_sleep(run_id, key)

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run of a function by hand, with ``data``; return its id."""
        return self.manual.start_by_hand(function_id, data)

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs, newest first."""
        return self.manual.list_runs(query)
