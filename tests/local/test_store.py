"""SqliteStore beyond the Store contract (tests/stores): stores on one database file, in one
process or several."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from runtime.backends.local.store import SqliteStore
from runtime.records import Commit, StepStatus, StepWrite, Waiter, WaiterKind
from tests.stores.helpers import make_run, step

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_load_after_another_stores_commits_has_every_step_in_order(tmp_path: Path) -> None:
    # `a` keeps the steps it loaded and reads only what was written since: the steps another
    # writer added and the one it rewrote (a retry that completed) must all show, in order.
    a, b = SqliteStore(tmp_path / "db"), SqliteStore(tmp_path / "db")
    try:
        a.create_run(make_run(), [])
        retrying = step("s1", StepStatus.RETRYING, attempt=1)
        assert a.commit("r1", Commit("m1", 0, steps=(StepWrite(step("s0")),
                                                     StepWrite(retrying))))
        first = a.load("r1")
        assert first is not None and first.steps["s1"].status is StepStatus.RETRYING
        done = step("s1", output="ok")
        assert b.commit("r1", Commit("m2", 1, steps=(StepWrite(done, StepStatus.RETRYING, 1),
                                                     StepWrite(step("s2")))))
        again = a.load("r1")
        assert again is not None and again.run.version == 2
        assert list(again.steps) == ["s0", "s1", "s2"]
        assert again.steps["s1"].output == "ok"
        assert first.steps["s1"].status is StepStatus.RETRYING  # what it returned is its own
        fresh = SqliteStore(tmp_path / "db").load("r1")
        assert fresh is not None and fresh.steps == again.steps
    finally:
        a.close()
        b.close()


def test_a_run_created_again_under_its_id_is_not_mixed_with_the_cached_one(
    tmp_path: Path,
) -> None:
    store, other = SqliteStore(tmp_path / "db"), SqliteStore(tmp_path / "db")
    try:
        store.create_run(make_run(), [])
        assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("old")),)))
        assert store.load("r1") is not None  # cached at version 1
        # Another process deletes the run (by hand, or retention) and it is created again,
        # further along than `store` saw it, before `store` loads it next.
        with other.db.write() as conn:
            conn.execute("DELETE FROM steps WHERE run_id = 'r1'")
            conn.execute("DELETE FROM runs WHERE run_id = 'r1'")
        other.create_run(replace(make_run(), created_at=make_run().created_at + 60), [])
        assert other.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a")),)))
        assert other.commit("r1", Commit("m2", 1, steps=(StepWrite(step("b")),)))
        again = store.load("r1")
        assert again is not None and list(again.steps) == ["a", "b"]
    finally:
        store.close()
        other.close()


def test_a_file_from_before_step_versions_gains_the_column_and_loads(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE steps (run_id TEXT NOT NULL, key TEXT NOT NULL,"
                " json TEXT NOT NULL, PRIMARY KEY (run_id, key))")
    old.commit()
    old.close()
    store = SqliteStore(path)
    try:
        store.create_run(make_run(), [])
        assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("s")),)))
        state = store.load("r1")
        assert state is not None and list(state.steps) == ["s"]
    finally:
        store.close()


def test_a_commit_on_a_step_stored_before_statuses_were_capitalized_holds(
    tmp_path: Path,
) -> None:
    # The SQLite store asks records.commit_holds, as the DynamoDB store does: a step record
    # reads "sleeping" as Sleeping, so a commit expecting Sleeping is applied.
    store = SqliteStore(tmp_path / "db")
    try:
        store.create_run(make_run(), [])
        asleep = step("nap", StepStatus.SLEEPING)
        assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(asleep),)))
        with store.db.write() as conn:
            conn.execute("UPDATE steps SET json = json_set(json, '$.status', 'sleeping')")
        woken = StepWrite(step("nap"), expect_status=StepStatus.SLEEPING, expect_attempt=0)
        assert not store.commit("r1", Commit("m2", 0, steps=(woken,)))  # stale version
        assert store.commit("r1", Commit("m2", 1, steps=(woken,)))
        state = store.load("r1")
        assert state is not None and state.steps["nap"].status == StepStatus.COMPLETED
    finally:
        store.close()


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


# -- files from earlier versions -----------------------------------------------------------


def test_a_database_from_before_the_value_index_keeps_its_waiters(tmp_path: Path) -> None:
    # The waiters table as it was: no index columns. Opening it adds them; its waiters stay
    # findable (as unindexed ones), and new ones are indexed.
    import json
    import sqlite3

    old = Waiter("order/paid", "r0", "fn", "w", WaiterKind.STEP, '"o1" == async.data.id')
    with sqlite3.connect(tmp_path / "db") as conn:
        conn.execute("CREATE TABLE waiters (event_name TEXT NOT NULL, run_id TEXT NOT NULL,"
                     " key TEXT NOT NULL, expires_at REAL, json TEXT NOT NULL,"
                     " PRIMARY KEY (event_name, run_id, key))")
        conn.execute("INSERT INTO waiters VALUES (?, ?, ?, ?, ?)",
                     ("order/paid", "r0", "w", None, json.dumps(old.to_json())))
    store = SqliteStore(tmp_path / "db")
    try:
        new = Waiter("order/paid", "r1", "fn", "w", WaiterKind.STEP, '"o2" == async.data.id')
        store.create_run(make_run("r1"), [new])
        assert store.waiters_for({"name": "order/paid", "data": {"id": "o2"}}) == [old, new]
        store.remove_waiters([old])
        assert store.waiters_for({"name": "order/paid", "data": {"id": "o1"}}) == []
    finally:
        store.close()


def test_durability_sets_sqlites_synchronous_and_refuses_other_values(tmp_path: Path) -> None:
    import pytest

    for durability, level in (("normal", 1), ("full", 2)):
        store = SqliteStore(tmp_path / f"{durability}.db", durability=durability)
        try:
            got = store.db.connection().execute("PRAGMA synchronous").fetchone()[0]
            assert got == level, durability
        finally:
            store.close()
    with pytest.raises(ValueError, match="durability must be one of normal, full, got 'fsync'"):
        SqliteStore(tmp_path / "x.db", durability="fsync")
