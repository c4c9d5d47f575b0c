"""The embedded backend: an app's runs, queue and event log in one SQLite file.

Used by the dev server (background worker threads on the system clock) and by tests
(:meth:`LocalBackend.run_until_idle` on a fake clock, everything in the calling thread).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from runtime.app import App, FunctionDef
from runtime.backends.local.database import Database
from runtime.backends.local.queue import Delivery, SqliteQueue
from runtime.backends.local.store import SqliteStore
from runtime.cron import CronSchedule
from runtime.dlq import DeadLetter
from runtime.engine import Limits
from runtime.events import Event
from runtime.orchestration.clock import SystemClock
from runtime.orchestration.orchestrator import Orchestrator
from runtime.orchestration.protocols import Clock, RunQuery
from runtime.records import Message, RunRecord, RunState

if TYPE_CHECKING:
    from runtime.control.local import InProcessControl

_CRON_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cron_state (
        function_id TEXT NOT NULL,
        spec TEXT NOT NULL,
        next_fire REAL NOT NULL,
        PRIMARY KEY (function_id, spec))""",
)
_IDLE_POLL = 0.05  # seconds a worker sleeps when the queue is empty
_CRON_POLL = 1.0  # cron schedules have minute resolution; a second is plenty
_MAX_CRON_CATCHUP = 10_000  # fire times per schedule per tick, against a huge clock jump
_MAX_RETRY_DELAY = 60.0


class _InProcessBus:
    """Publishes events by routing them straight to the orchestrator (no broker locally)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.orchestrator: Orchestrator | None = None

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Route each event: dedup, start triggered runs, resolve waiters.

        Each routing is one write transaction (it runs no user code), unless it is part of
        a worker's handling of a message, whose unit its writes then follow.
        """
        if self.orchestrator is None:
            raise RuntimeError("bus used before its orchestrator was attached")
        for event in events:
            if self.db.in_unit():
                self.orchestrator.route_event(event)
                continue
            with self.db.unit(eager=True):
                self.orchestrator.route_event(event)


class LocalBackend:
    """Runs an app on SQLite: store, queue and an in-process event bus.

    Args:
        app: The registered functions.
        path: The SQLite file (created if missing); several processes may share it.
        clock: Time source; the system clock by default, a FakeClock in tests.
        workers: Worker threads started by :meth:`start`.
        visibility_timeout: Seconds before a message a worker took but never finished is
            delivered again. Background workers renew the leases of the messages in hand
            every third of it, so a long step keeps its message while a crashed process's
            messages are back within this many seconds.
        max_receives: Deliveries of a message before it is dead-lettered.
        limits: Per-run limits.
        logger: Where run, step and worker logs go.
        durability: ``"normal"`` (default: survives a process crash) or ``"full"`` (also
            power loss; about 1.4x the time per step). See ``Database``.

    """

    def __init__(
        self,
        app: App,
        path: str | Path,
        *,
        clock: Clock | None = None,
        workers: int = 4,
        visibility_timeout: float = 15.0,
        max_receives: int = 10,
        limits: Limits = Limits(),  # noqa: B008 - frozen
        logger: logging.Logger | None = None,
        durability: str = "normal",
    ) -> None:
        self.app = app
        self.clock: Clock = clock or SystemClock()
        self.workers = workers
        self.log = logger or logging.getLogger("stepkit")
        self.store = SqliteStore(path, clock=self.clock, durability=durability)
        self.queue = SqliteQueue(
            self.store.db,  # one connection per thread serves both
            clock=self.clock,
            visibility_timeout=visibility_timeout,
            max_receives=max_receives,
        )
        self.store.db.ensure_schema(_CRON_SCHEMA)
        bus = _InProcessBus(self.store.db)
        self.orchestrator = Orchestrator(
            app, self.store, self.queue, bus, self.clock, limits=limits, logger=logger
        )
        bus.orchestrator = self.orchestrator
        # Cron fire times at or before this are "the past" and never fired by this backend.
        self._created = self.clock.now()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_hand: dict[int, Delivery] = {}
        self._in_hand_lock = threading.Lock()

    # -- work --------------------------------------------------------------------------------

    def send(
        self, events: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event]
    ) -> list[str]:
        """Validate and publish events (all or none); return their ids."""
        return self.orchestrator.send(events)

    def run_until_idle(self, *, max_messages: int = 100_000) -> int:
        """Fire due crons, then handle due messages in this thread until none is visible.

        A failing message is released for an immediate retry, so a poison message ends in the
        dead letters after ``max_receives`` attempts instead of stalling the loop.

        Returns:
            How many messages were handled.

        Raises:
            RuntimeError: More than ``max_messages`` were due (most likely a run-away loop).

        """
        self.tick_crons()
        handled = 0
        nxt: Delivery | None = None  # leased by the previous message's settling write
        while True:
            if handled >= max_messages:
                if self.queue.visible_count():
                    raise RuntimeError(
                        f"run_until_idle handled {handled} messages and more are still due: "
                        f"a run-away loop? (raise max_messages if this much work is expected)"
                    )
                return handled
            if nxt is None:
                batch = self.queue.receive(1)
                if not batch:
                    return handled
                nxt = batch[0]
            handled += 1
            nxt = self._process(nxt, retry_delay=0.0, receive_next=handled < max_messages)

    def _process(
        self, delivery: Delivery, *, retry_delay: float, receive_next: bool = False
    ) -> Delivery | None:
        """Handle one delivery; settle it and, if asked, lease the next message.

        A first delivery is handled in a unit of the database: once a commit lands, its
        transaction stays open, and the outbox sends, event routing, the ack of this message
        and the lease of the next join it, committed once at the end. A crash before that
        rolls all of it back and leaves this message to be delivered again, as if it had
        crashed before its commit; a failure (an exception) first commits what completed, as
        one write at a time would have, and the message is released. A redelivery writes one
        write at a time, as the commit/outbox protocol expects of a recovery: its commit
        lands even if it then crashes, so only what follows is redone; in particular the
        commit failing a run on a last delivery stays landed.

        Returns:
            The next delivery, leased in the same write as this one's ack, or ``None``.
        """
        msg = delivery.message
        try:
            with self.store.db.unit() if delivery.receipt == 1 else nullcontext():
                self.orchestrator.handle(
                    msg, receive_count=delivery.receipt, max_receives=self.queue.max_receives
                )
                return self.queue.settle(delivery, receive_next=receive_next)
        except Exception as exc:
            # Errors in user code are recorded by the engine; reaching here means the
            # platform failed (storage, a bug), which a later retry may get past.
            self.log.exception(
                "message %s (%s of run %s) failed on receive %d",
                msg.id, msg.kind.value, msg.run_id, delivery.receipt,
            )
            # An error may say when to try again (Lambda throttled it: its visibility timeout).
            delay = float(getattr(exc, "retry_after", retry_delay))
            if self.queue.release(delivery, delay, error=f"{type(exc).__name__}: {exc}"):
                self.log.error(
                    "message %s (%s of run %s) dead-lettered after %d receives",
                    msg.id, msg.kind.value, msg.run_id, delivery.receipt,
                )
            return None

    def next_due(self) -> float | None:
        """The earliest time after now at which a queued message or a cron fire is due."""
        now = self.clock.now()
        found = self.queue.next_visible(after=now)
        for fn in self.app:
            for cron in fn.crons:
                fire = _next(cron, max(now, self._created))
                found = fire if found is None else min(found, fire)
        return found

    # -- crons -------------------------------------------------------------------------------

    def tick_crons(self) -> int:
        """Fire every cron time due since the last tick; return how many fired.

        The next fire time per (function, schedule) is kept in SQLite, so a restarted backend
        neither fires a time twice nor fires the times it missed while it was down.
        """
        now = self.clock.now()
        fired = 0
        for fn in self.app:
            for cron in fn.crons:
                fired += self._tick(fn, cron, now)
        return fired

    def _tick(self, fn: FunctionDef, cron: CronSchedule, now: float) -> int:
        conn = self.store.db.connection()
        row = conn.execute(
            "SELECT next_fire FROM cron_state WHERE function_id = ? AND spec = ?",
            (fn.id, cron.spec),
        ).fetchone()
        stored = float(row[0]) if row is not None else None
        if stored is not None and stored > self._created:
            nxt = stored
        else:  # never ticked, or the stored time passed while no backend ran: skip it
            nxt = _next(cron, self._created)
        due: list[float] = []
        while nxt <= now and len(due) < _MAX_CRON_CATCHUP:
            due.append(nxt)
            nxt = _next(cron, nxt)
        if nxt <= now:
            self.log.warning("cron %r of %s: over %d fire times due at once; skipping the rest",
                             cron.spec, fn.id, _MAX_CRON_CATCHUP)
            nxt = _next(cron, now)
        # Fire before recording: a crash in between re-fires on restart, which is harmless
        # (fire_cron is idempotent per fire time), whereas the reverse would lose a fire.
        for at in due:
            self.orchestrator.fire_cron(fn, cron.spec, at)
        if nxt != stored:
            # max(): another process sharing the file may have moved further already.
            conn.execute(
                "INSERT INTO cron_state (function_id, spec, next_fire) VALUES (?, ?, ?)"
                " ON CONFLICT (function_id, spec) DO UPDATE"
                " SET next_fire = max(next_fire, excluded.next_fire)",
                (fn.id, cron.spec, nxt),
            )
        return len(due)

    # -- background workers ------------------------------------------------------------------

    def start(self) -> None:
        """Start ``workers`` queue-polling threads and a cron thread (for the dev server)."""
        if self._threads:
            raise RuntimeError("LocalBackend already started")
        self._stop.clear()
        targets = [(f"stepkit-worker-{i}", self._work) for i in range(self.workers)]
        targets.append(("stepkit-cron", self._cron_loop))
        targets.append(("stepkit-heartbeat", self._heartbeat))
        for name, target in targets:
            # daemon: a forgotten stop() must not keep the interpreter alive.
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the background threads and wait for the messages in hand to finish."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _work(self) -> None:
        nxt: Delivery | None = None  # leased by the previous message's settling write
        while nxt is not None or not self._stop.is_set():
            if nxt is None:
                try:
                    batch = self.queue.receive(1)
                except Exception:
                    self.log.exception("receiving from the queue failed")
                    self._stop.wait(1.0)
                    continue
                if not batch:
                    self._stop.wait(_IDLE_POLL)
                    continue
                nxt = batch[0]
                with self._in_hand_lock:
                    self._in_hand[nxt.seq] = nxt
            delivery, nxt = nxt, None
            # Back off between retries: a platform failure rarely clears within milliseconds.
            delay = min(2.0 ** (delivery.receipt - 1), _MAX_RETRY_DELAY)
            try:
                nxt = self._process(
                    delivery, retry_delay=delay, receive_next=not self._stop.is_set()
                )
            except Exception:  # release failed: the lease expiry redelivers it
                self.log.exception("settling message %s failed", delivery.message.id)
            finally:
                with self._in_hand_lock:
                    self._in_hand.pop(delivery.seq, None)
                    if nxt is not None:  # its lease is renewed from now on
                        self._in_hand[nxt.seq] = nxt

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.queue.visibility_timeout / 3):
            with self._in_hand_lock:
                held = list(self._in_hand.values())
            try:
                self.queue.extend(held)
            except Exception:
                self.log.exception("renewing message leases failed")

    def _cron_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick_crons()
            except Exception:
                self.log.exception("cron tick failed")
            self._stop.wait(_CRON_POLL)

    # -- inspection and control --------------------------------------------------------------

    @property
    def control(self) -> InProcessControl:
        """The control plane over this backend (what the dev API serves and the CLI calls)."""
        from runtime.control.local import InProcessControl

        return InProcessControl.over(self)

    def get_run(self, run_id: str) -> RunState | None:
        """Return a run with its steps, or ``None``."""
        return self.store.load(run_id)

    def list_runs(self, query: RunQuery = RunQuery()) -> list[RunRecord]:  # noqa: B008 - frozen
        """List runs, newest first."""
        return self.store.list_runs(query)

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recently received events, newest first."""
        return self.store.list_events(limit)

    def cancel(self, run_id: str) -> bool:
        """Cancel a running run; whether this call cancelled it."""
        return self.orchestrator.cancel(run_id, "cancelled by user")

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Start a new run with the same events (a fork, ``from_step``); return its id."""
        return self.orchestrator.rerun(run_id, from_step)

    def fire_cron(self, function_id: str) -> str:
        """Fire a function's cron trigger now; the run's id."""
        return self.orchestrator.fire_cron_now(function_id)

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now (dev only); whether there was one to end."""
        return self.orchestrator.skip_sleep(run_id, key)

    def invoke(self, function_id: str, data: dict[str, Any] | None = None) -> str:
        """Start a run of ``function_id`` by hand with ``data``; return its id."""
        return self.orchestrator.invoke(function_id, data)

    def dead_letters(self) -> list[Message]:
        """Messages that used up their deliveries."""
        return self.queue.dead_letters()

    def pending_timers(self) -> list[str]:
        """Ids of timer messages still waiting to fall due."""
        return self.queue.pending_timers()

    def dead_letter_rows(self) -> list[DeadLetter]:
        """Every dead-lettered queue row, as ``stepkit dlq list`` shows it."""
        return self.queue.dead_letter_rows()

    def dead_letter_count(self) -> int:
        """How many queue rows are dead-lettered."""
        return self.queue.dead_count()

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered rows back to work; the ids redriven."""
        return self.queue.redrive(queue=queue, message_id=message_id)

    def close(self) -> None:
        """Stop the threads and close this process's database connections."""
        self.stop()
        self.store.close()  # the queue shares the store's connections

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _next(cron: CronSchedule, after: float) -> float:
    """Return the schedule's first fire time strictly after ``after`` (epoch seconds)."""
    return float(cron.next_after(datetime.fromtimestamp(after, tz=UTC)).timestamp())
