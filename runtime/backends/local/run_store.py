"""Runs in SQLite: run rows, step rows and the commit log, each change one transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from runtime.backends.local.database import Database, Tables, dumps
from runtime.backends.local.gate_store import gate_version, purge_gates, put_gate
from runtime.backends.local.waiter_store import delete_waiters, put_waiters
from runtime.backends.rules import MARK_SECONDS, RunCache, commit_holds, expired, gate_moved
from runtime.orchestration.protocols import Clock, RunQuery
from runtime.records import (
    Commit,
    Committed,
    GateWrite,
    RunRecord,
    RunState,
    StepKind,
    StepRecord,
    Waiter,
    check_distinct,
    committed_run,
    outgoing_from_json,
)

CACHE_RUNS = 256  # runs whose steps a store keeps decoded between loads


class SqliteRunStore(Tables):
    """The :class:`~runtime.orchestration.protocols.RunStore` over SQLite.

    Args:
        db: The database (shared with the queue).
        clock: Time source for gate expiry.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        super().__init__(db, clock)
        # Runs this process loaded, at the version loaded: the next load of a run reads and
        # decodes only the steps written since (O(new records), not O(history)). Their
        # creation time tells a run from a later one that reuses its id.
        self._cache = RunCache(CACHE_RUNS)

    def load(self, run_id: str) -> RunState | None:
        """Load the run and all its step records, or ``None``.

        A run loaded before is brought up to date from the steps written since (each step
        row carries the version of the commit that wrote it), read in the same snapshot as
        the run row; the rest comes from this store's cache.
        """
        cached = self._cache.get(run_id)
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT json, version FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                self._cache.drop(run_id)
                return None
            run = RunRecord.from_json(json.loads(row[0]))
            if cached is not None and (cached.run.version > run.version
                                       or cached.run.created_at != run.created_at):
                cached = None  # another run under the same id (deleted and created again)
            since = cached.run.version if cached is not None else -1
            # rowid order is insertion order: steps come back in the order they first ran.
            rows = conn.execute(
                "SELECT key, json FROM steps WHERE run_id = ? AND run_version > ?"
                " ORDER BY rowid", (run_id, since),
            ).fetchall()
        steps = dict(cached.steps) if cached is not None else {}
        for k, j in rows:
            steps[k] = StepRecord.from_json(json.loads(j))
        if not self.db.holding():  # what may yet roll back is kept out of the cache
            self._cache.put(RunState(run, steps))
        return RunState(run, dict(steps))

    def create_run(
        self, run: RunRecord, waiters: Sequence[Waiter], gates: Sequence[GateWrite] = (),
        steps: Sequence[StepRecord] = (),
    ) -> bool:
        """Create ``run`` and its waiters, and write ``gates``, unless a run with its id exists.

        Returns:
            Whether it was created (``False``: the run exists; nothing written).

        Raises:
            GateMovedError: The run does not exist but a gate's version moved on; nothing
                was written.
        """
        check_distinct(gates)
        with self.db.write() as conn:
            if conn.execute(
                "SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)
            ).fetchone() is not None:
                return False  # checked first: an existing run wins over a moved gate
            moved = [g for g in gates if gate_version(conn, g.scope, g.key) != g.expect_version]
            if moved:  # nothing written yet: the transaction commits empty
                raise gate_moved(moved)
            conn.execute(
                "INSERT INTO runs (run_id, function_id, status, created_at, version, json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run.run_id, run.function_id, run.status.value, run.created_at, run.version,
                 dumps(run.to_json())),
            )
            conn.executemany(
                "INSERT INTO steps (run_id, key, json, run_version) VALUES (?, ?, ?, 0)",
                [(run.run_id, rec.key, dumps(rec.to_json())) for rec in steps])
            put_waiters(conn, waiters)
            if gates:
                purge_gates(conn, self.clock.now())
            for g in gates:
                put_gate(conn, g)
            return True

    def persist(self) -> None:
        """Commit the writes this thread's message handling holds open (see the Store protocol)."""
        self.db.release()

    def commit(self, run_id: str, commit: Commit) -> bool:
        """Apply ``commit`` atomically if its conditions hold (see the Store protocol).

        The conditions are :func:`~runtime.records.commit_holds`, checked on what this
        write transaction reads, so nothing can change between the check and the writes.
        """
        with self.db.write() as conn:
            state = _stored(conn, run_id, commit)
            # Every condition is checked before anything is written, so a refusal leaves
            # the transaction empty: committing it changes nothing, exactly like a rollback.
            if state is None or not commit_holds(state, commit):
                return False
            for w in commit.steps:
                conn.execute(
                    "INSERT INTO steps (run_id, key, json, run_version) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (run_id, key) DO UPDATE SET json = excluded.json,"
                    " run_version = excluded.run_version",
                    (run_id, w.record.key, dumps(w.record.to_json()), commit.expect_version + 1),
                )
            run = committed_run(state.run, commit)
            conn.execute(
                "UPDATE runs SET status = ?, version = ?, json = ? WHERE run_id = ?",
                (run.status.value, run.version, dumps(run.to_json()), run_id),
            )
            delete_waiters(conn, commit.remove_waiters)
            put_waiters(conn, commit.add_waiters)
            conn.execute(
                "INSERT OR REPLACE INTO commits (run_id, msg_id, version, json)"
                " VALUES (?, ?, ?, ?)",
                (run_id, commit.msg_id, run.version, dumps({
                    "outbox": [o.to_json() for o in commit.outbox],
                    "step_keys": [w.record.key for w in commit.steps],
                })),
            )
            # Handling a queue message: its sends and its ack join this transaction.
            self.db.hold()
            return True

    def committed(self, run_id: str, msg_id: str) -> Committed | None:
        """The commit message ``msg_id`` applied to the run, if any."""
        row = self.db.connection().execute(
            "SELECT version, json FROM commits WHERE run_id = ? AND msg_id = ?",
            (run_id, msg_id),
        ).fetchone()
        if row is None:
            return None
        raw = json.loads(row[1])
        return Committed(
            int(row[0]),
            tuple(outgoing_from_json(o) for o in raw["outbox"]),
            tuple(raw["step_keys"]),
        )

    def mark_delivery(self, run_id: str, msg_id: str, *, now: float) -> bool:
        """Mark a delivery that runs user code; whether an earlier one had (and died)."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT expires FROM delivery_marks WHERE run_id = ? AND msg_id = ?",
                (run_id, msg_id)).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO delivery_marks (run_id, msg_id, expires) VALUES (?, ?, ?)",
                (run_id, msg_id, now + MARK_SECONDS))
            conn.execute("DELETE FROM delivery_marks WHERE expires < ?", (now - MARK_SECONDS,))
        return row is not None and not expired(float(row[0]), now)

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """List runs matching ``query``, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if query.function_id is not None:
            where.append("function_id = ?")
            params.append(query.function_id)
        if query.status is not None:
            where.append("status = ?")
            params.append(query.status.value)
        if query.since is not None:
            where.append("created_at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("created_at < ?")
            params.append(query.until)
        sql = "SELECT json FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        rows = self.db.connection().execute(sql, (*params, query.limit)).fetchall()
        return [RunRecord.from_json(json.loads(j)) for (j,) in rows]

    def waits_resolved_by(self, event_id: str, limit: int) -> list[tuple[str, str, str, str]]:
        """``(run_id, function_id, status, step key)`` of each wait the event resolved.

        Newest run first; a resolved wait's output is the event. Steps a fork copied from its
        original (started before the fork was created) are left out: the event resolved the
        original's wait, not theirs.
        """
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT r.run_id, r.function_id, r.status, s.key FROM steps s"
                " JOIN runs r ON r.run_id = s.run_id"
                " WHERE json_extract(s.json, '$.kind') = ?"
                " AND json_extract(s.json, '$.output.id') = ?"
                " AND COALESCE(json_extract(s.json, '$.started_at'), r.created_at) >= r.created_at"
                " ORDER BY r.created_at DESC, r.run_id DESC, s.rowid LIMIT ?",
                (StepKind.WAIT.value, event_id, limit),
            ).fetchall()
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _stored(conn: sqlite3.Connection, run_id: str, commit: Commit) -> RunState | None:
    """The run as stored and the step records ``commit`` writes: all its conditions read.

    Read inside the commit's write transaction; the other steps are left out (no condition
    is on them).
    """
    row = conn.execute("SELECT json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    steps: dict[str, StepRecord] = {}
    for w in commit.steps:
        found = conn.execute(
            "SELECT json FROM steps WHERE run_id = ? AND key = ?", (run_id, w.record.key)
        ).fetchone()
        if found is not None:
            steps[w.record.key] = StepRecord.from_json(json.loads(found[0]))
    return RunState(RunRecord.from_json(json.loads(row[0])), steps)
