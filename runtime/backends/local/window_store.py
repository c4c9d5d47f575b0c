"""Batch windows in SQLite: a header row per key, a seat row per event, a member row per id.

Each method is one ``BEGIN IMMEDIATE`` transaction over one or two small rows, mirroring the
DynamoDB layout (:mod:`runtime.backends.aws.window_store`) so the contract tests hold both
to the same rules.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from runtime.backends.local.database import Tables, dumps
from runtime.backends.rules import expired
from runtime.flow import Joined, Window

#: The window tables (part of the store's schema).
WINDOW_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS windows (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        count INTEGER NOT NULL,
        cap INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        first_at REAL NOT NULL,
        due REAL NOT NULL,
        round INTEGER NOT NULL,
        closed INTEGER NOT NULL,
        started INTEGER NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (scope, key))""",
    """CREATE TABLE IF NOT EXISTS window_members (
        scope TEXT NOT NULL,
        event_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (scope, event_id))""",
    # json is NULL for a tombstone (a seat given up at close).
    """CREATE TABLE IF NOT EXISTS window_seats (
        scope TEXT NOT NULL,
        run_id TEXT NOT NULL,
        seat INTEGER NOT NULL,
        json TEXT,
        expires_at REAL NOT NULL,
        PRIMARY KEY (scope, run_id, seat))""",
    "CREATE INDEX IF NOT EXISTS window_members_by_expiry ON window_members (expires_at)",
    "CREATE INDEX IF NOT EXISTS window_seats_by_expiry ON window_seats (expires_at)",
)

_COLUMNS = "run_id, count, cap, bytes, first_at, due, round, closed, started, version"


def _window(row: Sequence[Any] | None) -> Window:
    if row is None:
        return Window()
    run_id, count, cap, size, first_at, due, rnd, closed, started, version = row
    return Window(str(run_id), int(count), int(cap), int(size), float(first_at), float(due),
                  int(rnd), bool(closed), bool(started), int(version))


class SqliteWindowStore(Tables):
    """The :class:`~runtime.orchestration.protocols.WindowStore` over SQLite."""

    def window(self, scope: str, key: str) -> Window:
        """The header of ``(scope, key)``'s window (``Window()``: none)."""
        return _window(self.db.connection().execute(
            f"SELECT {_COLUMNS} FROM windows WHERE scope = ? AND key = ?", (scope, key),
        ).fetchone())

    def open_window(self, scope: str, key: str, window: Window) -> bool:
        """Write a new header if the stored one is still at ``window.version - 1``."""
        assert window.run_id is not None
        with self.db.write() as conn:
            if _version(conn, scope, key) != window.version - 1:
                return False
            conn.execute(
                f"INSERT OR REPLACE INTO windows (scope, key, {_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, key, window.run_id, window.count, window.cap, window.bytes, window.first_at,
                 window.due, window.round, int(window.closed), int(window.started),
                 window.version))
            return True

    def take_seat(self, scope: str, key: str, run_id: str, size: int,
                  max_bytes: int) -> int | None:
        """Take the next seat of the open window ``run_id`` (``None``: closed, moved, full)."""
        with self.db.write() as conn:
            row = conn.execute(
                "UPDATE windows SET count = count + 1, bytes = bytes + ?"
                " WHERE scope = ? AND key = ? AND run_id = ? AND closed = 0 AND count < cap"
                " AND (count = 0 OR bytes <= ?) RETURNING count",
                (size, scope, key, run_id, max_bytes - size)).fetchone()
            return int(row[0]) if row else None

    def join_window(self, scope: str, run_id: str, seat: int, event: dict[str, Any], *,
                    member_until: float, seat_until: float) -> Joined:
        """Put ``event`` in its seat and record its membership, in one transaction."""
        now = self.clock.now()
        with self.db.write() as conn:
            found = conn.execute(
                "SELECT run_id, expires_at FROM window_members WHERE scope = ? AND event_id = ?",
                (scope, event["id"])).fetchone()
            if found is not None and not expired(found[1], now):
                return Joined(str(found[0]), duplicate=True)
            if conn.execute(
                "SELECT 1 FROM window_seats WHERE scope = ? AND run_id = ? AND seat = ?",
                (scope, run_id, seat)).fetchone() is not None:
                return Joined(None, lost=True)  # tombstoned by the window's close
            conn.execute(
                "INSERT OR REPLACE INTO window_members (scope, event_id, run_id, expires_at)"
                " VALUES (?, ?, ?, ?)", (scope, event["id"], run_id, member_until))
            conn.execute(
                "INSERT INTO window_seats (scope, run_id, seat, json, expires_at)"
                " VALUES (?, ?, ?, ?, ?)", (scope, run_id, seat, dumps(event), seat_until))
            return Joined(run_id)

    def window_member(self, scope: str, event_id: str) -> str | None:
        """The run the event joined, while its membership lasts."""
        row = self.db.connection().execute(
            "SELECT run_id, expires_at FROM window_members WHERE scope = ? AND event_id = ?",
            (scope, event_id)).fetchone()
        if row is None or expired(row[1], self.clock.now()):
            return None
        return str(row[0])

    def window_seats(self, scope: str, run_id: str, count: int) -> dict[int, dict[str, Any]]:
        """Seats ``1..count`` that exist: an event, or ``{}`` for a tombstone."""
        rows = self.db.connection().execute(
            "SELECT seat, json FROM window_seats WHERE scope = ? AND run_id = ? AND seat <= ?",
            (scope, run_id, count)).fetchall()
        return {int(n): (json.loads(j) if j is not None else {}) for n, j in rows}

    def kill_seat(self, scope: str, run_id: str, seat: int, until: float) -> bool:
        """Tombstone an empty seat; ``False`` if it was filled."""
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO window_seats (scope, run_id, seat, json, expires_at)"
                " VALUES (?, ?, ?, NULL, ?)", (scope, run_id, seat, until))
            if cur.rowcount:
                return True
            row = conn.execute(
                "SELECT json FROM window_seats WHERE scope = ? AND run_id = ? AND seat = ?",
                (scope, run_id, seat)).fetchone()
            return row is not None and row[0] is None  # tombstoned already: still given up

    def close_window(self, scope: str, key: str, run_id: str) -> Window | None:
        """Close the open window ``run_id`` (``None``: it was not open)."""
        with self.db.write() as conn:
            row = conn.execute(
                f"UPDATE windows SET closed = 1, version = version + 1 WHERE scope = ? AND"
                f" key = ? AND run_id = ? AND closed = 0 RETURNING {_COLUMNS}",
                (scope, key, run_id)).fetchone()
            if row is not None:
                _purge(conn, self.clock.now())
            return _window(row) if row is not None else None

    def mark_window(self, scope: str, key: str, run_id: str, *, started: bool = False,
                    round: int | None = None, expect_round: int | None = None,
                    cap: int | None = None) -> bool:
        """Mark window ``run_id`` started, move its timer to ``round``, or raise its cap."""
        with self.db.write() as conn:
            if cap is not None:
                cur = conn.execute(
                    "UPDATE windows SET cap = ?, version = version + 1 WHERE scope = ?"
                    " AND key = ? AND run_id = ? AND closed = 0 AND cap < ?",
                    (cap, scope, key, run_id, cap))
            elif started:
                cur = conn.execute(
                    "UPDATE windows SET started = 1, version = version + 1"
                    " WHERE scope = ? AND key = ? AND run_id = ? AND closed = 1",
                    (scope, key, run_id))
            else:
                cur = conn.execute(
                    "UPDATE windows SET round = ?, version = version + 1 WHERE scope = ?"
                    " AND key = ? AND run_id = ? AND closed = 0 AND round = ?",
                    (round, scope, key, run_id, expect_round))
            return bool(cur.rowcount)

    def adopt_members(self, scope: str, members: Sequence[tuple[str, str, float]]) -> None:
        """Record memberships (those of a gate-layout window), keeping any that exist."""
        with self.db.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO window_members (scope, event_id, run_id, expires_at)"
                " VALUES (?, ?, ?, ?)", [(scope, *m) for m in members])

    def list_windows(self, scope: str, limit: int = 100) -> list[tuple[str, Window]]:
        """Up to ``limit`` open windows of ``scope``, sorted by key."""
        rows = self.db.connection().execute(
            f"SELECT key, {_COLUMNS} FROM windows WHERE scope = ? AND closed = 0"
            " ORDER BY key LIMIT ?", (scope, max(limit, 0))).fetchall()
        return [(str(r[0]), _window(r[1:])) for r in rows]


def _version(conn: sqlite3.Connection, scope: str, key: str) -> int:
    row = conn.execute(
        "SELECT version FROM windows WHERE scope = ? AND key = ?", (scope, key)).fetchone()
    return int(row[0]) if row else 0


def _purge(conn: sqlite3.Connection, now: float) -> None:
    """Delete lapsed members and seats (once per window closed, not per event)."""
    conn.execute("DELETE FROM window_members WHERE expires_at < ?", (now,))
    conn.execute("DELETE FROM window_seats WHERE expires_at < ?", (now,))
