"""Waiters in DynamoDB: one partition per event name, and one per value a match needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import DynamoTable, aws_call
from runtime.expressions import event_index_keys
from runtime.records import Waiter


class DynamoWaiterStore(DynamoTable):
    """The :class:`~runtime.orchestration.protocols.WaiterStore` over DynamoDB."""

    def waiters_for(self, event: dict[str, Any]) -> list[Waiter]:
        """Waiters ``event`` may match (expired ones included: the caller skips them).

        One consistent Query of the name's partition (its waiters without a value index,
        and the registry of paths the others are indexed by), then one per path at which
        the event has a value: never every waiter of the name.
        """
        name = event["name"]
        rows = self._query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": t.s(t.waiters_pk(name))},
            ConsistentRead=True,  # a waiter committed just before the event must be seen
        )
        found, paths = [], []
        for row in rows:
            if row["sk"]["S"] == t.WAIT_PATHS_SK:
                paths = sorted(row["paths"]["SS"])
            else:
                found.append(t.waiter_from(row))
        for path, value in event_index_keys(event, paths):
            found += [t.waiter_from(row) for row in self._query(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": t.s(t.waiters_pk(name, path, value))},
                ConsistentRead=True,
            )]
        return found

    def remove_waiters(self, waiters: Sequence[Waiter]) -> None:
        """Delete waiters, one DeleteItem each (idempotent; rare: only past a commit's share)."""
        for w in waiters:
            with aws_call("DeleteItem (waiter)"):
                self.client.delete_item(TableName=self.table, Key=t.key(*t.waiter_key(w)))


def register_paths(table: DynamoTable, waiters: Sequence[Waiter]) -> None:
    """Record the paths ``waiters`` are indexed by, before the waiters themselves.

    Written first (and outside the transaction, so concurrent commits do not conflict on
    the registry item), an event that can see a waiter can see its path. ``ADD`` to a
    set is idempotent; each container writes a pair once.
    """
    new: dict[str, set[str]] = {}
    for w in waiters:
        if w.index is not None and (w.event_name, w.index[0]) not in table.indexed_paths:
            new.setdefault(w.event_name, set()).add(w.index[0])
    for name, paths in sorted(new.items()):
        with aws_call("UpdateItem (waiter index paths)"):
            table.client.update_item(**t.wait_paths_update(table.table, name, sorted(paths)))
        table.indexed_paths.update((name, p) for p in paths)
