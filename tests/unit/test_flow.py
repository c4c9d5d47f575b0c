"""The pure flow-control decisions (runtime.flow, runtime.concurrency): GCRA, slots, keys."""

from __future__ import annotations

import pytest

from runtime.concurrency import (
    GATHER_SECONDS,
    SHARD_SIZE,
    WAKE_STALE,
    LinePlace,
    SlotLease,
    ahead_of,
    backstop,
    free_indexes,
    line_shard,
    line_shards,
    live,
    place_sort_key,
    rank_of,
    shard_sizes,
    to_wake,
    woken,
    yields,
)
from runtime.flow import (
    MAX_BATCH_BYTES,
    RECENT_SECONDS,
    BatchEvents,
    Debounce,
    Priority,
    flow_key,
    flushed,
    flushed_run,
    fold_event,
    gcra,
    priority_factor,
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


def _place(work: str, rank: float, expires: float = 100.0, woken: float | None = None
           ) -> LinePlace:
    return LinePlace("concurrency:fn", "", 0, rank, work, {}, 1, expires, woken)


def _lease(index: int, expires: float) -> SlotLease:
    return SlotLease("concurrency:fn", "", 0, index, f"t{index}", f"w{index}/", expires)


def test_a_limit_is_split_in_shards_of_at_most_fifty_slots() -> None:
    assert shard_sizes(1) == [1]
    assert shard_sizes(50) == [50]
    assert shard_sizes(51) == [26, 25]
    assert shard_sizes(1000) == [50] * 20
    assert sum(shard_sizes(999)) == 999 and max(shard_sizes(999)) <= SHARD_SIZE


def test_a_lapsed_lease_frees_its_slot() -> None:
    leases = [_lease(0, 10.0), _lease(2, 50.0)]
    assert free_indexes(leases, 3, now=5.0) == [1]
    assert free_indexes(leases, 3, now=10.0) == [0, 1]  # its expiry itself: lapsed
    assert free_indexes([], 2, now=0.0) == [0, 1]


def test_places_sort_by_rank_then_work_and_read_back() -> None:
    ranks = [-600.0, 0.0, 5.5, 1.7e9, 1.7e9 + 0.25]
    keys = [place_sort_key(r, w) for r in ranks for w in ("a/x", "b/y")]
    assert keys == sorted(keys)
    assert rank_of(place_sort_key(1.7e9 + 0.25, "r/m#1")) == (1.7e9 + 0.25, "r/m#1")


def test_a_taker_yields_to_work_ranked_before_it_unless_slots_are_left_over() -> None:
    line = live([_place("c/", 3), _place("a/", 1), _place("gone/", 0, expires=5.0),
                 _place("b/", 2, woken=9.0)], now=10.0)
    assert [p.work for p in line] == ["a/", "b/", "c/"]  # the lapsed place is out
    ahead = ahead_of(line, 2.5, "x/")
    assert [p.work for p in ahead] == ["a/", "b/"]
    assert yields(ahead, free=1) and yields(ahead, free=2)
    assert not yields(ahead, free=3)  # two slots for those ahead, one for us
    assert not yields(ahead_of(line, 0.5, "x/"), free=1)  # ranked first


def test_a_long_line_is_split_and_each_wait_keeps_its_shard() -> None:
    assert [line_shards(n) for n in (1, 250, 251, 1000)] == [1, 1, 2, 4]
    assert line_shard("r/m", 10) == 0
    shards = {line_shard(f"r{i}/m", 1000) for i in range(100)}
    assert shards == {0, 1, 2, 3}
    assert line_shard("r7/m", 1000) == line_shard("r7/m", 1000)


def test_a_release_wakes_the_first_place_not_woken_lately() -> None:
    line = [_place("a/", 1, woken=9.0), _place("b/", 2), _place("c/", 3)]
    assert [p.work for p in to_wake(line, now=10.0)] == ["b/"]
    assert [p.work for p in to_wake(line, now=10.0, count=5)] == ["b/", "c/"]
    # A wake-up that led nowhere (its invocation lost) is sent again after a while.
    assert [p.work for p in to_wake(line, now=9.0 + WAKE_STALE)] == ["a/"]
    assert woken(line[1], 11.0).woken == 11.0


def test_a_place_round_trips_and_the_backstop_is_the_lease() -> None:
    place = _place("a/", 1, woken=2.0)
    assert LinePlace.of(place.scope, place.key, 0, place.rank, place.work,
                        place.to_json()) == place
    assert backstop(90.0, gather=False) == 90.0
    assert backstop(90.0, gather=True) == GATHER_SECONDS


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


def test_a_waiter_still_in_line_doubles_its_backstop_up_to_sqs_s_delay() -> None:
    # A long line costs a few timers per waiter, not one per lease duration (90 s).
    assert [backstop(90.0, gather=False, round=r) for r in (1, 2, 3, 4, 5, 9)] == [
        90.0, 180.0, 360.0, 720.0, 900.0, 900.0]
    assert backstop(1200.0, gather=False, round=3) == 1200.0  # never under the lease
