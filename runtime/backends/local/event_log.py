"""The event log in SQLite: ids received (for dedup and listing) and the timeline by name."""

from __future__ import annotations

import json
from typing import Any, cast

from runtime.backends.local.database import Tables, dumps
from runtime.backends.rules import same_name, seen_within


class SqliteEventLog(Tables):
    """The :class:`~runtime.orchestration.protocols.EventLog` over SQLite."""

    def remember_event(self, event: dict[str, Any], *, now: float, ttl: float) -> bool:
        """Log ``event`` unless its id was received within ``ttl`` seconds; whether it is new."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT received_at FROM events WHERE id = ?", (event["id"],)
            ).fetchone()
            if row is not None and seen_within(row[0], now=now, ttl=ttl):
                return False
            # REPLACE gives a stale entry a new rowid, so it lists as newly received.
            conn.execute(
                "INSERT OR REPLACE INTO events (id, name, received_at, json) VALUES (?, ?, ?, ?)",
                (event["id"], event["name"], now, dumps(event)),
            )
            return True

    def event_seen(self, event_id: str, *, now: float, ttl: float,
                   name: str | None = None) -> bool:
        """Whether ``event_id`` was routed (remembered) within ``ttl`` seconds.

        With ``name``, only as an event of that name.
        """
        row = self.db.connection().execute(
            "SELECT received_at, name FROM events WHERE id = ?", (event_id,)
        ).fetchone()
        return row is not None and same_name(row[1], name) and seen_within(row[0], now=now,
                                                                           ttl=ttl)

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
        # Unexpired: ``expires_at >= now`` is rules.expired's complement, in SQL so the
        # expired entries waiting for the next purge are never read.
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

    def list_events(self, limit: int = 50, *,
                    summary: bool = False) -> list[dict[str, Any]]:
        """Recently received events, newest first (whole: a summary reads no less here)."""
        rows = self.db.connection().execute(
            "SELECT json FROM events ORDER BY received_at DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [cast(dict[str, Any], json.loads(j)) for (j,) in rows]
