"""One SQLite file (WAL) shared by threads and processes, and its write transactions.

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from runtime.orchestration.protocols import Clock

#: ``durability`` -> SQLite's ``synchronous`` (in WAL mode NORMAL survives a process crash).
DURABILITY = {"normal": "NORMAL", "full": "FULL"}


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

    def close_thread(self) -> None:
        """Close the calling thread's connection, if it opened one (a worker thread ending).

        Threads that come and go (chaos mode's workers, one set per settle) would otherwise
        each leave a connection, three file descriptors with WAL, open until :meth:`close`.
        """
        conn = cast(sqlite3.Connection | None, getattr(self._local, "conn", None))
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            self._opened = [(pid, c) for pid, c in self._opened if c is not conn]
        conn.close()

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


class Tables:
    """What every part of the SQLite store shares: the database file and the clock.

    Args:
        db: The database (shared with the queue).
        clock: Time source for expiry (a FakeClock in tests).
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
