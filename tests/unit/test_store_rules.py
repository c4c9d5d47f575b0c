"""The rules both stores share (runtime.backends.rules), tested once, directly."""

from __future__ import annotations

from dataclasses import replace

from runtime.backends.rules import (
    RunCache,
    dedup_cutoff,
    expired,
    gate_moved,
    read_gate,
    seen_within,
    state_bytes,
)
from runtime.errors import GateMovedError
from runtime.records import (
    Gate,
    GateWrite,
    RunRecord,
    RunState,
    StepKind,
    StepRecord,
    StepStatus,
)
from tests.stores.helpers import START, make_run


def test_an_item_is_live_up_to_its_expiry_and_forever_without_one() -> None:
    assert not expired(None, START)
    assert not expired(START, START)
    assert expired(START, START + 0.001)


def test_an_expired_gate_reads_with_its_version_and_no_state() -> None:
    assert read_gate({"n": 1}, 3, START, START) == Gate({"n": 1}, 3)
    assert read_gate({"n": 1}, 3, START, START + 1) == Gate(None, 3)
    assert read_gate({"n": 1}, 3, None, START + 1e9) == Gate({"n": 1}, 3)


def test_gate_moved_names_each_gate_and_the_version_expected() -> None:
    err = gate_moved([GateWrite("rate:fn", "k" * 150, {}, 2), GateWrite("idem:fn", "", {}, 0)])
    assert isinstance(err, GateMovedError)
    assert str(err) == (f"gate moved: 'rate:fn' key {'k' * 100!r} (expected version 2), "
                        "'idem:fn' key '' (expected version 0)")


def test_an_event_id_is_seen_for_exactly_its_window() -> None:
    assert dedup_cutoff(START, 60) == START - 60
    assert seen_within(START - 59.9, now=START, ttl=60)
    assert not seen_within(START - 60, now=START, ttl=60)


def test_the_run_cache_keeps_the_newest_view_of_a_run() -> None:
    cache = RunCache(2)
    v2 = RunState(replace(make_run(), version=2), {})
    cache.put(v2)
    cache.put(RunState(replace(make_run(), version=1), {}))  # a slower reader's older view
    assert cache.get("r1") is v2
    again = RunState(replace(make_run(created_at=START + 5), version=0), {})
    cache.put(again)  # another run under the same id replaces it, whatever its version
    assert cache.get("r1") is again
    cache.drop("r1")
    assert cache.get("r1") is None


def test_the_run_cache_forgets_the_least_recently_stored_run() -> None:
    cache = RunCache(2)
    for run_id in ("a", "b", "c"):
        cache.put(RunState(make_run(run_id), {}))
    assert [cache.get(r) is not None for r in ("a", "b", "c")] == [False, True, True]
    cache.size = 0  # the bench turns the cache off this way
    cache.put(RunState(make_run("d"), {}))
    assert cache.get("d") is None and cache.get("c") is None


def test_the_run_cache_is_bounded_by_bytes_as_well_as_by_count() -> None:
    # Runs with large outputs fill the cache's bytes long before its count: the oldest go
    # first, and a run larger than the whole budget is not kept at all.
    def run(run_id: str, outputs: int) -> RunState:
        steps = {f"s{i}": StepRecord(f"s{i}", f"s{i}", StepKind.RUN, StepStatus.COMPLETED,
                                     detail={"output_bytes": 100_000}) for i in range(outputs)}
        return RunState(RunRecord(run_id, "f", ({"id": run_id},)), steps)

    one = state_bytes(run("a", 2))
    assert one == 1024 * 3 + 5 * 200_000  # decoded: about five times the JSON
    cache = RunCache(256, max_bytes=3 * one)
    for name in "abcd":
        cache.put(run(name, 2))
    assert [k for k in "abcd" if cache.get(k) is not None] == ["b", "c", "d"]
    cache.put(run("huge", 10))  # 5 MB of its own: over the 3-run budget
    assert cache.get("huge") is None
    assert [k for k in "abcd" if cache.get(k) is not None] == ["b", "c", "d"]  # kept
    cache.drop("b")
    cache.put(run("e", 2))
    assert [k for k in "bcde" if cache.get(k) is not None] == ["c", "d", "e"]
