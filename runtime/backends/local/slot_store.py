"""Concurrency slots and their lines in SQLite: one row per lease, one row per waiter."""

from __future__ import annotations

import json

from runtime.backends.local.database import Tables, dumps
from runtime.concurrency import LinePlace, SlotLease, place_sort_key, rank_of


class SqliteSlotStore(Tables):
    """The :class:`~runtime.orchestration.protocols.SlotStore` over SQLite.

    The ``slot_leases`` and ``slot_line`` tables mirror the DynamoDB items one row each; a
    conditional write is a ``BEGIN IMMEDIATE`` transaction that checks, then writes.
    """

    def shard_leases(self, scope: str, key: str, shard: int, *,
                     consistent: bool = True) -> list[SlotLease]:
        """The leases stored in one shard of a key (always read consistently here)."""
        rows = self.db.connection().execute(
            "SELECT idx, json FROM slot_leases WHERE scope = ? AND key = ? AND shard = ?"
            " ORDER BY idx", (scope, key, shard),
        ).fetchall()
        return [_lease(scope, key, shard, int(idx), raw) for idx, raw in rows]

    def claim_slot(self, lease: SlotLease, now: float) -> bool:
        """Store ``lease`` if no lease holds its slot or the one there lapsed by ``now``."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT expires FROM slot_leases WHERE scope = ? AND key = ? AND shard = ?"
                " AND idx = ?", (lease.scope, lease.key, lease.shard, lease.index),
            ).fetchone()
            if row is not None and float(row[0]) > now:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO slot_leases (scope, key, shard, idx, token, expires,"
                " json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (lease.scope, lease.key, lease.shard, lease.index, lease.token, lease.expires,
                 dumps(lease.to_json())),
            )
            conn.execute("DELETE FROM slot_leases WHERE expires < ?", (now - 86400.0,))
            return True

    def free_slot(self, lease: SlotLease) -> None:
        """Delete ``lease`` if it is still its token's."""
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM slot_leases WHERE scope = ? AND key = ? AND shard = ? AND idx = ?"
                " AND token = ?", (lease.scope, lease.key, lease.shard, lease.index, lease.token),
            )

    def line(self, scope: str, key: str, shard: int, limit: int) -> list[LinePlace]:
        """The first ``limit`` places of one shard of a key's line in rank order."""
        rows = self.db.connection().execute(
            "SELECT sk, json FROM slot_line WHERE scope = ? AND key = ? AND shard = ?"
            " ORDER BY sk LIMIT ?", (scope, key, shard, limit),
        ).fetchall()
        return [LinePlace.of(scope, key, shard, *rank_of(sk), json.loads(raw))
                for sk, raw in rows]

    def place(self, scope: str, key: str, shard: int, rank: float,
              work: str) -> LinePlace | None:
        """One place, by its rank and work."""
        row = self.db.connection().execute(
            "SELECT json FROM slot_line WHERE scope = ? AND key = ? AND shard = ? AND sk = ?",
            (scope, key, shard, place_sort_key(rank, work)),
        ).fetchone()
        return None if row is None else LinePlace.of(scope, key, shard, rank, work,
                                                     json.loads(row[0]))

    def put_place(self, place: LinePlace, expect_round: int | None,
                  expect_woken: float | None = None) -> bool:
        """Write ``place`` if the stored one has ``expect_round`` and ``expect_woken``."""
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT json FROM slot_line WHERE scope = ? AND key = ? AND shard = ? AND sk = ?",
                (place.scope, place.key, place.shard, place.sort_key),
            ).fetchone()
            if row is None:
                if expect_round is not None:
                    return False
            else:
                stored = json.loads(row[0])
                if (expect_round is None or int(stored["round"]) != expect_round
                        or stored.get("woken") != expect_woken):
                    return False
            conn.execute(
                "INSERT OR REPLACE INTO slot_line (scope, key, shard, sk, expires, json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (place.scope, place.key, place.shard, place.sort_key, place.expires,
                 dumps(place.to_json())),
            )
            # Places lapsed a day ago go (DynamoDB's TTL does the same lazily).
            conn.execute("DELETE FROM slot_line WHERE expires < ?",
                         (self.clock.now() - 86400.0,))
            return True

    def leave_line(self, scope: str, key: str, shard: int, rank: float, work: str) -> None:
        """Delete one place."""
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM slot_line WHERE scope = ? AND key = ? AND shard = ? AND sk = ?",
                (scope, key, shard, place_sort_key(rank, work)))


def _lease(scope: str, key: str, shard: int, index: int, raw: str) -> SlotLease:
    data = json.loads(raw)
    return SlotLease(scope, key, shard, index, str(data["token"]), str(data["work"]),
                     float(data["expires"]))
