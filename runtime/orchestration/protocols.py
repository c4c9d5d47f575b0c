"""The small interfaces a backend implements; everything else is shared.

A backend provides a :class:`Store` (run state, with atomic conditional commits), a
:class:`Queue` (delayed delivery of messages to function workers), a :class:`Bus` (event
publication) and a :class:`Clock`. A store is five small Protocols, one per concern:
:class:`RunStore` (runs and their commits), :class:`GateStore` (flow-control gates),
:class:`SlotStore` (concurrency slots and their lines), :class:`WaiterStore` (runs waiting
for events) and :class:`EventLog` (events received); code that needs one concern can ask for
that one alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.concurrency import LinePlace, SlotLease
from runtime.flow import Joined, Window
from runtime.records import (
    Commit,
    Committed,
    Gate,
    GateWrite,
    Message,
    RunRecord,
    RunState,
    RunStatus,
    StepRecord,
    TimerCancel,
    Waiter,
)


class Clock(Protocol):
    """Wall-clock time in epoch seconds."""

    def now(self) -> float:
        """The current time."""
        ...


@dataclass(frozen=True)
class RunQuery:
    """Filters for listing runs, newest first."""

    function_id: str | None = None
    status: RunStatus | None = None
    limit: int = 50
    #: Only runs created at or after this time (epoch seconds).
    since: float | None = None
    #: Only runs created before this time (epoch seconds): with ``limit``, a page of an
    #: older slice of the listing (:mod:`runtime.control.bulk` pages with it).
    until: float | None = None


class RunStore(Protocol):
    """Runs, their step records and the commits that change them. Each method is atomic."""

    def load(self, run_id: str) -> RunState | None:
        """The run and all its step records, or ``None``."""
        ...

    def create_run(
        self, run: RunRecord, waiters: Sequence[Waiter], gates: Sequence[GateWrite] = (),
        steps: Sequence[StepRecord] = (),
    ) -> bool:
        """Create ``run`` (and its cancel waiters) unless a run with its id exists.

        ``gates`` are written in the same transaction: the flow-control decision that let
        the run start lands with the run, or neither does. So are ``steps``, records the
        run starts with (a fork's results copied from the run it forks).

        Returns:
            Whether it was created (``False``: a run with its id exists; nothing written).

        Raises:
            GateMovedError: The run does not exist but a gate's version is no longer its
                ``expect_version``; nothing was written.
        """
        ...

    def commit(self, run_id: str, commit: Commit) -> bool:
        """Apply ``commit`` atomically if its conditions hold.

        Conditions: the run exists, is unfinished and has version ``commit.expect_version``,
        and each step write's expected state holds. On success the run's version becomes
        ``expect_version + 1`` and ``last_msg``/``outbox`` are recorded.

        Returns:
            Whether it was applied; ``False`` is a normal outcome (a duplicate or a race lost).
        """
        ...

    def persist(self) -> None:
        """Make every commit this thread made so far durable now, before more user code runs.

        A store that writes each commit durably as it lands (DynamoDB) does nothing; one that
        groups a message's writes into one transaction (SQLite) commits the group so far.
        """
        ...

    def committed(self, run_id: str, msg_id: str) -> Committed | None:
        """The commit message ``msg_id`` applied to the run, if any (from the commit log).

        Every commit keeps its own outbox here, so a redelivered message re-sends exactly
        what its own commit had to send, whatever commits came after.
        """
        ...

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching ``query``, newest first.

        A listed record's status, attempt, output, error and times are current; its
        ``last_msg`` and ``outbox`` (what only a worker needs) may be left empty, and its
        ``version`` may be that of the last commit that changed the run record itself.
        """
        ...

    def mark_delivery(self, run_id: str, msg_id: str, *, now: float) -> bool:
        """Note that a delivery of ``msg_id`` is about to run user code for ``run_id``.

        Asked only by a delivery the queue made again (an earlier one never came back), so
        it costs nothing on the usual path. The mark lives two days.

        Returns:
            Whether an earlier delivery of the message had left its mark: it reached user
            code and died there (one that Lambda throttled never ran, and left none).
        """
        ...


class GateStore(Protocol):
    """Flow-control gates: JSON states written on condition of their version."""

    def gate(self, scope: str, key: str) -> Gate:
        """The gate ``(scope, key)``, read consistently.

        A gate past its ``expires_at`` reads with ``state=None`` and its stored version; one
        never written (or deleted) reads as ``Gate()``.
        """
        ...

    def list_gates(self, scope: str, limit: int = 100) -> list[tuple[str, Gate]]:
        """Up to ``limit`` unexpired gates of ``scope`` with a state, as ``(key, gate)``.

        For inspection (the dashboard's open debounce and batch windows), not the hot path.
        """
        ...

    def put_gate(self, write: GateWrite) -> bool:
        """Write a gate's new state if its version is still ``write.expect_version``.

        The version becomes ``expect_version + 1``; version 0 means "does not exist" (a
        deleted gate counts as version 0).

        Returns:
            Whether it was written; ``False`` is a normal outcome (a race lost: read again).
        """
        ...


class SlotStore(Protocol):
    """Concurrency slots (one lease item each) and their lines (one item per waiter).

    Every method reads or writes a bounded number of small items, whatever the limit and
    however many wait: the slots of one shard live under one partition key, each key's line
    under another.
    """

    def shard_leases(self, scope: str, key: str, shard: int, *,
                     consistent: bool = True) -> list[SlotLease]:
        """The leases stored in one shard of a key (lapsed ones included).

        ``consistent=False`` may miss the latest writes (DynamoDB: half the read units): for
        a first look whose finding a conditional write then checks.
        """
        ...

    def claim_slot(self, lease: SlotLease, now: float) -> bool:
        """Store ``lease`` if its slot is free: no lease there, or one lapsed by ``now``.

        Returns:
            Whether the slot is ours; ``False`` is a normal outcome (a race lost).
        """
        ...

    def free_slot(self, lease: SlotLease) -> None:
        """Delete ``lease`` if it is still its token's (idempotent)."""
        ...

    def line(self, scope: str, key: str, shard: int, limit: int) -> list[LinePlace]:
        """The first ``limit`` places of one shard of a key's line in rank order.

        Lapsed places are included; read consistently.
        """
        ...

    def place(self, scope: str, key: str, shard: int, rank: float,
              work: str) -> LinePlace | None:
        """One place, by its rank and work, read consistently."""
        ...

    def put_place(self, place: LinePlace, expect_round: int | None,
                  expect_woken: float | None = None) -> bool:
        """Write ``place`` if the stored one is as expected.

        Args:
            place: The place's new state.
            expect_round: The stored place's round (``None``: it must not exist).
            expect_woken: The stored place's ``woken`` (checked only when it exists).

        Returns:
            Whether it was written; ``False`` is a normal outcome (a race lost).
        """
        ...

    def leave_line(self, scope: str, key: str, shard: int, rank: float, work: str) -> None:
        """Delete one place (idempotent)."""
        ...


class WaiterStore(Protocol):
    """Waiters: the runs an event may resume or cancel, indexed by what they match."""

    def waiters_for(self, event: dict[str, Any]) -> list[Waiter]:
        """Waiters ``event`` may match: at least every live one it matches.

        Those of its name without a value index, and those whose :attr:`Waiter.index` the
        event has (``event_index_keys``); never all waiters of the name. A waiter committed
        before the call must be found (read consistently).
        """
        ...

    def remove_waiters(self, waiters: Sequence[Waiter]) -> None:
        """Delete waiters (idempotent; not atomic: for those one commit could not hold)."""
        ...


class EventLog(Protocol):
    """Events received: the dedup log of ids, and the timeline waits look back over."""

    def remember_event(self, event: dict[str, Any], *, now: float, ttl: float) -> bool:
        """Record an event id in the event log unless seen within ``ttl`` seconds.

        Returns:
            Whether the event is new.
        """
        ...

    def event_seen(self, event_id: str, *, now: float, ttl: float,
                   name: str | None = None) -> bool:
        """Whether ``event_id`` was remembered (fully routed) within ``ttl`` seconds.

        With ``name``, only as an event of that name: an id is one event's with its name, so
        a sender whose key may send only other names cannot make this event a duplicate
        (its waiters and ``cancel_on`` would never see it).
        """
        ...

    def log_event(self, event: dict[str, Any], *, now: float, ttl: float) -> None:
        """Keep ``event`` for ``ttl`` seconds in the timeline of its name (idempotent).

        The timeline is what waits and ``cancel_on`` look back over: it is keyed by name,
        the event's ``ts`` and id, and must be read strongly consistently.
        """
        ...

    def events_since(self, name: str, since_ms: int, *, now: float) -> list[dict[str, Any]]:
        """Unexpired timeline events named ``name`` whose ``ts`` is at least ``since_ms``."""
        ...

    def logged_event(self, name: str, ts: int, event_id: str) -> dict[str, Any] | None:
        """One timeline event by name, ``ts`` and id (``None`` once expired or never logged)."""
        ...

    def list_events(self, limit: int = 50, *,
                    summary: bool = False) -> list[dict[str, Any]]:
        """Recently received events, newest first.

        With ``summary`` a store may give only each event's ``id``, ``name`` and ``ts``
        (a listing for people, which shows no payload), if that reads less.
        """
        ...


class WindowStore(Protocol):
    """Batch windows in small items: a header per key, a seat per event, a member per event id.

    Every method is one conditional write (or one read); none rewrites more than one small
    item, whatever the window holds. A refused condition, and a write caught in another's
    transaction, is a normal outcome (``None``/``False``: read the window again).
    """

    def window(self, scope: str, key: str) -> Window:
        """The header of ``(scope, key)``'s window, read consistently (``Window()``: none)."""
        ...

    def open_window(self, scope: str, key: str, window: Window) -> bool:
        """Write a new header if the stored one is still at ``window.version - 1``."""
        ...

    def take_seat(self, scope: str, key: str, run_id: str, size: int,
                  max_bytes: int) -> int | None:
        """Take the next seat of the open window ``run_id`` (a conditional counter).

        Refused at the window's cap, or when ``size`` more bytes would pass ``max_bytes``
        (unless no seat is taken yet).

        Returns:
            The seat (1-based), or ``None``: the window closed, moved on or is full.
        """
        ...

    def join_window(self, scope: str, run_id: str, seat: int, event: dict[str, Any], *,
                    member_until: float, seat_until: float) -> Joined:
        """Put ``event`` in its seat and record its membership, atomically.

        Returns:
            ``Joined(run_id)``; ``duplicate`` with the run it joined before when its id is a
            member already; ``lost`` when the seat was tombstoned or a write conflicted.
        """
        ...

    def window_member(self, scope: str, event_id: str) -> str | None:
        """The run the event joined, while its membership lasts."""
        ...

    def window_seats(self, scope: str, run_id: str, count: int) -> dict[int, dict[str, Any]]:
        """Seats ``1..count`` of window ``run_id`` that exist: an event, or ``{}`` (tombstone)."""
        ...

    def kill_seat(self, scope: str, run_id: str, seat: int, until: float) -> bool:
        """Tombstone an empty seat; ``False`` if it was filled (or a write conflicted)."""
        ...

    def close_window(self, scope: str, key: str, run_id: str) -> Window | None:
        """Close the open window ``run_id``: no more seats. ``None``: it was not open."""
        ...

    def mark_window(self, scope: str, key: str, run_id: str, *, started: bool = False,
                    round: int | None = None, expect_round: int | None = None,
                    cap: int | None = None) -> bool:
        """Mark window ``run_id`` started (once closed), or change the open window.

        Its timer moves from ``expect_round`` to ``round``; its cap only ever rises.
        """
        ...

    def adopt_members(self, scope: str, members: Sequence[tuple[str, str, float]]) -> None:
        """Record ``(event id, run id, until)`` memberships (those of a gate-layout window)."""
        ...

    def list_windows(self, scope: str, limit: int = 100) -> list[tuple[str, Window]]:
        """Up to ``limit`` open windows of ``scope`` as ``(key, window)``, sorted by key."""
        ...


class Store(RunStore, GateStore, SlotStore, WaiterStore, EventLog, WindowStore, Protocol):
    """Durable run state: every concern of a store, as a backend provides it."""


class Queue(Protocol):
    """Delivers messages to function workers, at least once, not before their ``due`` time.

    A queue that cannot delay that long may deliver early; workers re-enqueue early messages.
    """

    def send(self, messages: Sequence[Message]) -> None:
        """Enqueue messages."""
        ...

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        """Delete timers a commit made moot, where the queue can (idempotent).

        A failure raises: the delivery that asked comes back (its commit has landed) and its
        redelivery deletes them again. A timer not deleted would fire into work that moved
        on, which does nothing, but hold one of the account's schedules until then.
        """
        ...


class Bus(Protocol):
    """Publishes events to the app's event bus."""

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish validated events (JSON-ready dicts)."""
        ...


class Metrics(Protocol):
    """Observes runs and steps as their commits land (a sink for run metrics).

    Called only after the change it reports was committed, so a duplicate or stale message,
    which commits nothing, reports nothing (``pushback`` aside: it reports the delivery). The
    default (:class:`NoMetrics`) drops everything; the Lambda handlers publish CloudWatch
    metrics.
    """

    def run_started(self, function_id: str) -> None:
        """A run was created."""
        ...

    def run_finished(self, function_id: str, status: RunStatus) -> None:
        """A run ended: completed, failed or cancelled."""
        ...

    def step_ended(self, function_id: str, duration_s: float, *, failed: bool) -> None:
        """A ``step.run`` got its result (``failed``: for good), ``duration_s`` after it began."""
        ...

    def step_retried(self, function_id: str) -> None:
        """A ``step.run`` attempt failed and the step will be retried."""
        ...

    def run_blocked(self, function_id: str) -> None:
        """A run was blocked (or tried again while blocked): its code cannot go on with it."""
        ...

    def pushback(self, function_id: str) -> None:
        """A delivery was pushed back (throttled, conflicted) and will be tried again later.

        Reported when the delivery gives way, not after a commit: a pushed-back delivery
        commits nothing, and its redelivery may well be a duplicate.
        """
        ...


class NoMetrics:
    """The :class:`Metrics` sink that drops everything (the local backend's)."""

    def run_started(self, function_id: str) -> None:
        """Dropped."""

    def run_finished(self, function_id: str, status: RunStatus) -> None:
        """Dropped."""

    def step_ended(self, function_id: str, duration_s: float, *, failed: bool) -> None:
        """Dropped."""

    def step_retried(self, function_id: str) -> None:
        """Dropped."""

    def run_blocked(self, function_id: str) -> None:
        """Dropped."""

    def pushback(self, function_id: str) -> None:
        """Dropped."""
