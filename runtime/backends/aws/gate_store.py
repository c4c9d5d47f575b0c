"""Flow-control gates in DynamoDB: one item per gate, ``GATE#<scope>`` / the key."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import TYPE_CHECKING

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import DynamoTable, StoreError, aws_call
from runtime.backends.rules import read_gate
from runtime.records import Gate, GateWrite

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef


class DynamoGateStore(DynamoTable):
    """The :class:`~runtime.orchestration.protocols.GateStore` over DynamoDB."""

    def gate(self, scope: str, key: str) -> Gate:
        """The gate ``(scope, key)``: one strongly consistent GetItem.

        DynamoDB deletes expired items lazily, so a gate past its ``expires_at`` reads as
        ``state=None`` with its stored version (which a write must name).
        """
        with aws_call(f"GetItem (gate {scope})"):
            row = self.client.get_item(
                TableName=self.table, Key=t.gate_key(scope, key), ConsistentRead=True,
            ).get("Item")
        if row is None:
            return Gate()
        return read_gate(*t.gate_from(row), self.clock.now())

    def list_gates(self, scope: str, limit: int = 100) -> list[tuple[str, Gate]]:
        """Up to ``limit`` unexpired gates of ``scope`` with a state, sorted by key.

        One strongly consistent, paginated Query of the scope's partition, read whole: sort
        keys encode the gate keys (``-``, ``#`` prefixes, digests), so their order is not the
        keys' order. Each key is the item's ``key`` attribute: the original key, cut to 512
        characters.

        Args:
            scope: The gates' scope, e.g. ``"debounce:fn"``.
            limit: The most gates to return.

        Returns:
            ``(key, gate)`` pairs; expired gates (awaiting TTL deletion) and state-less ones
            are left out.
        """
        if limit <= 0:
            return []
        now = self.clock.now()

        def live() -> Iterator[tuple[str, str, Gate]]:
            for row in self._query(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": t.s(t.GATE_PREFIX + scope)},
                ConsistentRead=True,
            ):
                gate = read_gate(*t.gate_from(row), now)
                if gate.state is not None:
                    yield row["key"]["S"], row["sk"]["S"], gate

        # Keys cut to 512 characters may tie: the sort key keeps their order stable.
        smallest = heapq.nsmallest(limit, live(), key=lambda g: (g[0], g[1]))
        return [(k, gate) for k, _, gate in smallest]

    def put_gate(self, write: GateWrite) -> bool:
        """Write a gate if its version is still ``write.expect_version``: one conditional Put.

        Returns:
            Whether it was written (``False``: its version moved on; read it again).

        Raises:
            StoreError: DynamoDB failed (throttling, ...), or the state is too large.
        """
        return self.put_if(f"PutItem (gate {write.scope})", gate_put(self, write)["Put"])


def gate_put(table: DynamoTable, write: GateWrite) -> TransactWriteItemTypeDef:
    """The conditional Put of a gate write (version 0: the gate must not exist).

    Raises:
        StoreError: The state is too large for one item.
    """
    item = t.gate_item(write)
    size = len(item["state"]["S"].encode())
    if size > t.MAX_GATE_STATE_BYTES:
        raise StoreError(
            f"gate {write.scope!r} key {write.key[:100]!r}: its state is {size} bytes of "
            f"JSON, more than the {t.MAX_GATE_STATE_BYTES} a gate may hold",
            code="GateTooLarge", retriable=False)
    if write.expect_version == 0:
        return table.put_action(item, "attribute_not_exists(pk)")
    return table.put_action(item, "#v = :v", {"#v": "version"}, {":v": t.n(write.expect_version)})
