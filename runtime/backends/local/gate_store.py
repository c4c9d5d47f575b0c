"""Flow-control gates in SQLite: the ``gates`` table, one row per ``(scope, key)``."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, cast

from runtime.backends.local.database import Tables, dumps
from runtime.backends.rules import read_gate
from runtime.records import Gate, GateWrite

#: Expired gates are deleted this long after they expire (like DynamoDB's lazy TTL), so a
#: writer holding the version of an expired gate it just read still finds it.
GATE_GRACE = 86400.0


class SqliteGateStore(Tables):
    """The :class:`~runtime.orchestration.protocols.GateStore` over SQLite."""

    def gate(self, scope: str, key: str) -> Gate:
        """The gate ``(scope, key)``; one past its ``expires_at`` reads with no state."""
        row = self.db.connection().execute(
            "SELECT version, state, expires_at FROM gates WHERE scope = ? AND key = ?",
            (scope, key),
        ).fetchone()
        if row is None:
            return Gate()
        version, state, expires_at = int(row[0]), row[1], row[2]
        return read_gate(cast(dict[str, Any] | None, json.loads(state)), version, expires_at,
                         self.clock.now())

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
        now, found = self.clock.now(), []
        # The default BINARY collation compares UTF-8 bytes: code point order, as Python sorts.
        # The cursor yields rows as they are read, so this stops after ``limit`` live ones.
        rows = self.db.connection().execute(
            "SELECT key, version, state, expires_at FROM gates WHERE scope = ? ORDER BY key",
            (scope,),
        )
        try:
            for key, version, state, expires_at in rows:
                gate = read_gate(json.loads(state), int(version), expires_at, now)
                if gate.state is not None:
                    found.append((str(key), gate))
                    if len(found) == limit:
                        break
        finally:
            rows.close()  # ends the read now, not when the cursor is collected
        return found

    def put_gate(self, write: GateWrite) -> bool:
        """Write a gate if its version is still ``write.expect_version`` (0: absent)."""
        with self.db.write() as conn:
            if gate_version(conn, write.scope, write.key) != write.expect_version:
                return False
            purge_gates(conn, self.clock.now())
            put_gate(conn, write)
            return True


def purge_gates(conn: sqlite3.Connection, now: float) -> None:
    """Delete gates expired for a while (a deleted gate reads as version 0)."""
    conn.execute("DELETE FROM gates WHERE expires_at < ?", (now - GATE_GRACE,))


def gate_version(conn: sqlite3.Connection, scope: str, key: str) -> int:
    """A gate's stored version (0: absent), read inside the write transaction."""
    row = conn.execute(
        "SELECT version FROM gates WHERE scope = ? AND key = ?", (scope, key)
    ).fetchone()
    return int(row[0]) if row else 0


def put_gate(conn: sqlite3.Connection, write: GateWrite) -> None:
    """Store a gate's new state at version ``expect_version + 1`` (its condition checked)."""
    conn.execute(
        "INSERT OR REPLACE INTO gates (scope, key, version, state, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (write.scope, write.key, write.expect_version + 1, dumps(write.state),
         write.expires_at),
    )
