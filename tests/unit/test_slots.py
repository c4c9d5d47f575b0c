"""Concurrency slots end to end over a real store: who takes, who waits, who is woken.

A SQLite store, a queue that records what is sent and a clock that stands still: each test
plays invocations one at a time and reads what they wrote and sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.app import FunctionDef
from runtime.backends.local.store import SqliteStore
from runtime.concurrency import line_shard
from runtime.messages import is_backstop, poll_round
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.slots import Slot, Slots
from runtime.records import Message, MessageKind, RunRecord, RunState
from tests.stores.helpers import START


class _IO:
    def __init__(self, store: SqliteStore, clock: FakeClock) -> None:
        self.store, self.clock = store, clock
        self.queue = self
        self.sent: list[Message] = []

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)

    def cancel(self, run_id: str, reason: str) -> bool:
        return False


@pytest.fixture
def io(tmp_path: Path) -> _IO:
    clock = FakeClock(START)
    return _IO(SqliteStore(tmp_path / "s.db", clock=clock), clock)


def _fn(limit: int = 1, priority: bool = False) -> FunctionDef:
    app = App("a")
    extra: dict[str, Any] = {"priority": {"run": "event.data.p"}} if priority else {}

    @app.function(id="f", trigger=TriggerEvent("e"), concurrency=limit, **extra)
    def f(ctx: Context) -> None:
        return None

    return app.get("f")


def _state(run_id: str, created_at: float = START, p: int = 0) -> RunState:
    run = RunRecord(run_id=run_id, function_id="f", created_at=created_at,
                    events=({"id": f"e-{run_id}", "name": "e", "data": {"p": p}},))
    return RunState(run, {})


def _msg(run_id: str, poll: int = 0) -> Message:
    payload = {"poll": poll} if poll else None
    return Message(MessageKind.CONTINUE, "f", run_id, id=f"m-{run_id}", version=1,
                   payload=payload)


def _take(slots: Slots, fn: FunctionDef, run_id: str, created_at: float = START,
          poll: int = 0, redelivered: bool = False) -> list[Slot] | None:
    return slots.take_slots(fn, _state(run_id, created_at), _msg(run_id, poll), None,
                            redelivered=redelivered)


def test_work_over_the_limit_waits_and_a_release_wakes_the_head(io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    held = _take(slots, fn, "r1")
    assert held is not None and len(held) == 1
    assert _take(slots, fn, "r3", created_at=START + 3) is None
    assert _take(slots, fn, "r2", created_at=START + 2) is None
    # Each waiter armed one backstop timer, at the lease's length; nobody polls.
    assert [(m.run_id, poll_round(m), m.due) for m in io.sent] == [
        ("r3", 1, START + 90), ("r2", 1, START + 90)]
    assert [p.work for p in io.store.line("concurrency:f", "", 0, 10)] == ["r2/m-r2",
                                                                              "r3/m-r3"]
    io.sent.clear()
    slots.release(held)
    assert [(m.run_id, poll_round(m), m.due) for m in io.sent] == [("r2", 1, None)]  # the head
    woken = _take(slots, fn, "r2", created_at=START + 2, poll=1)
    assert woken is not None
    assert [p.work for p in io.store.line("concurrency:f", "", 0, 10)] == ["r3/m-r3"]


def test_a_copy_of_an_older_round_is_dropped_and_a_redelivery_carries_the_chain(
        io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    assert _take(slots, fn, "r1") is not None
    assert _take(slots, fn, "w", created_at=START + 1) is None
    assert _take(slots, fn, "w", created_at=START + 1, poll=1) is None  # its backstop: round 2
    io.sent.clear()
    assert _take(slots, fn, "w", created_at=START + 1, poll=1) is None  # a copy of round 1
    assert io.sent == []  # dropped: round 2's message carries the chain on
    assert _take(slots, fn, "w", created_at=START + 1, poll=1, redelivered=True) is None
    assert [poll_round(m) for m in io.sent] == [3]  # a redelivery is never a lost chain


def test_a_taker_yields_a_free_slot_to_better_ranked_work_and_wakes_it(io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    held = _take(slots, fn, "r1")
    assert held is not None
    assert _take(slots, fn, "early", created_at=START - 60) is None
    io.store.free_slot(held[0].lease)  # freed without a wake (a release that crashed half-way)
    io.sent.clear()
    assert _take(slots, fn, "late", created_at=START + 5) is None  # a slot is free, but...
    assert [m.run_id for m in io.sent] == ["early", "late"]  # ...early is woken; late waits
    assert _take(slots, fn, "early", created_at=START - 60, poll=1) is not None


def test_a_slot_freed_while_the_waiter_enters_the_line_is_taken_by_its_retry(
        io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    held = _take(slots, fn, "r1")
    assert held is not None
    put_place = io.store.put_place

    def release_meanwhile(*args: Any) -> bool:
        io.store.free_slot(held[0].lease)  # the holder's release found the line still empty
        return put_place(*args)

    io.store.put_place = release_meanwhile  # type: ignore[method-assign]
    assert _take(slots, fn, "w", created_at=START + 1) is not None
    io.store.put_place = put_place  # type: ignore[method-assign]
    assert io.sent == [] and io.store.line("concurrency:f", "", 0, 10) == []


def test_a_crashed_holders_slot_is_taken_once_its_lease_lapses(io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    assert _take(slots, fn, "crashed") is not None  # never released
    assert _take(slots, fn, "w", created_at=START + 1) is None
    io.clock.advance(90)
    assert _take(slots, fn, "w", created_at=START + 1, poll=1) is not None  # its backstop


def test_a_redelivery_waits_no_longer_than_the_slot_its_own_dead_delivery_left(
        io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    assert _take(slots, fn, "r") is not None  # claimed at START, then the worker died
    io.clock.advance(10)
    for poll in range(4):  # redeliveries that failed after the wait was written: round 4
        assert _take(slots, fn, "r", poll=poll, redelivered=True) is None
    # Its backstop would have doubled to 720 s; the lease it waits for lapses at START + 90.
    assert [m.due for m in io.sent][-1] == START + 91
    io.clock.advance(81)
    assert _take(slots, fn, "r", poll=4) is not None
    # Only its own lease counts: another run's redelivery waits out its backstop.
    assert _take(slots, fn, "other", created_at=START + 1, redelivered=True) is None
    assert io.sent[-1].due == START + 91 + 90


def test_a_first_step_with_priority_gathers_before_it_takes_the_last_slot(io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=2, priority=True)
    start = Message(MessageKind.START, "f", "r0", id="s0")
    assert slots.take_slots(fn, _state("r0"), start, None) is not None  # two free: taken
    start = Message(MessageKind.START, "f", "r1", id="s1")
    assert slots.take_slots(fn, _state("r1"), start, None) is None  # the last one: gather
    (back,) = io.sent
    assert (back.id, back.kind, poll_round(back), back.due) == (
        "first-r1", MessageKind.CONTINUE, 1, START + 1.0)
    assert slots.take_slots(fn, _state("r1"), back, None) is not None
    app = App("a")

    @app.function(id="k", trigger=TriggerEvent("e"), priority={"run": "event.data.p"},
                  concurrency={"limit": 1, "key": "event.data.p"})
    def keyed(ctx: Context) -> None:
        return None

    start = Message(MessageKind.START, "k", "r2", id="s2")
    assert slots.take_slots(app.get("k"), _state("r2"), start, None) is not None  # keyed


def test_a_limit_of_a_thousand_spreads_over_twenty_shards(io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1000)
    held = [_take(slots, fn, f"r{i}") for i in range(1000)]
    assert all(h is not None for h in held)
    io.sent.clear()
    waiters = [f"w{i}" for i in range(8)]
    for i, w in enumerate(waiters):
        assert _take(slots, fn, w, created_at=START + 1 + i) is None
    shards = [io.store.shard_leases("concurrency:f", "", s) for s in range(20)]
    assert [len(s) for s in shards] == [50] * 20
    # The line has four shards; a release wakes the best-ranked waiter, whichever its shard.
    assert len({line_shard(f"{w}/m-{w}", 1000) for w in waiters}) > 1
    io.sent.clear()
    first = held[0]
    assert first is not None
    slots.release(first)
    assert [m.run_id for m in io.sent] == ["w0"]


def test_a_waiter_whose_run_finished_gives_its_turn_on(io: _IO) -> None:
    slots, fn = Slots(io), _fn(limit=1)
    held = _take(slots, fn, "r1")
    assert held is not None
    assert _take(slots, fn, "gone", created_at=START + 1) is None
    assert _take(slots, fn, "next", created_at=START + 2) is None
    io.sent.clear()
    slots.release(held)
    (woken,) = io.sent
    assert woken.run_id == "gone"
    io.sent.clear()
    slots.forget(fn, _state("gone", START + 1), woken)  # cancelled while it waited
    assert [m.run_id for m in io.sent] == ["next"]
    assert [p.work for p in io.store.line("concurrency:f", "", 0, 10)] == ["next/m-next"]
    slots.forget(fn, _state("r1"), _msg("r1"))  # a message that never waited: nothing
    assert [m.run_id for m in io.sent] == ["next"]


def test_the_backstop_of_a_wait_a_wake_up_served_does_not_run_the_step_again(
        io: _IO) -> None:
    # r2 waits; a release wakes it and the woken message takes the slot (its step runs).
    # Its backstop timer comes later, while that step may still run: it finds no place in
    # line and does nothing, instead of taking a second slot for the same step.
    slots, fn = Slots(io), _fn(limit=2)
    held = _take(slots, fn, "r1")
    other = _take(slots, fn, "r9", created_at=START + 9)
    assert held is not None and other is not None
    assert _take(slots, fn, "r2", created_at=START + 2) is None
    [backstop] = io.sent
    assert is_backstop(backstop) and backstop.due == START + 90
    io.sent.clear()
    slots.release(held)
    [woken] = io.sent
    assert not is_backstop(woken)
    io.sent.clear()
    assert slots.take_slots(fn, _state("r2", START + 2), woken, None) is not None
    slots.release(other)  # a slot is free when the backstop comes
    io.clock.advance(90)
    assert slots.take_slots(fn, _state("r2", START + 2), backstop, None) is None
    assert io.sent == []  # and it re-armed nothing
