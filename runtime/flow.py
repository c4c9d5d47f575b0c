"""Flow control: the options, and the pure decisions behind them.

Everything here is arithmetic over a gate's state (a JSON dict the backends keep under
``(scope, key)``, see :class:`~runtime.records.Gate`) and the current time: may this run
start now, later, or not at all (concurrency slots and their line are
:mod:`runtime.concurrency`'s). No I/O: :mod:`runtime.orchestration.gates` reads and writes
gates through the store with conditional writes, and ARCHITECTURE.md says why each decision
survives duplicate delivery, reordering and crashed workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from runtime.durations import parse_duration
from runtime.expressions import Expression

#: Idempotency keys are remembered this long (Inngest's window).
IDEMPOTENCY_SECONDS = 24 * 3600
PRIORITY_LIMIT = 600


def _period(value: Any, where: str, low: timedelta, high: timedelta) -> timedelta:
    """A period option: a duration string or ``timedelta`` within ``[low, high]``.

    Bare numbers are refused: Inngest reads them as milliseconds, Python as seconds.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"{where}: give a duration string such as '{value}s' or '1m', or a timedelta; a "
            "bare number is ambiguous (Inngest reads milliseconds, Python seconds)"
        )
    found = parse_duration(value, where=where)
    if not low <= found <= high:
        raise ValueError(f"{where}: {found} is outside {low} to {high}")
    return found


def _between(low: timedelta, high: timedelta) -> Callable[[Any, ValidationInfo], timedelta]:
    """The check of a duration field from ``low`` to ``high``; errors name the field."""

    def check(value: Any, info: ValidationInfo) -> timedelta:
        return _period(value, info.field_name or "duration", low, high)

    return check


def _check_expression(source: Any) -> str:
    if not isinstance(source, str) or not source.strip():
        raise ValueError("must be a non-empty CEL expression, e.g. 'event.data.user_id'")
    Expression.check_names(source, ("event",), where="expression")
    Expression.compile(source, where="expression")
    return source


_SECOND = timedelta(seconds=1)
UpToAMinute = Annotated[timedelta, BeforeValidator(_between(_SECOND, timedelta(minutes=1)))]
UpToADay = Annotated[timedelta, BeforeValidator(_between(_SECOND, timedelta(days=1)))]
UpToAWeek = Annotated[timedelta, BeforeValidator(_between(_SECOND, timedelta(days=7)))]
UpToFifteenMinutes = Annotated[timedelta,
                               BeforeValidator(_between(_SECOND, timedelta(minutes=15)))]
#: CEL over ``event``, checked (names and syntax) when the option is built.
Cel = Annotated[str, BeforeValidator(_check_expression)]


class _Option(BaseModel):
    # defer_build: each option builds its validator when first used, not at import, so a
    # Lambda cold start builds only the options its app declares (bench/cold_import.py).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              defer_build=True)


class Throttle(_Option):
    """Start at most ``limit`` runs per ``period``, plus ``burst`` at once; delay the rest.

    Runs over the limit are queued for later (GCRA), never dropped. With ``key`` (CEL over
    ``event``) each key value has its own limit.
    """

    limit: int = Field(ge=1, le=10_000, strict=True)
    period: UpToAWeek
    burst: int = Field(default=0, ge=0, le=10_000, strict=True)
    key: Cel | None = None


class RateLimit(_Option):
    """Start at most ``limit`` runs per ``period`` (up to 24 h); skip (and record) the rest."""

    limit: int = Field(ge=1, le=10_000, strict=True)
    period: UpToADay
    key: Cel | None = None


class Concurrency(_Option):
    """At most ``limit`` steps of the function (or of the app) executing at once.

    A sleeping or waiting run holds no slot. Work over the limit waits its turn (FIFO per
    key, best effort) and starts when a slot frees; a crashed worker's slot is released when
    its lease lapses.
    """

    limit: int = Field(ge=1, le=1000, strict=True)
    key: Cel | None = None
    scope: Literal["fn", "app"] = "fn"


class Singleton(_Option):
    """At most one running run per ``key``: ``skip`` the new run, or ``cancel`` the old one."""

    key: Cel | None = None
    mode: Literal["skip", "cancel"] = "skip"


class Priority(_Option):
    """``run``: CEL over ``event`` giving seconds (-600 to 600) a run moves ahead in line."""

    run: Cel


class Debounce(_Option):
    """Start one run with the last event once ``period`` passes with no new event (per key).

    ``timeout`` caps the total delay from the first event of a window.
    """

    period: UpToAWeek
    key: Cel | None = None
    timeout: UpToAWeek | None = None


class BatchEvents(_Option):
    """Start one run for up to ``max_size`` events, or for those that came within ``timeout``.

    ``key`` batches per key value; events for which ``if_`` (CEL over ``event``) is false
    start a run of their own at once.
    """

    max_size: int = Field(ge=1, le=100, strict=True)
    timeout: UpToAMinute
    key: Cel | None = None
    if_: Cel | None = Field(default=None, alias="if")


class Checkpointing(_Option):
    """Run consecutive ``step.run`` steps in one invocation, recording each before the next.

    Opt-in (Inngest's ``checkpointing``): instead of one step per invocation, a worker that
    performed a step and recorded its result replays on and performs the next, until the
    run sleeps, waits, invokes, fans out or finishes, or ``max_runtime`` has passed; then it
    hands the run back to its queue. Every result is committed before the next step starts,
    so a crash loses none: the message is delivered again and the run goes on from its last
    recorded step. ``max_runtime`` must stay under the Lambda timeout (``aws.timeout_s``);
    by default it is half of it.
    """

    max_runtime: UpToFifteenMinutes | None = None


@dataclass(frozen=True)
class FlowSpec:
    """A function's flow-control options, validated."""

    idempotency: str | None = None
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    concurrency: tuple[Concurrency, ...] = ()
    singleton: Singleton | None = None
    priority: Priority | None = None
    debounce: Debounce | None = None
    batch: BatchEvents | None = None

    @property
    def gates_starts(self) -> bool:
        """Whether a rule decides when (or whether) a run starts."""
        return any((self.idempotency, self.throttle, self.rate_limit, self.singleton))

    @property
    def window(self) -> Debounce | BatchEvents | None:
        """The option that gathers events before a run starts (debounce or batching)."""
        return self.debounce or self.batch


# -- keys ----------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _compiled(source: str) -> Expression:
    return Expression.compile(source, where="flow control")


def flow_key(source: str | None, event: dict[str, Any]) -> str | None:
    """The key value ``source`` gives for ``event``.

    ``""`` without an expression (one shared key); ``None`` when the expression fails or
    yields null (the event has no such field).
    """
    if source is None:
        return ""
    try:
        found = _compiled(source).value({"event": event})
    except LookupError:
        return None
    if found is None:
        return None
    if isinstance(found, str):
        return found
    return json.dumps(found, sort_keys=True, separators=(",", ":"))


def priority_factor(priority: Priority | None, event: dict[str, Any]) -> float:
    """Seconds ``event``'s run moves ahead in line (negative: behind), within ±600."""
    if priority is None:
        return 0.0
    try:
        found = _compiled(priority.run).value({"event": event})
    except LookupError:
        return 0.0
    if isinstance(found, bool) or not isinstance(found, int | float):
        return 0.0
    return float(max(-PRIORITY_LIMIT, min(PRIORITY_LIMIT, found)))


# -- rates: GCRA ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """A GCRA decision.

    Attributes:
        at: When the run may start (``now`` if at once).
        tat: The theoretical arrival time to store if the run is admitted.
    """

    at: float
    tat: float


def gcra(
    tat: float | None, now: float, *, period: float, limit: int, burst: int = 0
) -> Admission:
    """The generic cell rate algorithm: one start per ``period / limit``, ``limit + burst`` at once.

    Args:
        tat: The stored theoretical arrival time (``None``: none yet).
        now: The current time.
        period: The period in seconds.
        limit: Starts per period.
        burst: Starts allowed at once on top of ``limit``.

    Returns:
        The earliest time this start conforms and the TAT to store once it is admitted.
    """
    interval = period / limit
    tolerance = interval * (limit + burst - 1)
    base = max(tat if tat is not None else now, now)
    return Admission(at=max(now, base - tolerance), tat=base + interval)


# -- debounce and batching: a window of events per key -------------------------------------
# A batch window is a small header (its run, a seat counter, its byte total, when it is due)
# with one item per event (its seat) and one per event id (its membership): an event joins
# with writes of about its own size. Debounce windows, and batch windows opened before that
# layout, are one gate holding their events (the "gate layout", below the batch rules).


@dataclass(frozen=True)
class Window:
    """The header of a key's batch window, as the store keeps it.

    Attributes:
        run_id: The run the window starts (``None``: no window was ever opened here).
        count: Seats taken (an event takes one; a seat left empty is tombstoned).
        cap: The most seats: ``max_size`` plus the seats tombstoned so far, so a window
            full by count holds exactly ``max_size`` events whatever seats were given up.
        bytes: Bytes of events the seats hold or were taken for.
        first_at: When the window opened.
        due: When its run starts if it does not fill first.
        round: The round of its timer chain (a timer that came early re-arms the next).
        closed: No more seats: the window's events are those of its filled seats.
        started: Its run was created (or it had no event): the next window may open.
        version: Bumped by opening, closing, re-arming and starting (not by taking a seat).
    """

    run_id: str | None = None
    count: int = 0
    cap: int = 0
    bytes: int = 0
    first_at: float = 0.0
    due: float = 0.0
    round: int = 1
    closed: bool = False
    started: bool = False
    version: int = 0

    @property
    def open(self) -> bool:
        """Whether events may still join (a run id, not closed)."""
        return self.run_id is not None and not self.closed


@dataclass(frozen=True)
class Joined:
    """What joining a window's seat did.

    Attributes:
        run_id: The run the event is in: ours, or (``duplicate``) the one it joined before.
        duplicate: The event had joined a window already (a copy, or a redelivery).
        lost: The seat was tombstoned or another write held it: join again.
    """

    run_id: str | None
    duplicate: bool = False
    lost: bool = False


#: A seat read at close: the event it holds, ``TOMBSTONE`` if it was given up, or absent.
TOMBSTONE: dict[str, Any] = {}
#: Seat items outlive their window by this long (a run created late still finds them).
SEAT_SECONDS = 7 * 24 * 3600.0


def opened_window(run_id: str, now: float, batch: BatchEvents, version: int) -> Window:
    """A new batch window whose run will be ``run_id``, replacing the header at ``version``."""
    return Window(run_id, cap=batch.max_size, first_at=now,
                  due=now + batch.timeout.total_seconds(), version=version + 1)


def seats_full(window: Window) -> bool:
    """Whether every seat under the cap is taken (settle them: close, or raise the cap)."""
    return window.count >= window.cap


def bytes_full(window: Window, size: int) -> bool:
    """Whether an event of ``size`` bytes would pass :data:`MAX_BATCH_BYTES` (close first)."""
    return window.count > 0 and window.bytes + size > MAX_BATCH_BYTES


def settled_cap(seats: dict[int, dict[str, Any]], count: int, batch: BatchEvents) -> int:
    """The cap a window whose seats ``1..count`` are all filled or tombstoned should have.

    Equal to the current cap: it holds ``max_size`` events, close it. Higher: seats were
    given up (copies, crashed joins), so that many more may be taken.
    """
    return batch.max_size + sum(1 for n in range(1, count + 1) if seats.get(n) == TOMBSTONE)


def member_expiry(now: float) -> float:
    """Until when an event id that joined a window at ``now`` counts as batched."""
    return now + RECENT_SECONDS


def empty_seats(seats: dict[int, dict[str, Any]], count: int) -> list[int]:
    """The seats of ``1..count`` not yet filled or tombstoned (they are tombstoned)."""
    return [n for n in range(1, count + 1) if seats.get(n) is None]


def window_events(seats: dict[int, dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """A closed window's events: its filled seats in seat (arrival) order."""
    return [e for n in range(1, count + 1) if (e := seats.get(n))]

#: Most bytes of events one batch holds (a run's events item must stay under 400 KB).
MAX_BATCH_BYTES = 300 * 1024
#: Event ids already flushed are remembered this long, so a late duplicate START of one is
#: not folded into a second run.
RECENT_SECONDS = 3600.0
MAX_RECENT = 2000


def event_bytes(event: dict[str, Any]) -> int:
    """An event's size as JSON."""
    return len(json.dumps(event, separators=(",", ":")))


@dataclass(frozen=True)
class Fold:
    """What folding one event into a debounce or batch window does.

    Attributes:
        state: The gate's new state (write it conditionally), unless ``duplicate``.
        opened: The window just opened: arm its flush timer.
        flush: The batch is full: start its run now with ``state["events"]`` (folding this
            event again afterwards when ``carry``).
        carry: The event did not fit the full batch; fold it again once it is flushed.
        duplicate: The event is in the window already, or was flushed recently.
    """

    state: dict[str, Any]
    opened: bool = False
    flush: bool = False
    carry: bool = False
    duplicate: bool = False


def _recent(state: dict[str, Any] | None, now: float) -> dict[str, list[Any]]:
    """Recently flushed event ids: ``{event id: [expiry, run id]}``."""
    return {k: v for k, v in ((state or {}).get("recent") or {}).items() if v[0] > now}


def flushed_run(state: dict[str, Any] | None, event_id: str, now: float) -> str | None:
    """The run a recently flushed window started with ``event_id`` in it, if any."""
    found = _recent(state, now).get(event_id)
    return str(found[1]) if found else None


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (int(a.get("ts") or 0), str(a["id"])) > (int(b.get("ts") or 0), str(b["id"]))


def fold_event(
    state: dict[str, Any] | None,
    event: dict[str, Any],
    *,
    now: float,
    pending_id: str,
    debounce: Debounce | None = None,
    batch: BatchEvents | None = None,
) -> Fold:
    """Fold ``event`` into the open window, or open one whose run will be ``pending_id``.

    Debounce keeps the newest event (by ``ts``, then id: delivery order does not matter)
    and moves the window's end to ``period`` after now, never past ``timeout`` after its
    first event. A batch appends the event; it is full at ``max_size`` events or
    :data:`MAX_BATCH_BYTES`.
    """
    recent = _recent(state, now)
    window = dict(state or {})
    events: list[dict[str, Any]] = list(window.get("events") or [])
    if event["id"] in recent or any(e["id"] == event["id"] for e in events):
        return Fold(window, duplicate=True)
    opened = not window.get("pending")
    if opened:
        window = {"pending": pending_id, "events": [], "first_at": now, "round": 1,
                  "recent": recent}
        events = []
    first_at = float(window["first_at"])
    if debounce is not None:
        if not events or _newer(event, events[0]):
            events = [event]
        due = now + debounce.period.total_seconds()
        if debounce.timeout is not None:
            due = min(due, first_at + debounce.timeout.total_seconds())
        window.update(events=events, due=due)
        return Fold(window, opened=opened)
    assert batch is not None
    size = sum(event_bytes(e) for e in events)
    if events and size + event_bytes(event) > MAX_BATCH_BYTES:
        return Fold(window, flush=True, carry=True)
    events.append(event)
    window.update(events=events, due=first_at + batch.timeout.total_seconds())
    return Fold(window, opened=opened, flush=len(events) >= batch.max_size)


def flushed(state: dict[str, Any], now: float) -> dict[str, Any]:
    """The gate's state once its window's run was created.

    The window is closed and its event ids are remembered for :data:`RECENT_SECONDS`.
    """
    recent = _recent(state, now)
    for e in state.get("events") or []:
        recent[e["id"]] = [now + RECENT_SECONDS, state["pending"]]
    if len(recent) > MAX_RECENT:
        recent = dict(sorted(recent.items(), key=lambda kv: kv[1][0])[-MAX_RECENT:])
    return {"recent": recent}


def window_expiry(state: dict[str, Any]) -> float | None:
    """When a window gate's state stops mattering."""
    times = [float(v[0]) for v in (state.get("recent") or {}).values()]
    if state.get("pending"):
        return None  # an open window is closed by its flush, never by expiry
    return max(times) if times else None
