"""Run state in one SQLite file (WAL), shared by threads and processes.

:class:`SqliteStore` is the five parts of a store over one :class:`Database`, one module
each: runs and commits (``run_store``), flow-control gates (``gate_store``), concurrency
slots and their lines (``slot_store``), waiters (``waiter_store``) and the event log
(``event_log``). The rules they share with the DynamoDB store are in
:mod:`runtime.backends.rules`; how a write becomes one ``BEGIN IMMEDIATE`` transaction (and a
message's writes one transaction) is in :mod:`~.database`.
"""

from __future__ import annotations

from pathlib import Path

from runtime.backends.local.database import DURABILITY, Database, dumps
from runtime.backends.local.event_log import SqliteEventLog
from runtime.backends.local.gate_store import SqliteGateStore
from runtime.backends.local.run_store import SqliteRunStore
from runtime.backends.local.slot_store import SqliteSlotStore
from runtime.backends.local.waiter_store import SqliteWaiterStore
from runtime.backends.local.window_store import WINDOW_SCHEMA, SqliteWindowStore
from runtime.orchestration.clock import SystemClock
from runtime.orchestration.protocols import Clock

__all__ = ["DURABILITY", "Database", "SqliteStore", "dumps"]

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
    """CREATE TABLE IF NOT EXISTS delivery_marks (
        run_id TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        expires REAL NOT NULL,
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
    # Concurrency slots: one lease per slot, addressed by (scope, key, shard, index).
    """CREATE TABLE IF NOT EXISTS slot_leases (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        shard INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        token TEXT NOT NULL,
        expires REAL NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (scope, key, shard, idx))""",
    # The line of each concurrency key: one place per waiter, sorted by rank (sk).
    """CREATE TABLE IF NOT EXISTS slot_line (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        shard INTEGER NOT NULL,
        sk TEXT NOT NULL,
        expires REAL NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (scope, key, shard, sk))""",
    *WINDOW_SCHEMA,  # batch windows: header, seats and members (window_store.py)
)


class SqliteStore(SqliteRunStore, SqliteGateStore, SqliteSlotStore, SqliteWaiterStore,
                  SqliteEventLog, SqliteWindowStore):
    """The :class:`~runtime.orchestration.protocols.Store` over SQLite.

    Args:
        path: The database file, or a :class:`Database` to share with the queue.
        clock: Time source for gate expiry (a FakeClock in tests); the system clock by default.
        durability: ``"normal"`` or ``"full"`` (see :class:`Database`).

    """

    def __init__(
        self, path: str | Path | Database, *, clock: Clock | None = None,
        durability: str = "normal",
    ) -> None:
        db = path if isinstance(path, Database) else Database(path, durability=durability)
        super().__init__(db, clock or SystemClock())
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

    def close(self) -> None:
        """Close this process's connections."""
        self.db.close()
