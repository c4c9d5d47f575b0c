"""Waiters in SQLite: indexed by event name and by the value their match needs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from runtime.backends.local.database import Tables, dumps
from runtime.expressions import event_index_keys
from runtime.records import Waiter


class SqliteWaiterStore(Tables):
    """The :class:`~runtime.orchestration.protocols.WaiterStore` over SQLite."""

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

    def remove_waiters(self, waiters: Sequence[Waiter]) -> None:
        """Delete waiters (idempotent)."""
        if not waiters:
            return
        with self.db.write() as conn:
            delete_waiters(conn, waiters)


def put_waiters(conn: sqlite3.Connection, waiters: Sequence[Waiter]) -> None:
    """Write ``waiters`` (and the paths they are indexed by) in the open transaction."""
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


def delete_waiters(conn: sqlite3.Connection, waiters: Sequence[Waiter]) -> None:
    """Delete ``waiters`` in the open transaction (idempotent)."""
    conn.executemany(
        "DELETE FROM waiters WHERE event_name = ? AND run_id = ? AND key = ?",
        [(w.event_name, w.run_id, w.key) for w in waiters],
    )
