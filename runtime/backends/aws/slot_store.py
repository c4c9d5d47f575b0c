"""Concurrency slots and their lines in DynamoDB: one small item per lease and per waiter.

Layout (each item about 200 bytes for a lease, 0.5 to 1 KB for a place: 1 WCU a write):

- ``SLOT#<scope>#<shard>#<key>`` / ``<index>``: a lease (``token``, ``work``, ``expires``).
  Each shard of a key is its own partition key, so ``limit=1000`` (20 shards) spreads its
  writes over 20 partitions.
- ``LINE#<scope>#<shard>#<key>`` / ``<rank>#<work>``: a place in line (``place``: JSON of
  the message, round, woken and expiry; ``round`` and ``woken`` again for conditions); a
  Query reads the head of a line shard in rank order. A line has one shard per 250 slots.

Both carry the table's TTL a day after they lapse; readers skip lapsed items first.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import DynamoTable, StoreError, aws_call
from runtime.concurrency import LinePlace, SlotLease, place_sort_key, rank_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_LEASE_PREFIX = "SLOT#"
_LINE_PREFIX = "LINE#"
#: Lapsed leases and places are deleted by TTL this long after they lapse.
_TTL_GRACE = 86400.0


def lease_pk(scope: str, key: str, shard: int) -> str:
    """The partition key of one shard's leases."""
    return f"{_LEASE_PREFIX}{scope}#{shard}#{t.gate_sk(key)}"


def line_pk(scope: str, key: str, shard: int) -> str:
    """The partition key of one shard of a key's line."""
    return f"{_LINE_PREFIX}{scope}#{shard}#{t.gate_sk(key)}"


def _ttl(expires: float) -> AttributeValueTypeDef:
    return t.n(math.ceil(expires + _TTL_GRACE))


class DynamoSlotStore(DynamoTable):
    """The :class:`~runtime.orchestration.protocols.SlotStore` over DynamoDB."""

    def shard_leases(self, scope: str, key: str, shard: int, *,
                     consistent: bool = True) -> list[SlotLease]:
        """One shard's leases: one Query of at most 50 items of ~200 bytes (10 KB)."""
        rows = self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": t.s(lease_pk(scope, key, shard))},
            ConsistentRead=consistent,
        )
        return [SlotLease(scope, key, shard, int(r["sk"]["S"]), r["token"]["S"], r["work"]["S"],
                          float(r["expires"]["N"])) for r in rows]

    def claim_slot(self, lease: SlotLease, now: float) -> bool:
        """One conditional PutItem: the slot is absent or its lease lapsed by ``now``."""
        item: t.Item = {
            **t.key(lease_pk(lease.scope, lease.key, lease.shard), str(lease.index)),
            "token": t.s(lease.token), "work": t.s(lease.work), "expires": t.n(lease.expires),
            t.TTL_ATTRIBUTE: _ttl(lease.expires),
        }
        return self._put_if(f"PutItem (slot {lease.scope})", item,
                            "attribute_not_exists(pk) OR expires <= :now", {":now": t.n(now)})

    def free_slot(self, lease: SlotLease) -> None:
        """One conditional DeleteItem (still this token's lease; otherwise nothing to do)."""
        try:
            with aws_call(f"DeleteItem (slot {lease.scope})"):
                self.client.delete_item(
                    TableName=self.table,
                    Key=t.key(lease_pk(lease.scope, lease.key, lease.shard), str(lease.index)),
                    ConditionExpression="#tk = :tk", ExpressionAttributeNames={"#tk": "token"},
                    ExpressionAttributeValues={":tk": t.s(lease.token)},
                )
        except StoreError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise

    def line(self, scope: str, key: str, shard: int, limit: int) -> list[LinePlace]:
        """The head of a key's line: one strongly consistent Query of ``limit`` items."""
        if limit <= 0:
            return []
        with aws_call(f"Query (line {scope})"):
            rows = self.client.query(
                TableName=self.table, KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": t.s(line_pk(scope, key, shard))},
                ConsistentRead=True, Limit=limit,
            ).get("Items", [])
        return [LinePlace.of(scope, key, shard, *rank_of(r["sk"]["S"]),
                             json.loads(r["place"]["S"])) for r in rows]

    def place(self, scope: str, key: str, shard: int, rank: float,
              work: str) -> LinePlace | None:
        """One place: one strongly consistent GetItem."""
        with aws_call(f"GetItem (line {scope})"):
            row = self.client.get_item(
                TableName=self.table, ConsistentRead=True,
                Key=t.key(line_pk(scope, key, shard), place_sort_key(rank, work)),
            ).get("Item")
        return None if row is None else LinePlace.of(scope, key, shard, rank, work,
                                                     json.loads(row["place"]["S"]))

    def put_place(self, place: LinePlace, expect_round: int | None,
                  expect_woken: float | None = None) -> bool:
        """One conditional PutItem on the stored place's ``round`` and ``woken``."""
        item: t.Item = {
            **t.key(line_pk(place.scope, place.key, place.shard), place.sort_key),
            "place": t.js(place.to_json()), "round": t.n(place.round),
            "woken": t.n(-1.0 if place.woken is None else place.woken),
            t.TTL_ATTRIBUTE: _ttl(place.expires),
        }
        if expect_round is None:
            return self._put_if(f"PutItem (line {place.scope})", item,
                                "attribute_not_exists(pk)", {})
        return self._put_if(
            f"PutItem (line {place.scope})", item, "#r = :r AND woken = :w",
            {":r": t.n(expect_round), ":w": t.n(-1.0 if expect_woken is None else expect_woken)},
            {"#r": "round"})

    def leave_line(self, scope: str, key: str, shard: int, rank: float, work: str) -> None:
        """One DeleteItem."""
        with aws_call(f"DeleteItem (line {scope})"):
            self.client.delete_item(
                TableName=self.table,
                Key=t.key(line_pk(scope, key, shard), place_sort_key(rank, work)))

    def _put_if(self, what: str, item: t.Item, condition: str, values: t.Item,
                names: dict[str, str] | None = None) -> bool:
        """One conditional PutItem; ``False`` when its condition failed."""
        return self.put_if(what, self.put_action(item, condition, names, values or None)["Put"])
