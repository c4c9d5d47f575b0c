"""SqliteStore: the conditional commit and the other atomic operations the orchestrator needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.backends.local.store import SqliteStore
from runtime.core.protocols import RunQuery
from runtime.records import (
    Commit,
    ErrorInfo,
    EventOut,
    Message,
    MessageKind,
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

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "db.sqlite3")
    yield s
    s.close()


def make_run(run_id: str = "r1", function_id: str = "fn", created_at: float = 100.0) -> RunRecord:
    return RunRecord(run_id=run_id, function_id=function_id, events=({"id": "e1", "name": "a"},),
                     created_at=created_at)


def step(key: str, status: StepStatus = StepStatus.COMPLETED, attempt: int = 0,
         output: object = None) -> StepRecord:
    return StepRecord(key=key, id=key, kind=StepKind.RUN, status=status, attempt=attempt,
                      output=output)


def waiter(run_id: str = "r1", key: str = "w", event: str = "order/paid") -> Waiter:
    return Waiter(event, run_id, "fn", key, WaiterKind.STEP, "async.data.x == 1", 500.0)


# -- create_run ----------------------------------------------------------------------------


def test_create_run_is_idempotent_and_keeps_the_first(store: SqliteStore) -> None:
    cancel = Waiter("order/cancelled", "r1", "fn", "cancel:0", WaiterKind.CANCEL)
    assert store.create_run(make_run(), [cancel]) is True
    assert store.create_run(make_run(function_id="other"), [waiter()]) is False
    state = store.load("r1")
    assert state is not None
    assert state.run == make_run()
    assert state.steps == {}
    assert store.waiters_for("order/cancelled") == [cancel]
    assert store.waiters_for("order/paid") == []  # the refused create added nothing


def test_load_unknown_run_is_none(store: SqliteStore) -> None:
    assert store.load("nope") is None


# -- commit --------------------------------------------------------------------------------


def test_commit_applies_everything_and_bumps_the_version(store: SqliteStore) -> None:
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
    assert store.waiters_for("order/paid") == [waiter()]


def test_commit_with_a_stale_version_writes_nothing(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit(msg_id="m1", expect_version=0)) is True
    stale = Commit(msg_id="m2", expect_version=0, steps=(StepWrite(step("a")),),
                   run=RunPatch(status=RunStatus.COMPLETED), add_waiters=(waiter(),))
    assert store.commit("r1", stale) is False
    state = store.load("r1")
    assert state is not None
    assert (state.run.version, state.run.last_msg, state.run.status) == (1, "m1", "Running")
    assert state.steps == {}
    assert store.waiters_for("order/paid") == []


def test_commit_on_unknown_run_is_refused(store: SqliteStore) -> None:
    assert store.commit("ghost", Commit(msg_id="m", expect_version=0)) is False


def test_step_expected_absent_refuses_an_existing_step(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a", output=1)),)))
    assert not store.commit("r1", Commit("m2", 1, steps=(StepWrite(step("a", output=2)),)))
    state = store.load("r1")
    assert state is not None
    assert state.steps["a"].output == 1
    assert state.run.version == 1


def test_step_expected_status_and_attempt(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    retrying = step("a", StepStatus.RETRYING, attempt=2)
    assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(retrying),)))
    done = step("a", output="ok", attempt=2)

    def attempt(w: StepWrite) -> bool:
        return store.commit("r1", Commit("m2", 1, steps=(w,)))

    # Missing row, wrong status, wrong attempt: each refused.
    assert not attempt(StepWrite(step("b"), StepStatus.RETRYING, 0))
    assert not attempt(StepWrite(done, StepStatus.SCHEDULED, 2))
    assert not attempt(StepWrite(done, StepStatus.RETRYING, 1))
    assert attempt(StepWrite(done, StepStatus.RETRYING, 2))
    state = store.load("r1")
    assert state is not None
    assert state.steps == {"a": done}
    assert state.run.version == 2


def test_one_failing_step_condition_refuses_the_whole_commit(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("b")),)))
    both = Commit("m2", 1, steps=(StepWrite(step("a")), StepWrite(step("b"))))  # b exists
    assert store.commit("r1", both) is False
    state = store.load("r1")
    assert state is not None
    assert set(state.steps) == {"b"}


def test_run_patch_sets_given_fields_only(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    err = ErrorInfo("Boom", "bad")
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(attempt=1, error=err)))
    assert store.commit("r1", Commit("m2", 1, run=RunPatch(
        status=RunStatus.COMPLETED, output={"n": 1}, ended_at=200.0)))
    state = store.load("r1")
    assert state is not None
    run = state.run
    assert (run.status, run.attempt, run.error, run.output, run.ended_at) == (
        RunStatus.COMPLETED, 1, err, {"n": 1}, 200.0)
    assert store.list_runs(RunQuery(status=RunStatus.COMPLETED)) == [run]  # column updated too


def test_finished_run_refuses_commits(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(status=RunStatus.CANCELLED)))
    assert store.commit("r1", Commit("m2", 1, steps=(StepWrite(step("a")),))) is False
    state = store.load("r1")
    assert state is not None
    assert state.steps == {}
    assert state.run.version == 1


def test_waiters_are_added_and_removed_by_name_run_and_key(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    store.create_run(make_run("r2"), [])
    w1, w2, w3 = waiter("r1", "a"), waiter("r1", "b"), waiter("r2", "a")
    assert store.commit("r1", Commit("m1", 0, add_waiters=(w1, w2)))
    assert store.commit("r2", Commit("m1", 0, add_waiters=(w3,)))
    # Removal needs only the identifying fields, as the orchestrator rebuilds them.
    ident = Waiter("order/paid", "r1", "fn", "a", WaiterKind.STEP)
    assert store.commit("r1", Commit("m2", 1, remove_waiters=(ident,)))
    assert sorted(store.waiters_for("order/paid"), key=lambda w: (w.run_id, w.key)) == [w2, w3]


# -- events --------------------------------------------------------------------------------


def test_remember_event_dedups_within_ttl(store: SqliteStore) -> None:
    e = {"id": "e1", "name": "user/signup", "data": {"k": "é"}, "user": {}, "ts": 1}
    assert store.remember_event(e, now=1000.0, ttl=60) is True
    assert store.remember_event(e, now=1059.0, ttl=60) is False
    assert store.remember_event({**e, "name": "other"}, now=1059.0, ttl=60) is False
    assert store.remember_event(e, now=1061.0, ttl=60) is True  # the old entry expired
    assert store.remember_event(e, now=1062.0, ttl=60) is False  # and the new one counts
    assert store.list_events() == [e]


def test_list_events_newest_first_with_limit(store: SqliteStore) -> None:
    for i in range(5):
        store.remember_event({"id": f"e{i}", "name": "n"}, now=float(i), ttl=60)
    assert [e["id"] for e in store.list_events(3)] == ["e4", "e3", "e2"]


# -- listing -------------------------------------------------------------------------------


def test_list_runs_filters_newest_first(store: SqliteStore) -> None:
    store.create_run(make_run("a", "f1", 1.0), [])
    store.create_run(make_run("b", "f2", 2.0), [])
    store.create_run(make_run("c", "f1", 3.0), [])
    store.commit("a", Commit("m", 0, run=RunPatch(status=RunStatus.FAILED)))
    ids = lambda q: [r.run_id for r in store.list_runs(q)]  # noqa: E731
    assert ids(RunQuery()) == ["c", "b", "a"]
    assert ids(RunQuery(limit=2)) == ["c", "b"]
    assert ids(RunQuery(function_id="f1")) == ["c", "a"]
    assert ids(RunQuery(status=RunStatus.RUNNING)) == ["c", "b"]
    assert ids(RunQuery(function_id="f1", status=RunStatus.FAILED)) == ["a"]


# -- concurrency ---------------------------------------------------------------------------


def test_two_stores_on_one_file_see_each_others_commits(tmp_path: Path) -> None:
    a, b = SqliteStore(tmp_path / "db"), SqliteStore(tmp_path / "db")
    try:
        a.create_run(make_run(), [])
        assert b.create_run(make_run(), []) is False
        assert b.commit("r1", Commit("m1", 0, steps=(StepWrite(step("s")),)))
        state = a.load("r1")
        assert state is not None
        assert state.run.version == 1
        assert "s" in state.steps
        assert a.commit("r1", Commit("m2", 0)) is False  # a's view of version 0 is stale
    finally:
        a.close()
        b.close()


def test_racing_threads_commit_each_version_once(store: SqliteStore) -> None:
    store.create_run(make_run(), [])
    wins: list[int] = []

    def race(n: int) -> None:
        if store.commit("r1", Commit(f"m{n}", 0, steps=(StepWrite(step(f"s{n}")),))):
            wins.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = store.load("r1")
    assert state is not None
    assert len(wins) == 1
    assert list(state.steps) == [f"s{wins[0]}"]
    assert state.run.version == 1


_WORKER = textwrap.dedent("""
    import sys
    from runtime.backends.local.store import SqliteStore
    from runtime.records import Commit, StepKind, StepRecord, StepStatus, StepWrite
    store = SqliteStore(sys.argv[1])
    name, done = sys.argv[2], 0
    while done < 25:
        state = store.load("r1")
        key = f"{name}-{done}"
        rec = StepRecord(key=key, id=key, kind=StepKind.RUN, status=StepStatus.COMPLETED)
        commit = Commit(key, state.run.version, steps=(StepWrite(rec),))
        if store.commit("r1", commit):
            done += 1
    store.close()
""")


def test_processes_racing_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = SqliteStore(path)
    store.create_run(make_run(), [])
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), f"p{i}"], cwd=ROOT)
        for i in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    state = store.load("r1")
    assert state is not None
    # Every successful commit was conditioned on the version it read: none overwrote another.
    assert state.run.version == 75
    assert len(state.steps) == 75
    store.close()
