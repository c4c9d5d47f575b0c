"""The pure flow-control decisions (runtime.flow): GCRA, the concurrency line, keys."""

from __future__ import annotations

import pytest

from runtime.flow import (
    MAX_BATCH_BYTES,
    MAX_WAITING,
    RECENT_SECONDS,
    WAITING_TTL,
    BatchEvents,
    Debounce,
    Priority,
    acquire_slot,
    flow_key,
    flushed,
    flushed_run,
    fold_event,
    gcra,
    holds,
    poll_delay,
    priority_factor,
    release_slot,
    slot_expiry,
    window_expiry,
)


def test_gcra_admits_limit_plus_burst_at_once_then_one_per_interval() -> None:
    tat, starts = None, []
    for _ in range(6):
        adm = gcra(tat, 100.0, period=60, limit=2, burst=1)
        starts.append(adm.at - 100.0)
        tat = adm.tat
    assert starts == [0, 0, 0, 30, 60, 90]


def test_gcra_forgets_a_tat_in_the_past() -> None:
    assert gcra(50.0, 100.0, period=10, limit=1).at == 100.0
    assert gcra(50.0, 100.0, period=10, limit=1).tat == 110.0


def _take(state: dict | None, work: str, now: float = 0.0, rank: float = 0.0,
          limit: int = 1) -> tuple[dict, bool, int]:
    # (redelivered: each call takes its work's poll chain over, as its next round would)
    d = acquire_slot(state, work_id=work, token=f"t-{work}", now=now, limit=limit, lease_s=90,
                     rank=rank, redelivered=True)
    return d.state, d.acquired, d.position


def test_a_slot_is_taken_up_to_the_limit_and_then_work_waits_in_rank_order() -> None:
    state, ok, _ = _take(None, "r1/", limit=2)
    state, ok2, _ = _take(state, "r2/", limit=2)
    assert ok and ok2
    state, ok3, pos3 = _take(state, "r3/", rank=5, limit=2)
    state, ok4, pos4 = _take(state, "r4/", rank=1, limit=2)
    assert (ok3, ok4) == (False, False)
    assert (pos3, pos4) == (0, 0)  # r4 ranks first: r3 had no one ahead when it asked
    state = release_slot(state, token="t-r1/", now=1)
    state, ok3, pos3 = _take(state, "r3/", now=1, rank=5, limit=2)
    assert not ok3 and pos3 == 1  # r4 is ahead and may take the free slot
    state, ok4, _ = _take(state, "r4/", now=1, rank=1, limit=2)
    assert ok4 and holds(state, "t-r4/", 1)


def test_a_lapsed_lease_frees_its_slot_and_a_silent_waiter_leaves_the_line() -> None:
    state, ok, _ = _take(None, "crashed/")
    state, ok2, _ = _take(state, "quiet/", rank=-1)  # ranks first, then stops polling
    assert ok and not ok2
    state, ok3, _ = _take(state, "next/", now=WAITING_TTL + 1)
    assert not ok3  # the crashed lease still holds (90 s)
    state, ok3, _ = _take(state, "next/", now=91)
    assert ok3  # lease lapsed, and the quiet waiter left the line after WAITING_TTL


def test_a_copy_of_an_answered_poll_is_dropped_and_a_redelivery_takes_the_chain_over() -> None:
    state, _ok, _ = _take(None, "busy/")
    first = acquire_slot(state, work_id="w", token="t1", now=0, limit=1, lease_s=90, rank=0)
    assert not first.acquired and first.poll == 1
    state = first.state
    again = acquire_slot(state, work_id="w", token="t2", now=1, limit=1, lease_s=90, rank=0,
                         poll=1)
    assert not again.stale and again.poll == 2
    state = again.state
    copy = acquire_slot(state, work_id="w", token="t3", now=1, limit=1, lease_s=90, rank=0,
                        poll=1)
    assert copy.stale  # a duplicate of round 1: round 2's message carries the chain on
    taken = acquire_slot(state, work_id="w", token="t4", now=1, limit=1, lease_s=90, rank=0,
                         poll=1, redelivered=True)
    assert not taken.stale and taken.poll == 3  # a redelivery never leaves the chain lost


def test_the_line_is_bounded() -> None:
    state: dict = {"held": {"x": 1e9}, "waiting": {f"w{i}": [0, 1e9] for i in range(MAX_WAITING)}}
    state, ok, _ = _take(state, "late/", rank=1)
    assert not ok and "late/" not in state["waiting"]


def test_slot_expiry_and_poll_delay() -> None:
    assert slot_expiry({"held": {"a": 5.0}, "waiting": {"b": [0, 9.0]}}) == 9.0
    assert slot_expiry({"held": {}, "waiting": {}}) is None
    assert poll_delay(0, 2) == 1.0 and poll_delay(5, 2) == 3.0 and poll_delay(10_000, 1) == 10.0


@pytest.mark.parametrize(
    ("source", "event", "key"),
    [
        (None, {}, ""),
        ("event.data.user", {"data": {"user": "u1"}}, "u1"),
        ("event.data.n", {"data": {"n": 7}}, "7"),
        ("event.data.user", {"data": {}}, None),
        ("event.data.a + '-' + event.data.b", {"data": {"a": "x", "b": "y"}}, "x-y"),
    ],
)
def test_flow_keys(source: str | None, event: dict, key: str | None) -> None:
    assert flow_key(source, event) == key


def test_priority_factor_is_clamped_and_defaults_to_zero() -> None:
    p = Priority(run="event.data.boost")
    assert priority_factor(p, {"data": {"boost": 5000}}) == 600
    assert priority_factor(p, {"data": {"boost": -30}}) == -30
    assert priority_factor(p, {"data": {}}) == 0
    assert priority_factor(p, {"data": {"boost": "high"}}) == 0
    assert priority_factor(None, {}) == 0


def _ev(n: int, ts: int = 0) -> dict:
    return {"id": f"e{n}", "name": "x/y", "data": {"n": n}, "ts": ts}


def test_debounce_keeps_the_newest_event_and_moves_the_end() -> None:
    d = Debounce(period="1m", timeout="3m")
    f = fold_event(None, _ev(1, ts=10), now=0, pending_id="r1", debounce=d)
    assert f.opened and f.state["due"] == 60 and f.state["pending"] == "r1"
    f = fold_event(f.state, _ev(2, ts=5), now=30, pending_id="r2", debounce=d)
    assert not f.opened and f.state["events"][0]["id"] == "e1"  # older by ts: kept out
    assert f.state["due"] == 90 and f.state["pending"] == "r1"
    f = fold_event(f.state, _ev(3, ts=20), now=170, pending_id="r3", debounce=d)
    assert f.state["events"][0]["id"] == "e3" and f.state["due"] == 180  # capped by timeout
    assert fold_event(f.state, _ev(3, ts=20), now=171, pending_id="r4", debounce=d).duplicate


def test_a_batch_fills_and_its_events_are_remembered_after_the_flush() -> None:
    b = BatchEvents(max_size=2, timeout="5s")
    f = fold_event(None, _ev(1), now=0, pending_id="r1", batch=b)
    assert f.opened and not f.flush and f.state["due"] == 5
    f = fold_event(f.state, _ev(2), now=1, pending_id="r2", batch=b)
    assert f.flush and [e["id"] for e in f.state["events"]] == ["e1", "e2"]
    done = flushed(f.state, now=2)
    assert "pending" not in done and flushed_run(done, "e2", 3) == "r1"
    assert fold_event(done, _ev(2), now=3, pending_id="r9", batch=b).duplicate
    assert window_expiry(done) == 2 + RECENT_SECONDS


def test_a_batch_past_its_byte_limit_starts_early_and_carries_the_event() -> None:
    b = BatchEvents(max_size=100, timeout="5s")
    big = {**_ev(1), "data": {"blob": "x" * (MAX_BATCH_BYTES - 40)}}
    f = fold_event(None, big, now=0, pending_id="r1", batch=b)
    f = fold_event(f.state, _ev(2), now=0, pending_id="r2", batch=b)
    assert f.flush and f.carry and [e["id"] for e in f.state["events"]] == ["e1"]


def test_batch_if_is_given_as_if_in_a_dict() -> None:
    assert BatchEvents.model_validate({"max_size": 2, "timeout": "2s", "if": "true"}).if_ == "true"
