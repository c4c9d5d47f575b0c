"""Run state in one SQLite file (WAL), shared by threads and processes.

Every change is one ``BEGIN IMMEDIATE`` transaction: SQLite then takes the write lock up front,
so two workers (threads or processes) racing to commit the same run serialize, and the loser
sees the winner's version and is refused — the atomic conditional write the orchestrator's
idempotency rests on.

While a worker handles a queue message (:meth:`Database.unit`), the transaction of a commit
that lands stays open: the writes that follow it (the sends of its outbox, the routing of its
events, the ack of the message and the lease of the next one) join it as savepoints, and the
whole is committed once at the end, or rolled back if the handling fails.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from runtime.core.clock import SystemClock
from runtime.core.protocols import Clock, RunQuery
from runtime.errors import GateMovedError
from runtime.expressions import event_index_keys
from runtime.records import (
    Commit,
    Committed,
    Gate,
    GateWrite,
    RunRecord,
    RunState,
    StepKind,
    StepRecord,
    StepWrite,
    Waiter,
    check_distinct,
    committed_run,
    outgoing_from_json,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
        function_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        version INTEGER NOT NULL,
        json TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS runs_by_time ON runs (created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_fn ON runs (function_id, created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at, run_id)",
    """CREATE TABLE IF NOT EXISTS steps (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        json TEXT NOT NULL,
        run_version INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, key))""",
    # The run version whose commit last wrote a step: a load reads only what is new.
    "CREATE INDEX IF NOT EXISTS steps_by_version ON steps (run_id, run_version)",
    # The commit log: each commit's outbox, found by the message that made it.
    """CREATE TABLE IF NOT EXISTS commits (
        run_id TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (run_id, msg_id))""",
    """CREATE TABLE IF NOT EXISTS waiters (
        event_name TEXT NOT NULL,
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        expires_at REAL,
        json TEXT NOT NULL,
        index_path TEXT NOT NULL DEFAULT '',
        index_value TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (event_name, run_id, key))""",
    # Waiters by the value their match needs (Waiter.index); '' for those without one.
    "CREATE INDEX IF NOT EXISTS waiters_by_value ON waiters (event_name, index_path, index_value)",
    # Which paths waiters of each event name are indexed by (never shrinks; a few per name).
    """CREATE TABLE IF NOT EXISTS waiter_paths (
        event_name TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (event_name, path))""",
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        received_at REAL NOT NULL,
        json TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (received_at)",
    # Events by name and timestamp, for the lookback of waits and cancel_on (see ARCHITECTURE).
    """CREATE TABLE IF NOT EXISTS event_timeline (
        name TEXT NOT NULL,
        ts INTEGER NOT NULL,
        id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (name, ts, id))""",
    # Flow-control gates: a JSON state under (scope, key), written on condition of its version.
    """CREATE TABLE IF NOT EXISTS gates (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        version INTEGER NOT NULL,
        state TEXT NOT NULL,
        expires_at REAL,
        PRIMARY KEY (scope, key))""",
    "CREATE INDEX IF NOT EXISTS gates_by_expiry ON gates (expires_at)",
)

#: Expired gates are deleted this long after they expire (like DynamoDB's lazy TTL), so a
#: writer holding the version of an expired gate it just read still finds it.
_GATE_GRACE = 86400.0
#: ``durability`` -> SQLite's ``synchronous`` (in WAL mode NORMAL survives a process crash).
DURABILITY = {"normal": "NORMAL", "full": "FULL"}
_CACHE_RUNS = 256  # runs whose steps a store keeps decoded between loads


def dumps(value: Any) -> str:
    """JSON text as stored: UTF-8 kept as is so the columns stay readable in ``sqlite3``."""
    return json.dumps(value, ensure_ascii=False)


class Database:
    """One SQLite file, opened once per thread and per process, in WAL mode.

    A connection per thread avoids sharing one connection's transaction state between
    threads; remembering the opening process id avoids using a connection inherited through
    ``fork``, which SQLite forbids.

    Args:
        path: The database file; created if missing.
        busy_timeout: Seconds to wait for another writer's lock before failing.
        durability: ``"normal"`` (SQLite ``synchronous=NORMAL``): a commit survives the
            process crashing, and the last commits may be lost if the machine loses power;
            ``"full"`` (``synchronous=FULL``): every commit is on disk before it returns, one
            sync per step (a step's writes are one transaction): about 1.4x the time per
            step of a 100-step run (``bench/local_overhead.py``).

    Raises:
        ValueError: ``durability`` is neither.
    """

    def __init__(
        self, path: str | Path, *, busy_timeout: float = 30.0, durability: str = "normal"
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(
                f"durability must be one of {', '.join(DURABILITY)}, got {durability!r}"
            )
        self.path = Path(path)
        self.durability = durability
        self._busy_timeout = busy_timeout
        self._local = threading.local()  # conn, pid, unit (a _Unit while handling a message)
        self._lock = threading.Lock()
        self._opened: list[tuple[int, sqlite3.Connection]] = []
        self._closed = False

    def connection(self) -> sqlite3.Connection:
        """Return the calling thread's connection, opening it on first use."""
        conn = cast(sqlite3.Connection | None, getattr(self._local, "conn", None))
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        with self._lock:
            if self._closed:
                raise RuntimeError(f"database {self.path} is closed")
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (Python's implicit
            # transactions would start a deferred one and upgrade it, risking SQLITE_BUSY).
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # only so close() may close it from another thread
            )
            self._opened.append((os.getpid(), conn))
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        self._enable_wal(conn)
        conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs a brief exclusive lock and may report "locked" without
        # waiting while another process creates the file; the mode then persists in the file.
        for attempt in range(50):
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Open a write transaction (``BEGIN IMMEDIATE``), committed unless the block raises.

        Inside a :meth:`unit` whose transaction is held, the block is a savepoint of it
        instead: it lands with the unit or not at all, and a block that raises undoes only
        its own writes.
        """
        conn = self.connection()
        unit: _Unit | None = getattr(self._local, "unit", None)
        if unit is not None and unit.held:
            if not conn.in_transaction:  # SQLite rolled it back itself (disk full, I/O error)
                raise sqlite3.OperationalError("the held transaction was rolled back")
            conn.execute("SAVEPOINT unit_write")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO unit_write")
                conn.execute("RELEASE unit_write")
                raise
            conn.execute("RELEASE unit_write")
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.hold = False
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            hold, self._local.hold = self._local.hold, False
        if unit is not None and (hold or unit.eager):
            unit.held = True  # committed when the unit ends
            return
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # never leave this thread's connection mid-transaction
                conn.execute("ROLLBACK")
            raise

    def hold(self) -> None:
        """Keep the current write transaction open until the :meth:`unit` ends (if in one).

        Called by a commit that landed: what the handling of the message writes after it
        joins its transaction. Outside a unit, the transaction commits as usual.
        """
        unit: _Unit | None = getattr(self._local, "unit", None)
        if unit is not None and not unit.held:
            self._local.hold = True

    def release(self) -> None:
        """Commit the unit's held transaction now; later writes commit one by one again.

        For a handling that goes on to run user code after a commit (a checkpointed chain):
        what it committed must be durable before the next step, and no lock held meanwhile.
        """
        unit: _Unit | None = getattr(self._local, "unit", None)
        if unit is None or not unit.held:
            return
        unit.held = False
        if not self.connection().in_transaction:
            raise sqlite3.OperationalError("the held transaction was rolled back")
        self._commit_held()

    def in_unit(self) -> bool:
        """Whether this thread is inside a :meth:`unit`."""
        return getattr(self._local, "unit", None) is not None

    def holding(self) -> bool:
        """Whether this thread holds a unit's open transaction (its writes may yet roll back)."""
        unit: _Unit | None = getattr(self._local, "unit", None)
        return unit is not None and unit.held

    @contextmanager
    def unit(self, *, eager: bool = False) -> Iterator[None]:
        """Group this thread's writes from the first held commit on into one transaction.

        Until a write calls :meth:`hold`, writes commit one by one as usual (so nothing is
        held while user code runs before a commit). From then on every write joins the held
        transaction, which commits when the block ends. If the block raises an ``Exception``
        (a failed send, say), what the held writes completed is committed before it
        propagates: exactly what writing them one by one would have left, each write that
        raised having undone its own savepoint. Any other ``BaseException`` (a crash, an
        interrupt) rolls all of it back, as a killed process would.

        Args:
            eager: Hold from the first write on (for work that runs no user code).
        """
        if getattr(self._local, "unit", None) is not None:
            raise RuntimeError("units do not nest")
        unit = _Unit(eager)
        self._local.unit = unit
        try:
            yield
        except Exception:
            self._local.unit = None
            if unit.held and self.connection().in_transaction:
                self._commit_held()
            raise
        except BaseException:
            self._local.unit = None
            if unit.held:
                conn = self.connection()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        self._local.unit = None
        if unit.held:
            if not self.connection().in_transaction:
                raise sqlite3.OperationalError("the held transaction was rolled back")
            self._commit_held()

    def _commit_held(self) -> None:
        conn = self.connection()
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Open a read transaction: every query in the block sees the same snapshot.

        Inside a held write transaction, the block reads in it (its own writes included).
        """
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def ensure_schema(self, statements: Sequence[str]) -> None:
        """Run ``CREATE ... IF NOT EXISTS`` statements in one transaction."""
        with self.write() as conn:
            for statement in statements:
                conn.execute(statement)

    def close(self) -> None:
        """Close the connections this process opened (those of a parent are not ours)."""
        with self._lock:
            self._closed = True
            mine = [c for pid, c in self._opened if pid == os.getpid()]
            self._opened = []
        for conn in mine:
            conn.close()


class _Unit:
    """One message's handling (:meth:`Database.unit`): whether its transaction is held open."""

    __slots__ = ("eager", "held")

    def __init__(self, eager: bool) -> None:
        self.eager = eager  # hold from the first write on, without waiting for a commit
        self.held = False


class SqliteStore:
    """The :class:`~runtime.core.protocols.Store` over SQLite.

    Args:
        path: The database file, or a :class:`Database` to share with the queue.
        clock: Time source for gate expiry (a FakeClock in tests); the system clock by default.
        durability: ``"normal"`` or ``"full"`` (see :class:`Database`).

    """

    def __init__(
        self, path: str | Path | Database, *, clock: Clock | None = None,
        durability: str = "normal",
    ) -> None:
        self.db = path if isinstance(path, Database) else Database(path, durability=durability)
        self.clock: Clock = clock or SystemClock()
        with self.db.write() as conn:  # a file from before the value index gains its columns
            have = {row[1] for row in conn.execute("PRAGMA table_info(waiters)")}
            if have and "index_path" not in have:
                conn.execute("ALTER TABLE waiters ADD COLUMN index_path TEXT NOT NULL DEFAULT ''")
                conn.execute(
                    "ALTER TABLE waiters ADD COLUMN index_value TEXT NOT NULL DEFAULT ''"
                )
            have = {row[1] for row in conn.execute("PRAGMA table_info(steps)")}
            if have and "run_version" not in have:  # steps of older files read as version 0
                conn.execute(
                    "ALTER TABLE steps ADD COLUMN run_version INTEGER NOT NULL DEFAULT 0"
                )
        self.db.ensure_schema(_SCHEMA)
        # Runs this process loaded, at the version loaded: the next load of a run reads and
        # decodes only the steps written since (O(new records), not O(history)).
        # (version, created_at, steps): the creation time tells a run from a later one that
        # reuses its id.
        self._cache: OrderedDict[str, tuple[int, float, dict[str, StepRecord]]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def load(self, run_id: str) -> RunState | None:
        """Load the run and all its step records, or ``None``.

        A run loaded before is brought up to date from the steps written since (each step
        row carries the version of the commit that wrote it), read in the same snapshot as
        the run row; the rest comes from this store's cache.
        """
        with self._cache_lock:
            cached = self._cache.get(run_id)
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT json, version FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                with self._cache_lock:
                    self._cache.pop(run_id, None)
                return None
            raw, version = json.loads(row[0]), int(row[1])
            created = raw["created_at"]
            if cached is not None and (cached[0] > version or cached[1] != created):
                cached = None  # another run under the same id (deleted and created again)
            since = cached[0] if cached is not None else -1
            # rowid order is insertion order: steps come back in the order they first ran.
            rows = conn.execute(
                "SELECT key, json FROM steps WHERE run_id = ? AND run_version > ?"
                " ORDER BY rowid", (run_id, since),
            ).fetchall()
        steps = dict(cached[2]) if cached is not None else {}
        for k, j in rows:
            steps[k] = StepRecord.from_json(json.loads(j))
        if self.db.holding():  # read what may yet roll back: keep it out of the cache
            return RunState(RunRecord.from_json(raw), steps)
        with self._cache_lock:
            self._cache[run_id] = (version, created, steps)
            self._cache.move_to_end(run_id)
            while len(self._cache) > _CACHE_RUNS:
                self._cache.popitem(last=False)
        return RunState(RunRecord.from_json(raw), dict(steps))

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
            moved = [g for g in gates if _gate_version(conn, g.scope, g.key) != g.expect_version]
            if moved:  # nothing written yet: the transaction commits empty
                raise GateMovedError("gate moved: " + ", ".join(
                    f"{g.scope!r} key {g.key[:100]!r} (expected version {g.expect_version})"
                    for g in moved))
            conn.execute(
                "INSERT INTO runs (run_id, function_id, status, created_at, version, json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run.run_id, run.function_id, run.status.value, run.created_at, run.version,
                 dumps(run.to_json())),
            )
            conn.executemany(
                "INSERT INTO steps (run_id, key, json, run_version) VALUES (?, ?, ?, 0)",
                [(run.run_id, rec.key, dumps(rec.to_json())) for rec in steps])
            _put_waiters(conn, waiters)
            if gates:
                self._purge_gates(conn)
            for g in gates:
                _put_gate(conn, g)
            return True

    def gate(self, scope: str, key: str) -> Gate:
        """The gate ``(scope, key)``; one past its ``expires_at`` reads with no state."""
        row = self.db.connection().execute(
            "SELECT version, state, expires_at FROM gates WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        if row is None:
            return Gate()
        version, state, expires_at = int(row[0]), row[1], row[2]
        if expires_at is not None and expires_at < self.clock.now():
            return Gate(None, version)
        return Gate(cast(dict[str, Any], json.loads(state)), version)

    def list_gates(self, scope: str, limit: int = 100) -> list[tuple[str, Gate]]:
        """Up to ``limit`` unexpired gates of ``scope`` with a state, sorted by key.

        Args:
            scope: The gates' scope, e.g. ``"debounce:fn"``.
            limit: The most gates to return.

        Returns:
            ``(key, gate)`` pairs; expired gates and those whose state is ``null`` are left out.
        """
        if limit <= 0:
            return []
        # The default BINARY collation compares UTF-8 bytes: code point order, as Python sorts.
        rows = self.db.connection().execute(
            "SELECT key, version, state FROM gates"
            " WHERE scope = ? AND (expires_at IS NULL OR expires_at >= ?) AND state != 'null'"
            " ORDER BY key LIMIT ?",
            (scope, self.clock.now(), limit),
        ).fetchall()
        return [(str(key), Gate(cast(dict[str, Any], json.loads(state)), int(version)))
                for key, version, state in rows]

    def put_gate(self, write: GateWrite) -> bool:
        """Write a gate if its version is still ``write.expect_version`` (0: absent)."""
        with self.db.write() as conn:
            if _gate_version(conn, write.scope, write.key) != write.expect_version:
                return False
            self._purge_gates(conn)
            _put_gate(conn, write)
            return True

    def _purge_gates(self, conn: sqlite3.Connection) -> None:
        """Delete gates expired for a while (a deleted gate reads as version 0)."""
        conn.execute("DELETE FROM gates WHERE expires_at < ?", (self.clock.now() - _GATE_GRACE,))

    def persist(self) -> None:
        """Commit the writes this thread's message handling holds open (see the Store protocol)."""
        self.db.release()

    def commit(self, run_id: str, commit: Commit) -> bool:
        """Apply ``commit`` atomically if its conditions hold (see the Store protocol)."""
        with self.db.write() as conn:
            row = conn.execute("SELECT json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return False
            run = RunRecord.from_json(json.loads(row[0]))
            if run.status.finished or run.version != commit.expect_version:
                return False
            # Every condition is checked before anything is written, so a refusal leaves
            # the transaction empty: committing it changes nothing, exactly like a rollback.
            if not all(_step_matches(conn, run_id, w) for w in commit.steps):
                return False
            for w in commit.steps:
                conn.execute(
                    "INSERT INTO steps (run_id, key, json, run_version) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (run_id, key) DO UPDATE SET json = excluded.json,"
                    " run_version = excluded.run_version",
                    (run_id, w.record.key, dumps(w.record.to_json()), commit.expect_version + 1),
                )
            run = committed_run(run, commit)
            conn.execute(
                "UPDATE runs SET status = ?, version = ?, json = ? WHERE run_id = ?",
                (run.status.value, run.version, dumps(run.to_json()), run_id),
            )
            conn.executemany(
                "DELETE FROM waiters WHERE event_name = ? AND run_id = ? AND key = ?",
                [(w.event_name, w.run_id, w.key) for w in commit.remove_waiters],
            )
            _put_waiters(conn, commit.add_waiters)
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

    def remove_waiters(self, waiters: Sequence[Waiter]) -> None:
        """Delete waiters (idempotent)."""
        if not waiters:
            return
        with self.db.write() as conn:
            conn.executemany(
                "DELETE FROM waiters WHERE event_name = ? AND run_id = ? AND key = ?",
                [(w.event_name, w.run_id, w.key) for w in waiters],
            )

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

    def waiters_for(self, event: dict[str, Any]) -> list[Waiter]:
        """Waiters ``event`` may match (expired ones included: the caller skips them).

        Those of its name without a value index, and those indexed under a value the event
        has: never every waiter of the name.
        """
        name = event["name"]
        with self.db.read() as conn:
            paths = [p for (p,) in conn.execute(
                "SELECT path FROM waiter_paths WHERE event_name = ?", (name,))]
            rows = []
            for path, value in [("", ""), *event_index_keys(event, paths)]:
                rows += conn.execute(
                    "SELECT json FROM waiters"
                    " WHERE event_name = ? AND index_path = ? AND index_value = ?",
                    (name, path, value),
                ).fetchall()
        return [Waiter.from_json(json.loads(j)) for (j,) in rows]

    def remember_event(self, event: dict[str, Any], *, now: float, ttl: float) -> bool:
        """Log ``event`` unless its id was received within ``ttl`` seconds; whether it is new."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT received_at FROM events WHERE id = ?", (event["id"],)
            ).fetchone()
            if row is not None and row[0] > now - ttl:
                return False
            # REPLACE gives a stale entry a new rowid, so it lists as newly received.
            conn.execute(
                "INSERT OR REPLACE INTO events (id, name, received_at, json) VALUES (?, ?, ?, ?)",
                (event["id"], event["name"], now, dumps(event)),
            )
            return True

    def event_seen(self, event_id: str, *, now: float, ttl: float) -> bool:
        """Whether ``event_id`` was routed (remembered) within ``ttl`` seconds."""
        row = self.db.connection().execute(
            "SELECT received_at FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return row is not None and row[0] > now - ttl

    def log_event(self, event: dict[str, Any], *, now: float, ttl: float) -> None:
        """Add ``event`` to the timeline of its name for ``ttl`` seconds (idempotent)."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM event_timeline WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT OR IGNORE INTO event_timeline (name, ts, id, expires_at, json)"
                " VALUES (?, ?, ?, ?, ?)",
                (event["name"], int(event["ts"]), event["id"], now + ttl, dumps(event)),
            )

    def events_since(self, name: str, since_ms: int, *, now: float) -> list[dict[str, Any]]:
        """Timeline events named ``name`` with ``ts >= since_ms``, oldest first."""
        rows = self.db.connection().execute(
            "SELECT json FROM event_timeline WHERE name = ? AND ts >= ? AND expires_at >= ?"
            " ORDER BY ts, id",
            (name, since_ms, now),
        ).fetchall()
        return [cast(dict[str, Any], json.loads(j)) for (j,) in rows]

    def logged_event(self, name: str, ts: int, event_id: str) -> dict[str, Any] | None:
        """One timeline event by its key, or ``None``."""
        row = self.db.connection().execute(
            "SELECT json FROM event_timeline WHERE name = ? AND ts = ? AND id = ?",
            (name, ts, event_id),
        ).fetchone()
        return cast(dict[str, Any], json.loads(row[0])) if row else None

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
        sql = "SELECT json FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        rows = self.db.connection().execute(sql, (*params, query.limit)).fetchall()
        return [RunRecord.from_json(json.loads(j)) for (j,) in rows]

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recently received events, newest first."""
        rows = self.db.connection().execute(
            "SELECT json FROM events ORDER BY received_at DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [cast(dict[str, Any], json.loads(j)) for (j,) in rows]

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

    def close(self) -> None:
        """Close this process's connections."""
        self.db.close()


def _step_matches(conn: sqlite3.Connection, run_id: str, write: StepWrite) -> bool:
    row = conn.execute(
        "SELECT json FROM steps WHERE run_id = ? AND key = ?", (run_id, write.record.key)
    ).fetchone()
    if write.expect_status is None:
        return row is None
    if row is None:
        return False
    stored = json.loads(row[0])
    return bool(
        stored["status"] == write.expect_status.value
        and stored["attempt"] == write.expect_attempt
    )


def _gate_version(conn: sqlite3.Connection, scope: str, key: str) -> int:
    """A gate's stored version (0: absent), read inside the write transaction."""
    row = conn.execute(
        "SELECT version FROM gates WHERE scope = ? AND key = ?", (scope, key)
    ).fetchone()
    return int(row[0]) if row else 0


def _put_gate(conn: sqlite3.Connection, write: GateWrite) -> None:
    """Store a gate's new state at version ``expect_version + 1`` (its condition checked)."""
    conn.execute(
        "INSERT OR REPLACE INTO gates (scope, key, version, state, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (write.scope, write.key, write.expect_version + 1, dumps(write.state),
         write.expires_at),
    )


def _put_waiters(conn: sqlite3.Connection, waiters: Sequence[Waiter]) -> None:
    rows = [(w, w.index or ("", "")) for w in waiters]
    conn.executemany(
        "INSERT OR IGNORE INTO waiter_paths (event_name, path) VALUES (?, ?)",
        sorted({(w.event_name, path) for w, (path, _) in rows if path}),
    )
    conn.executemany(
        "INSERT OR REPLACE INTO waiters"
        " (event_name, run_id, key, expires_at, json, index_path, index_value)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(w.event_name, w.run_id, w.key, w.expires_at, dumps(w.to_json()), path, value)
         for w, (path, value) in rows],
    )
