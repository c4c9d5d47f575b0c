"""The Store contract, run on every implementation: SqliteStore and DynamoStore (DynamoDB Local).

What only one backend does (SQLite across processes; DynamoDB's item layout, pagination,
TTL and error translation) is tested next to it, in tests/local and tests/aws.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import pytest

from runtime.backends.aws.store import DynamoStore
from runtime.concurrency import LinePlace, SlotLease
from runtime.errors import GateMovedError
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import RunQuery, Store
from runtime.records import (
    Commit,
    ErrorInfo,
    EventOut,
    Gate,
    GateWrite,
    Message,
    MessageKind,
    ParentRef,
    RunPatch,
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    Waiter,
    WaiterKind,
)
from tests.stores.conftest import TABLE
from tests.stores.helpers import START, make_run, step, waiter

PAID = {"name": "order/paid", "data": {"x": 1}}  # the event helpers' waiter() matches


def _race(attempt: Callable[[int], bool], n: int = 8) -> list[int]:
    """Run ``attempt(0..n-1)`` on ``n`` threads at once; the numbers whose attempt won."""
    wins: list[int] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        if attempt(k):
            with lock:
                wins.append(k)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


# -- create_run ----------------------------------------------------------------------------


def listed(runs: list[RunRecord]) -> list[RunRecord]:
    """Records as a listing promises them: all but what only a worker reads."""
    return [replace(r, last_msg=None, outbox=()) for r in runs]


def test_create_run_is_idempotent_and_keeps_the_first(store: Store) -> None:
    cancel = Waiter("order/cancelled", "r1", "fn", "cancel:0", WaiterKind.CANCEL)
    assert store.create_run(make_run(), [cancel]) is True
    assert store.create_run(make_run(function_id="other"), [waiter()]) is False
    state = store.load("r1")
    assert state is not None
    assert state.run == make_run()
    assert state.steps == {}
    assert store.waiters_for({"name": "order/cancelled"}) == [cancel]
    assert store.waiters_for(PAID) == []  # the refused create added nothing


def test_load_unknown_run_is_none(store: Store) -> None:
    assert store.load("nope") is None


def test_a_skipped_run_is_finished_and_listed_by_its_status(store: Store) -> None:
    skipped = RunRecord(run_id="s1", function_id="fn", events=({"id": "e1", "name": "a"},),
                        status=RunStatus.SKIPPED, created_at=START + 1, ended_at=START + 1)
    store.create_run(make_run("r1"), [])
    assert store.create_run(skipped, []) is True
    state = store.load("s1")
    assert state is not None
    assert state.run == skipped
    assert store.list_runs(RunQuery(status=RunStatus.SKIPPED)) == [skipped]
    assert store.list_runs(RunQuery(function_id="fn", status=RunStatus.SKIPPED)) == [skipped]
    assert [r.run_id for r in store.list_runs(RunQuery(status=RunStatus.RUNNING))] == ["r1"]
    assert [r.run_id for r in store.list_runs(RunQuery())] == ["s1", "r1"]
    assert store.commit("s1", Commit("m1", 0, steps=(StepWrite(step("a")),))) is False


def test_held_by_and_held_until_round_trip(store: Store) -> None:
    held = RunRecord(run_id="h1", function_id="fn", events=({"id": "e1", "name": "a"},),
                     created_at=START, held_by="throttle", held_until=START + 12.3456789)
    assert store.create_run(held, [])
    state = store.load("h1")
    assert state is not None
    assert state.run == held
    assert state.run.held(START + 12) and not state.run.held(START + 13)
    assert store.list_runs(RunQuery(function_id="fn")) == [held]
    assert store.commit("h1", Commit("m1", 0))  # a commit keeps them
    state = store.load("h1")
    assert state is not None
    assert (state.run.held_by, state.run.held_until) == ("throttle", START + 12.3456789)
    assert not state.run.held(START)  # version 1: the run has started


# -- gates ---------------------------------------------------------------------------------


def _gw(key: str = "k", state: dict[str, object] | None = None, expect: int = 0,
        scope: str = "throttle:fn", expires_at: float | None = None) -> GateWrite:
    return GateWrite(scope, key, state if state is not None else {"n": expect + 1}, expect,
                     expires_at)


def test_a_gate_never_written_reads_empty(store: Store) -> None:
    assert store.gate("throttle:fn", "k") == Gate()
    assert store.gate("throttle:fn", "") == Gate(None, 0)
    assert store.put_gate(_gw(state={"n": 2}, expect=1)) is False  # no version 1 to move on
    assert store.gate("throttle:fn", "k") == Gate()


def test_put_gate_is_conditional_on_the_version(store: Store) -> None:
    state = {"tat": START + 0.25, "ü": ["日本", None, 1.5]}
    assert store.put_gate(_gw(state=state)) is True
    assert store.gate("throttle:fn", "k") == Gate(state, 1)
    assert store.put_gate(_gw(state={"lost": True})) is False  # it exists now
    assert store.put_gate(_gw(state={"lost": True}, expect=2)) is False  # not yet version 2
    assert store.gate("throttle:fn", "k") == Gate(state, 1)
    assert store.put_gate(_gw(state={"n": 2}, expect=1)) is True
    assert store.put_gate(_gw(state={"lost": True}, expect=1)) is False
    assert store.gate("throttle:fn", "k") == Gate({"n": 2}, 2)
    # Other keys and scopes are other gates.
    assert store.gate("throttle:fn", "k2") == Gate()
    assert store.gate("throttle:other", "k") == Gate()
    assert store.put_gate(_gw(scope="throttle:other")) is True
    assert store.gate("throttle:other", "k") == Gate({"n": 1}, 1)
    assert store.gate("throttle:fn", "k") == Gate({"n": 2}, 2)


def test_an_expired_gate_reads_without_state_and_keeps_its_version(
    store: Store, clock: FakeClock
) -> None:
    assert store.put_gate(_gw(state={"a": 1}, expires_at=START + 60.5))
    clock.advance(60.5)
    assert store.gate("throttle:fn", "k") == Gate({"a": 1}, 1)  # expires_at itself: alive
    clock.advance(0.25)
    assert store.gate("throttle:fn", "k") == Gate(None, 1)
    assert store.put_gate(_gw(state={"b": 2})) is False  # expired is not absent
    assert store.put_gate(_gw(state={"b": 2}, expect=1, expires_at=START + 3600)) is True
    assert store.gate("throttle:fn", "k") == Gate({"b": 2}, 2)
    assert store.put_gate(_gw(state={"c": 3}, expect=2)) is True  # no expiry now
    clock.advance(86400 * 3)
    assert store.gate("throttle:fn", "k") == Gate({"c": 3}, 3)


def test_gate_keys_long_empty_and_look_alike_are_distinct(store: Store) -> None:
    # DynamoDB cannot key by "" nor by more than 1 KB: none of that may show.
    keys = ["", "-", "#", "--", "#-", "#sha256:ab", "sha256:ab", "x" * 2000, "x" * 1999 + "y",
            "é" * 256, "é" * 257, "日本" * 300]
    for i, key in enumerate(keys):
        assert store.put_gate(_gw(key, {"i": i})) is True, key[:20]
    for i, key in enumerate(keys):
        assert store.gate("throttle:fn", key) == Gate({"i": i}, 1), key[:20]
        assert store.put_gate(_gw(key, {"i": -i})) is False
        assert store.put_gate(_gw(key, {"i": -i}, expect=1)) is True
    assert [store.gate("throttle:fn", k) for k in keys] == [
        Gate({"i": -i}, 2) for i in range(len(keys))]


def test_create_run_writes_its_gates_with_the_run(store: Store) -> None:
    throttle = _gw("", {"tat": START + 1})
    idem = _gw("order-1", {"run_id": "r1"}, scope="idempotency:fn", expires_at=START + 86400)
    assert store.create_run(make_run(), [waiter()], [throttle, idem]) is True
    assert store.gate("throttle:fn", "") == Gate({"tat": START + 1}, 1)
    assert store.gate("idempotency:fn", "order-1") == Gate({"run_id": "r1"}, 1)
    assert store.load("r1") is not None
    assert store.waiters_for(PAID) == [waiter()]
    # The next run moves the throttle on from the version it read.
    assert store.create_run(make_run("r2"), [], [_gw("", {"tat": START + 2}, expect=1)])
    assert store.gate("throttle:fn", "") == Gate({"tat": START + 2}, 2)
    assert store.create_run(make_run("r3"), [], []) is True  # no gates: as before


# -- concurrency slots and their lines -----------------------------------------------------


def _lease(index: int, token: str, expires: float, shard: int = 0, key: str = "k",
           scope: str = "concurrency:fn") -> SlotLease:
    return SlotLease(scope, key, shard, index, token, f"run/{token}", expires)


def _place(work: str, rank: float, rnd: int = 1, woken: float | None = None,
           key: str = "k", shard: int = 0) -> LinePlace:
    message = Message(MessageKind.CONTINUE, "fn", work.split("/")[0], id="m", version=0)
    return LinePlace("concurrency:fn", key, shard, rank, work, message.to_json(), rnd,
                     START + 600, woken)


def test_a_slot_is_claimed_once_until_freed_or_lapsed(store: Store) -> None:
    assert store.shard_leases("concurrency:fn", "k", 0) == []
    mine = _lease(0, "a", START + 90)
    assert store.claim_slot(mine, START) is True
    assert store.claim_slot(_lease(0, "b", START + 90), START + 1) is False  # held
    assert store.claim_slot(_lease(1, "b", START + 90), START + 1) is True  # another slot
    assert store.claim_slot(_lease(0, "c", START + 90, shard=1), START) is True  # shard
    assert store.claim_slot(_lease(0, "c", START + 90, key="k2"), START) is True  # key
    assert store.shard_leases("concurrency:fn", "k", 0) == [mine, _lease(1, "b", START + 90)]
    store.free_slot(_lease(0, "not-mine", START + 90))  # another token's: nothing happens
    assert store.claim_slot(_lease(0, "d", START + 200), START + 2) is False
    store.free_slot(mine)
    store.free_slot(mine)  # idempotent
    assert [x.token for x in store.shard_leases("concurrency:fn", "k", 0)] == ["b"]
    assert store.claim_slot(_lease(0, "d", START + 200), START + 2) is True
    # A lease past its expiry (its holder crashed) leaves its slot free to claim.
    assert store.claim_slot(_lease(1, "e", START + 300), START + 90) is True
    assert [x.token for x in store.shard_leases("concurrency:fn", "k", 0)] == ["d", "e"]


def test_one_of_racing_claims_of_a_slot_wins(store: Store) -> None:
    wins = _race(lambda k: store.claim_slot(_lease(3, f"t{k}", START + 90), START))
    assert len(wins) == 1
    assert [x.token for x in store.shard_leases("concurrency:fn", "k", 0)] == [f"t{wins[0]}"]


def test_a_line_reads_in_rank_order_and_places_change_on_condition(store: Store) -> None:
    assert store.line("concurrency:fn", "k", 0, 10) == []
    late, early, tied = _place("r2/m", START + 5), _place("r1/m", START - 120), \
        _place("r0/m", START + 5)
    other = _place("r9/m", START - 500, shard=1)
    for p in (late, early, tied, other):
        assert store.put_place(p, None) is True
    assert store.put_place(late, None) is False  # it exists
    assert store.line("concurrency:fn", "k", 0, 10) == [early, tied, late]
    assert store.line("concurrency:fn", "k", 0, 2) == [early, tied]  # a bounded read
    assert store.line("concurrency:fn", "k", 1, 10) == [other]  # another shard of the line
    assert store.line("concurrency:fn", "k2", 0, 10) == []
    assert store.place("concurrency:fn", "k", 0, START + 5, "r2/m") == late
    assert store.place("concurrency:fn", "k", 0, START + 6, "r2/m") is None
    assert store.place("concurrency:fn", "k", 1, START + 5, "r2/m") is None
    # The next round needs the stored round (and woken mark); a copy's write is refused.
    nxt = replace(late, round=2)
    assert store.put_place(nxt, 2) is False
    assert store.put_place(nxt, 1, START) is False  # it was never woken
    assert store.put_place(nxt, 1) is True
    assert store.put_place(replace(late, round=3), 1) is False
    wake = replace(nxt, woken=START + 7)
    assert store.put_place(wake, 2) is True
    assert store.put_place(replace(nxt, woken=START + 8), 2) is False  # woken by another
    assert store.place("concurrency:fn", "k", 0, START + 5, "r2/m") == wake
    assert store.put_place(replace(nxt, round=3), 2, START + 7) is True
    store.leave_line("concurrency:fn", "k", 0, START - 120, "r1/m")
    store.leave_line("concurrency:fn", "k", 0, START - 120, "r1/m")  # idempotent
    assert [p.work for p in store.line("concurrency:fn", "k", 0, 10)] == ["r0/m", "r2/m"]



def test_create_run_whose_gate_moved_writes_nothing(store: Store) -> None:
    assert store.put_gate(_gw("k", {"v": 1}))
    fresh = _gw("other", {"v": "fresh"})
    for stale in (_gw("k", {"v": "stale"}), _gw("k", {"v": "stale"}, expect=2)):
        with pytest.raises(GateMovedError, match="throttle:fn"):
            store.create_run(make_run(), [waiter()], [fresh, stale])
        assert store.load("r1") is None
        assert store.list_runs(RunQuery()) == []
        assert store.waiters_for(PAID) == []
        assert store.gate("throttle:fn", "other") == Gate()  # the gate that held: not written
        assert store.gate("throttle:fn", "k") == Gate({"v": 1}, 1)
    # Read again, write again: through.
    assert store.create_run(make_run(), [waiter()], [fresh, _gw("k", {"v": 2}, expect=1)])
    assert store.gate("throttle:fn", "k") == Gate({"v": 2}, 2)
    assert store.gate("throttle:fn", "other") == Gate({"v": "fresh"}, 1)


def test_an_existing_run_wins_over_a_moved_gate(store: Store) -> None:
    assert store.create_run(make_run(), [], [_gw("k", {"v": 1})])
    # A redelivered start: its gate moved (it wrote it itself), yet the answer is "exists".
    assert store.create_run(make_run(), [waiter()], [_gw("k", {"v": 1}), _gw("new")]) is False
    # And when the gates did not move, the existing run still writes none of them.
    assert store.create_run(make_run(), [], [_gw("k", {"v": 9}, expect=1), _gw("new")]) is False
    assert store.gate("throttle:fn", "k") == Gate({"v": 1}, 1)
    assert store.gate("throttle:fn", "new") == Gate()
    assert store.waiters_for(PAID) == []


def test_create_run_refuses_one_gate_written_twice(store: Store) -> None:
    with pytest.raises(ValueError, match="more than once"):
        store.create_run(make_run(), [], [_gw("k"), _gw("k", expect=1)])
    assert store.load("r1") is None
    assert store.gate("throttle:fn", "k") == Gate()


def test_list_gates_lists_a_scopes_live_gates_sorted_by_key(
    store: Store, clock: FakeClock
) -> None:
    # Keys whose DynamoDB sort keys ("-", "##y", "#-x", ...) sort otherwise than the keys do.
    for i, key in enumerate(["b", "é", "", "-x", "#y", "a"]):
        assert store.put_gate(_gw(key, {"i": i}, scope="debounce:fn"))
    assert store.put_gate(_gw("a2", {"v": 2}, scope="debounce:fn"))
    assert store.put_gate(_gw("a2", {"v": 3}, expect=1, scope="debounce:fn"))  # version 2
    assert store.put_gate(_gw("c", {"i": 6}, scope="debounce:fn", expires_at=START + 60))
    assert store.put_gate(_gw("d", {"i": 7}, scope="debounce:fn", expires_at=START + 10))
    assert store.put_gate(_gw("ab", {}, scope="debounce:fn"))  # an empty state is a state
    none = GateWrite("debounce:fn", "aa", cast(Any, None), 0)  # stored, but state-less
    assert store.put_gate(none)
    assert store.gate("debounce:fn", "aa") == Gate(None, 1)
    for key in ("a", "z"):  # another scope, and one that extends this one's name
        assert store.put_gate(_gw(key, {"other": True}, scope="debounce:fn2"))
        assert store.put_gate(_gw(key, {"other": True}, scope="debounce:f"))
    clock.advance(30)  # "d" expired; "c" not yet
    expect = [("", Gate({"i": 2}, 1)), ("#y", Gate({"i": 4}, 1)), ("-x", Gate({"i": 3}, 1)),
              ("a", Gate({"i": 5}, 1)), ("a2", Gate({"v": 3}, 2)), ("ab", Gate({}, 1)),
              ("b", Gate({"i": 0}, 1)), ("c", Gate({"i": 6}, 1)), ("é", Gate({"i": 1}, 1))]
    assert store.list_gates("debounce:fn") == expect
    assert store.list_gates("debounce:fn", limit=3) == expect[:3]
    assert store.list_gates("debounce:fn", limit=1) == expect[:1]
    assert store.list_gates("debounce:fn", limit=0) == []
    assert store.list_gates("debounce:fn2") == [("a", Gate({"other": True}, 1)),
                                                ("z", Gate({"other": True}, 1))]
    assert store.list_gates("debounce:nope") == []
    clock.advance(30)  # "c" expires at START + 60 exactly: still alive
    assert [k for k, _ in store.list_gates("debounce:fn")][-2:] == ["c", "é"]
    clock.advance(0.5)
    assert [k for k, _ in store.list_gates("debounce:fn")] == [
        "", "#y", "-x", "a", "a2", "ab", "b", "é"]


def test_racing_gate_writers_win_once_per_version(store: Store) -> None:
    wins = _race(lambda n: store.put_gate(_gw(state={"winner": n})))
    assert len(wins) == 1
    assert store.gate("throttle:fn", "k") == Gate({"winner": wins[0]}, 1)


# -- commit --------------------------------------------------------------------------------


def test_commit_applies_everything_and_bumps_the_version(store: Store) -> None:
    store.create_run(make_run(), [])
    nxt = Message(MessageKind.CONTINUE, "fn", "r1", id="m2", version=1)
    out = (EventOut({"id": "x", "name": "b"}), nxt)
    commit = Commit(msg_id="m1", expect_version=0, steps=(StepWrite(step("a", output=[1])),),
                    add_waiters=(waiter(),), outbox=out)
    assert store.commit("r1", commit) is True
    state = store.load("r1")
    assert state is not None
    assert state.run.version == 1
    assert state.run.last_msg == "m1"
    assert state.run.outbox == out
    assert state.steps == {"a": step("a", output=[1])}
    assert store.waiters_for(PAID) == [waiter()]


def test_commit_with_a_stale_version_writes_nothing(store: Store) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit(msg_id="m1", expect_version=0)) is True
    stale = Commit(msg_id="m2", expect_version=0, steps=(StepWrite(step("a")),),
                   run=RunPatch(status=RunStatus.COMPLETED), add_waiters=(waiter(),),
                   outbox=(EventOut({"id": "y", "name": "c"}),))
    assert store.commit("r1", stale) is False
    state = store.load("r1")
    assert state is not None
    assert (state.run.version, state.run.last_msg, state.run.status) == (1, "m1", "Running")
    assert state.run.outbox == ()
    assert state.steps == {}
    assert store.waiters_for(PAID) == []


def test_commit_on_unknown_run_is_refused_and_creates_nothing(store: Store) -> None:
    assert store.commit("ghost", Commit(msg_id="m", expect_version=0,
                                        steps=(StepWrite(step("a")),),
                                        add_waiters=(waiter("ghost"),))) is False
    assert store.load("ghost") is None
    assert store.list_runs(RunQuery()) == []
    assert store.waiters_for(PAID) == []


def test_step_expected_absent_refuses_an_existing_step(store: Store) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a", output=1)),)))
    assert not store.commit("r1", Commit("m2", 1, steps=(StepWrite(step("a", output=2)),)))
    state = store.load("r1")
    assert state is not None
    assert state.steps["a"].output == 1
    assert state.run.version == 1


def test_step_expected_status_and_attempt(store: Store) -> None:
    store.create_run(make_run(), [])
    retrying = step("a", StepStatus.RETRYING, attempt=2)
    assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(retrying),)))
    done = step("a", output="ok", attempt=2)

    def attempt(w: StepWrite) -> bool:
        return store.commit("r1", Commit("m2", 1, steps=(w,)))

    # Missing record, wrong status, wrong attempt: each refused.
    assert not attempt(StepWrite(step("b"), StepStatus.RETRYING, 0))
    assert not attempt(StepWrite(done, StepStatus.SCHEDULED, 2))
    assert not attempt(StepWrite(done, StepStatus.RETRYING, 1))
    assert attempt(StepWrite(done, StepStatus.RETRYING, 2))
    state = store.load("r1")
    assert state is not None
    assert state.steps == {"a": done}
    assert state.run.version == 2


def test_one_failing_step_condition_refuses_the_whole_commit(store: Store) -> None:
    store.create_run(make_run(), [])
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("b")),)))
    both = Commit("m2", 1, steps=(StepWrite(step("a")), StepWrite(step("b"))))  # b exists
    assert store.commit("r1", both) is False
    state = store.load("r1")
    assert state is not None
    assert set(state.steps) == {"b"}
    assert state.run.last_msg == "m1"


def test_run_patch_sets_given_fields_only(store: Store) -> None:
    store.create_run(make_run(), [])
    err = ErrorInfo("Boom", "bad")
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(attempt=1, error=err)))
    assert store.commit("r1", Commit("m2", 1, run=RunPatch(
        status=RunStatus.COMPLETED, output={"n": 1}, ended_at=START + 200)))
    state = store.load("r1")
    assert state is not None
    run = state.run
    assert (run.status, run.attempt, run.error, run.output, run.ended_at) == (
        RunStatus.COMPLETED, 1, err, {"n": 1}, START + 200)
    # the index moved too
    assert listed(store.list_runs(RunQuery(status=RunStatus.COMPLETED))) == listed([run])
    assert store.list_runs(RunQuery(status=RunStatus.RUNNING)) == []


def test_run_patch_clear_error_drops_the_error_only(store: Store) -> None:
    store.create_run(make_run(), [])
    err = ErrorInfo("Boom", "bad")
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(attempt=1, error=err)))
    assert store.commit("r1", Commit("m2", 1, run=RunPatch(
        status=RunStatus.COMPLETED, output={"n": 1}, ended_at=START + 200, clear_error=True)))
    state = store.load("r1")
    assert state is not None
    run = state.run
    assert (run.status, run.attempt, run.error, run.output, run.ended_at, run.version) == (
        RunStatus.COMPLETED, 1, None, {"n": 1}, START + 200, 2)
    assert listed(store.list_runs(RunQuery(status=RunStatus.COMPLETED))) == listed([run])


def test_finished_run_refuses_commits(store: Store) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(status=RunStatus.CANCELLED)))
    assert store.commit("r1", Commit("m2", 1, steps=(StepWrite(step("a")),))) is False
    state = store.load("r1")
    assert state is not None
    assert state.steps == {}
    assert state.run.version == 1


def test_waiters_are_added_and_removed_by_name_run_and_key(store: Store) -> None:
    store.create_run(make_run(), [])
    store.create_run(make_run("r2"), [])
    w1, w2, w3 = waiter("r1", "a"), waiter("r1", "b"), waiter("r2", "a")
    assert store.commit("r1", Commit("m1", 0, add_waiters=(w1, w2)))
    assert store.commit("r2", Commit("m1", 0, add_waiters=(w3,)))
    # Removal needs the identifying fields (and the expression, which gives the index).
    ident = Waiter("order/paid", "r1", "fn", "a", WaiterKind.STEP, "async.data.x == 1")
    assert store.commit("r1", Commit("m2", 1, remove_waiters=(ident,)))
    assert sorted(store.waiters_for(PAID), key=lambda w: (w.run_id, w.key)) == [w2, w3]


def test_a_waiter_both_added_and_removed_in_one_commit_is_kept(store: Store) -> None:
    # DynamoDB refuses two actions on one item in a transaction; SQLite deletes then inserts.
    store.create_run(make_run(), [])
    w = waiter()
    assert store.commit("r1", Commit("m1", 0, add_waiters=(w,), remove_waiters=(w, w)))
    assert store.waiters_for(PAID) == [w]


def _w(run_id: str, expression: str, event: str = "order/paid") -> Waiter:
    return Waiter(event, run_id, "fn", "wait:0", WaiterKind.STEP, expression, START + 500)


def _found(store: Store, data: dict[str, object], name: str = "order/paid") -> list[str]:
    return sorted(w.run_id for w in store.waiters_for({"name": name, "data": data}))


def test_an_event_reads_only_the_waiters_its_value_could_match(store: Store) -> None:
    # 40 open orders wait for their own payment: a payment reads its order's waiter (and
    # those whose expression has no equality to index by), not the other 39.
    for i in range(40):
        store.create_run(make_run(f"o{i}"), [_w(f"o{i}", f'"ord_{i}" == async.data.order_id')])
    store.create_run(make_run("any"), [_w("any", "async.data.amount > 10")])
    store.create_run(make_run("either"), [_w("either", 'async.data.order_id == "ord_3" || true')])
    assert _found(store, {"order_id": "ord_7"}) == ["any", "either", "o7"]
    assert _found(store, {"order_id": "ord_99"}) == ["any", "either"]
    assert _found(store, {}) == ["any", "either"]
    assert _found(store, {"order_id": ["ord_7"]}) == ["any", "either"]  # not a scalar
    assert _found(store, {"order_id": "ord_7"}, name="order/shipped") == []


def test_the_value_index_keeps_cel_equality(store: Store) -> None:
    # 2 == 2.0 in stepkit's CEL; "2", true and 1 are other values.
    store.create_run(make_run("int"), [_w("int", "async.data.n == 2 && async.data.ok == true")])
    store.create_run(make_run("str"), [_w("str", 'async.data.n == "2"')])
    store.create_run(make_run("bool"), [_w("bool", "async.data.ok == true && async.data.n > 0")])
    long = "x" * 5000  # indexed by digest: DynamoDB keys are at most 2 KB
    store.create_run(make_run("long"), [_w("long", f'async.data.n == "{long}"')])
    assert _found(store, {"n": 2.0, "ok": True}) == ["bool", "int"]
    assert _found(store, {"n": "2", "ok": 1}) == ["str"]
    assert _found(store, {"n": 1, "ok": True}) == ["bool"]
    assert _found(store, {"n": long}) == ["long"]


def test_indexed_waiters_are_removed_and_found_by_a_fresh_store(store: Store) -> None:
    a, b = _w("a", '"k1" == async.data.key'), _w("b", '"k1" == async.data.key')
    store.create_run(make_run("a"), [a])
    store.create_run(make_run("b"), [])
    assert store.commit("b", Commit("m1", 0, add_waiters=(b,)))
    assert _found(store, {"key": "k1"}) == ["a", "b"]
    if isinstance(store, DynamoStore):  # another container: knows the paths from the table
        store = DynamoStore(TABLE, client=store.client, clock=store.clock)
    assert _found(store, {"key": "k1"}) == ["a", "b"]
    assert store.commit("b", Commit("m2", 1, remove_waiters=(b,)))
    store.remove_waiters([a])
    assert _found(store, {"key": "k1"}) == []


# -- the records ---------------------------------------------------------------------------


def test_a_record_with_every_field_round_trips_exactly(store: Store) -> None:
    event = {"id": "e1", "name": "order/paid", "ts": 1772438400123, "user": {"ü": "ß"},
             "data": {"amount": 0.1 + 0.2, "note": "café ☕ 日本", "tiny": 5e-324,
                      "nested": {"list": [1, 2.000001, None, True, {"x": -0.0}]}}}
    err = ErrorInfo("PaymentError", "déclinée ☹", retriable=False, stack="Traceback\n  ...")
    wake = Message(MessageKind.WAKE, "billing/charge", "run-1", id="m-9", version=3,
                   key="sleep:1", attempt=2, due=START + 0.1234567, payload={"events": [event]})
    run = RunRecord(
        run_id="run-1", function_id="billing/charge", events=(event, {"id": "e2", "name": "b"}),
        version=0, attempt=2, created_at=START + 0.1234567, error=err,
        parent=ParentRef("parent-run", "billing/parent", "invoke:2"),
        deadline=START + 86400 * 365.25 + 1e-6, last_msg="start-run-1",
        outbox=(wake, EventOut(event)),
    )
    w = Waiter("order/ünïcode", "run-1", "billing/charge", "wait:0", WaiterKind.STEP,
               "async.data.amount > 0.3", START + 0.30000000000000004)
    assert store.create_run(run, [w])
    state = store.load("run-1")
    assert state is not None
    assert state.run == run
    assert state.run.created_at == START + 0.1234567  # exact, not approximately
    assert store.waiters_for({"name": "order/ünïcode"}) == [w]

    rec = StepRecord(key="fetch:1", id="fetch", kind=StepKind.INVOKE, status=StepStatus.RETRYING,
                     attempt=3, output={"π": 3.141592653589793, "big": 1.7976931348623157e308},
                     error=err, wake_at=START + 1e-6, branch=True, started_at=START - 0.5,
                     ended_at=START + 7.25, detail={"child_run_id": "c-1", "ü": [1.5, None]})
    patch = RunPatch(status=RunStatus.COMPLETED, attempt=3, output=[event, "日本"],
                     error=err, ended_at=START + 9.999999)
    assert store.commit("run-1", Commit("m-10", 0, steps=(StepWrite(rec),), run=patch,
                                        outbox=(EventOut({"id": "done", "name": "x"}),)))
    state = store.load("run-1")
    assert state is not None
    assert state.steps == {"fetch:1": rec}
    assert state.run == RunRecord(
        **{**run.__dict__, "status": RunStatus.COMPLETED, "version": 1, "attempt": 3,
           "output": [event, "日本"], "ended_at": START + 9.999999, "last_msg": "m-10",
           "outbox": (EventOut({"id": "done", "name": "x"}),)})


# -- events --------------------------------------------------------------------------------


def test_remember_event_dedups_within_ttl(store: Store) -> None:
    e = {"id": "e1", "name": "user/signup", "data": {"k": "é"}, "user": {}, "ts": 1}
    assert store.remember_event(e, now=START, ttl=60) is True
    assert store.remember_event(e, now=START + 59, ttl=60) is False
    assert store.remember_event({**e, "name": "other"}, now=START + 59, ttl=60) is False
    assert store.remember_event(e, now=START + 61, ttl=60) is True  # the old entry expired
    assert store.remember_event(e, now=START + 62, ttl=60) is False  # and the new one counts
    assert store.list_events() == [e]


def test_list_events_newest_first_with_limit(store: Store) -> None:
    for i in range(5):
        store.remember_event({"id": f"e{i}", "name": "n"}, now=START - 5 + i, ttl=60)
    assert [e["id"] for e in store.list_events(3)] == ["e4", "e3", "e2"]
    assert [e["id"] for e in store.list_events()] == ["e4", "e3", "e2", "e1", "e0"]
    assert store.list_events(0) == []


# -- listing -------------------------------------------------------------------------------


def test_list_runs_filters_newest_first(store: Store) -> None:
    store.create_run(make_run("a", "f1", START + 1), [])
    store.create_run(make_run("b", "f2", START + 2), [])
    store.create_run(make_run("c", "f1", START + 3), [])
    store.commit("a", Commit("m", 0, run=RunPatch(status=RunStatus.FAILED)))

    def ids(q: RunQuery) -> list[str]:
        return [r.run_id for r in store.list_runs(q)]

    assert ids(RunQuery()) == ["c", "b", "a"]
    assert ids(RunQuery(limit=2)) == ["c", "b"]
    assert ids(RunQuery(function_id="f1")) == ["c", "a"]
    assert ids(RunQuery(status=RunStatus.RUNNING)) == ["c", "b"]
    assert ids(RunQuery(function_id="f1", status=RunStatus.FAILED)) == ["a"]
    assert ids(RunQuery(function_id="nope")) == []
    assert ids(RunQuery(limit=0)) == []
    assert store.list_runs(RunQuery(function_id="f2")) == [make_run("b", "f2", START + 2)]
    # A time filter: created at or after `since`, with any other filter.
    assert ids(RunQuery(since=START + 2)) == ["c", "b"]
    assert ids(RunQuery(since=START + 2.0005)) == ["c"]  # finer than a millisecond
    assert ids(RunQuery(function_id="f1", since=START + 2)) == ["c"]
    assert ids(RunQuery(status=RunStatus.FAILED, since=START + 2)) == []
    assert ids(RunQuery(since=START + 4)) == []


# -- concurrency ---------------------------------------------------------------------------


def test_racing_threads_commit_each_version_once(store: Store) -> None:
    store.create_run(make_run(), [])
    wins = _race(
        lambda n: store.commit("r1", Commit(f"m{n}", 0, steps=(StepWrite(step(f"s{n}")),)))
    )
    state = store.load("r1")
    assert state is not None
    assert len(wins) == 1
    assert list(state.steps) == [f"s{wins[0]}"]
    assert state.run.version == 1
    assert state.run.last_msg == f"m{wins[0]}"


def test_racing_threads_lose_no_update(store: Store) -> None:
    store.create_run(make_run(), [])

    def worker(name: str) -> None:
        done = 0
        while done < 10:
            state = store.load("r1")
            assert state is not None
            key = f"{name}-{done}"
            if store.commit("r1", Commit(key, state.run.version, steps=(StepWrite(step(key)),))):
                done += 1

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = store.load("r1")
    assert state is not None
    assert state.run.version == 30
    assert len(state.steps) == 30


def test_a_delivery_mark_is_found_by_the_next_delivery_until_it_lapses(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    assert store.mark_delivery("r1", "m1", now=now) is False  # the first: nobody was here
    assert store.mark_delivery("r1", "m1", now=now + 60) is True  # an earlier one died
    assert store.mark_delivery("r1", "m2", now=now + 60) is False  # per message
    assert store.mark_delivery("r2", "m1", now=now + 60) is False  # per run
    # Two days on, a mark is gone (TTL), even where the table still holds it.
    assert store.mark_delivery("r1", "m1", now=now + 3 * 86_400) is False
