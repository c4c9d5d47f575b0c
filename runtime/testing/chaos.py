"""Chaos mode: run the behaviour suite the way production delivers work, not the easy way.

:class:`Chaos` describes the faults; the backends' test drivers apply them
(``LocalBackend.enable_chaos`` and ``AwsBackend.enable_chaos``):

- several workers handle messages concurrently, each taking whatever is visible (shuffled);
- a share of sends is delivered twice (queue messages and published events);
- a share of successful commits is followed by a crash (:class:`SimulatedCrash`) before the
  commit's outbox is sent: the message stays leased and is redelivered, as after a Lambda
  timeout or a killed process (the driver makes it visible again at once instead of waiting
  out the visibility timeout on the fake clock);
- a share of store, queue and bus calls fails with an injected error, half of them *after*
  the call took effect (a write that landed but reported failure).

Faults are injected only in worker threads: the test's own calls (send, inspect, cancel) are
left alone so assertions read the truth.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from runtime.errors import StepkitError
from runtime.orchestration.pushback import Backoff
from runtime.records import Commit, Message, TimerCancel

T = TypeVar("T")


@dataclass(frozen=True)
class Chaos:
    """What chaos mode injects.

    Attributes:
        workers: Worker threads handling messages at once.
        duplicate: Share of sent messages and published events delivered twice.
        crash: Share of successful commits followed by a crash before their sends.
        errors: Share of store, queue and bus calls that fail (half after taking effect).
        seed: Seed of the fault dice (each worker thread rolls its own, derived from it).
        max_receives: Deliveries before a message is dead-lettered. Injected faults are
            independent per call, so a message may fail several deliveries in a row; the
            drivers raise the dead-letter threshold to keep the suite about correctness.
    """

    workers: int = 4
    duplicate: float = 0.2
    crash: float = 0.05
    errors: float = 0.03
    seed: int = 0
    max_receives: int = 30


class SimulatedCrash(BaseException):
    """The worker died here (a ``BaseException``: nothing in stepkit may catch it)."""


class InjectedError(StepkitError):
    """A store, queue or bus call failed on purpose."""


class Faults:
    """Rolls the dice for one :class:`Chaos` setting, per worker thread."""

    def __init__(self, chaos: Chaos) -> None:
        self.chaos = chaos
        self._local = threading.local()
        self._lock = threading.Lock()
        self._threads = 0
        self.counts: dict[str, int] = {"errors": 0, "crashes": 0, "duplicates": 0}

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inject faults in calls made by this thread inside the block."""
        with self._lock:
            self._threads += 1
            seed = self.chaos.seed * 1000 + self._threads
        self._local.rng = random.Random(seed)
        try:
            yield
        finally:
            self._local.rng = None

    def _roll(self, p: float, what: str) -> bool:
        rng: random.Random | None = getattr(self._local, "rng", None)
        if rng is None or p <= 0 or rng.random() >= p:
            return False
        with self._lock:
            self.counts[what] += 1
        return True

    def call(self, what: str, fn: Callable[..., T], *args: Any, write: bool = False,
             **kwargs: Any) -> T:
        """Call ``fn``, failing before it (or, for writes, after it landed) now and then."""
        if self._roll(self.chaos.errors / 2, "errors"):
            raise InjectedError(f"injected failure before {what}")
        result = fn(*args, **kwargs)
        if write and self._roll(self.chaos.errors / 2, "errors"):
            raise InjectedError(f"injected failure after {what} (it took effect)")
        return result

    def crash_now(self) -> None:
        """Maybe die right here."""
        if self._roll(self.chaos.crash, "crashes"):
            raise SimulatedCrash("injected crash after a commit, before its sends")

    def doubled(self, items: Sequence[T]) -> list[T]:
        """``items`` with some of them repeated (duplicate delivery)."""
        out = list(items)
        for item in items:
            if self._roll(self.chaos.duplicate, "duplicates"):
                out.append(item)
        return out


class FaultyStore:
    """A Store whose calls fail now and then, and whose commits are sometimes the last act."""

    _READS = ("load", "waiters_for", "event_seen", "events_since", "logged_event", "committed",
              "gate", "list_gates", "shard_leases", "line", "place", "window", "window_member",
              "window_seats", "list_windows")
    # create_run passes its gates through (``*args, **kwargs``); put_gate's "failed after it
    # landed" is a gate written whose writer must read it again.
    _WRITES = ("create_run", "remember_event", "log_event", "remove_waiters", "put_gate",
               "persist", "claim_slot", "free_slot", "put_place", "leave_line", "open_window",
               "take_seat", "join_window", "kill_seat", "close_window", "mark_window",
               "adopt_members", "mark_delivery")

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name in self._READS or name in self._WRITES:
            write = name in self._WRITES

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                return self.faults.call(name, attr, *args, write=write, **kwargs)

            return wrapped
        return attr

    def commit(self, run_id: str, commit: Commit) -> bool:
        """Commit; maybe fail before or after; maybe crash once it landed."""
        landed = self.faults.call("commit", self.inner.commit, run_id, commit, write=True)
        if landed:
            self.faults.crash_now()
        return bool(landed)


class FaultyQueue:
    """A Queue that sometimes fails and sometimes sends a message twice."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def send(self, messages: Sequence[Message]) -> None:
        """Send, with duplicates; maybe fail before or after."""
        if messages:
            self.faults.call("queue send", self.inner.send, self.faults.doubled(messages),
                             write=True)

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        """Delete moot timers; maybe fail before or after."""
        if timers:
            self.faults.call("queue cancel", self.inner.cancel, timers, write=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FaultyBus:
    """A Bus that sometimes fails and sometimes publishes an event twice."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish, with duplicates; maybe fail before or after."""
        if events:
            self.faults.call("publish", self.inner.publish, self.faults.doubled(events),
                             write=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrap_orchestrator(orchestrator: Any, faults: Faults) -> None:
    """Put fault injection between an orchestrator and its store, queue and bus.

    A delivery that failed comes again at once, as the drivers make a failed message
    visible again at once: chaos mode is about correctness under faults, not their delays.
    So does one that lost races. (A pushback keeps its delays: pushback mode refuses calls
    for a span of harness time, which must pass.)
    """
    orchestrator.deferrer.backoff = Backoff(contention=0.0, failure=0.0)
    orchestrator.store = FaultyStore(orchestrator.store, faults)
    orchestrator.queue = FaultyQueue(orchestrator.queue, faults)
    orchestrator.bus = FaultyBus(orchestrator.bus, faults)


class Idle:
    """Termination for concurrent workers: two protocols, one per driver.

    :meth:`busy` + :meth:`check` (local: a receive is one cheap call): done when no worker is
    inside a receive-and-handle and nothing is visible. :meth:`rest` + :meth:`wake` (AWS: a
    poll round is many slow calls, so "nobody busy" would rarely be seen).
    """

    def __init__(self, outstanding: Callable[[], int], workers: int) -> None:
        self._outstanding = outstanding
        self._workers = workers
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._resting = 0
        self._gen = 0
        self._busy = 0
        self.done = threading.Event()
        self.handled = 0

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Hold this around a receive and the handling of what it received."""
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def rest(self) -> None:
        """A worker found nothing anywhere: wait until woken, or settle that all are done.

        Resting workers do not poll, so when the last one rests no worker holds a message:
        if nothing is visible then, the work is done (messages a dead worker left leased
        wait for their visibility timeout, as after a real crash).
        """
        with self._cond:
            gen = self._gen
            self._resting += 1
            if self._resting == self._workers:
                if self._outstanding() == 0:
                    self.done.set()
                self._gen += 1
                self._resting = 0
                self._cond.notify_all()
                return
            self._cond.wait_for(lambda: self.done.is_set() or self._gen != gen, timeout=1.0)
            if self._gen == gen:
                self._resting -= 1  # timed out: look again

    def wake(self) -> None:
        """A worker handled something (and may have sent more): resting workers look again."""
        with self._cond:
            self._gen += 1
            self._resting = 0
            self._cond.notify_all()

    def check(self) -> None:
        """Called by a worker that found nothing (busy-count protocol): maybe all are done."""
        with self._lock:
            if self._busy == 0 and self._outstanding() == 0:
                self.done.set()

    def count(self, n: int = 1) -> None:
        """Count handled messages."""
        with self._lock:
            self.handled += n


def run_workers(workers: int, work: Callable[[Idle], None], idle: Idle) -> None:
    """Run ``work`` in ``workers`` threads until ``idle`` says done; re-raise a worker's error."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work(idle)
        except BaseException as exc:
            errors.append(exc)
            idle.done.set()

    threads = [threading.Thread(target=target, name=f"chaos-worker-{i}", daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class LocalChaos:
    """Chaos mode for :class:`~runtime.backends.local.LocalBackend`: the settle loop and faults.

    Args:
        backend: The backend (its orchestrator is wrapped; its own store stays clean for
            inspection).
        chaos: What to inject.
    """

    def __init__(self, backend: Any, chaos: Chaos) -> None:
        self.backend = backend
        self.chaos = chaos
        self.faults = Faults(chaos)
        wrap_orchestrator(backend.orchestrator, self.faults)
        backend.queue.shuffle = True
        backend.queue.max_receives = chaos.max_receives

    def run_until_idle(self, *, max_messages: int = 100_000) -> int:
        """Fire due crons, then let the workers handle messages until none is visible."""
        backend = self.backend
        backend.tick_crons()
        queue = backend.queue
        idle = Idle(queue.visible_count, self.chaos.workers)

        def drain(idle: Idle) -> None:
            with self.faults.active():
                while not idle.done.is_set():
                    with idle.busy():
                        batch = queue.receive(1)
                        # Each settling write leases the worker's next message, as it does
                        # in the backend's own loops: busy until the chain ends.
                        nxt = batch[0] if batch else None
                        while nxt is not None:
                            delivery, nxt = nxt, None
                            try:
                                nxt = backend._process(delivery, retry_delay=0.0,
                                                       receive_next=not idle.done.is_set())
                            except SimulatedCrash:
                                # The lease would expire on its own; on a fake clock, now.
                                queue.release(delivery, 0.0)
                            idle.count()
                            if idle.handled > max_messages:
                                raise RuntimeError(f"chaos settle handled {idle.handled} "
                                                   "messages: a run-away loop?")
                    if not batch:
                        idle.check()
                        idle.done.wait(0.002)

        def work(idle: Idle) -> None:
            try:
                drain(idle)
            finally:  # the thread ends, and its connection with it (one set per settle)
                backend.store.db.close_thread()

        run_workers(self.chaos.workers, work, idle)
        return idle.handled
