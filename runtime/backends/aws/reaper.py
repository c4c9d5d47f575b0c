"""Delete the rest of a run's partition once TTL has deleted its run item.

A finished run's items (run, trigger, outbox) carry a TTL of ``retention_days`` after it
ended; its steps and commit-log entries cannot (a running run has no end yet, and setting a
TTL on every step when it ends would not fit in one transaction). So the table's stream feeds
the reaper every TTL deletion of a run item (an event-source filter passes only REMOVE records
by the TTL service principal with ``sk = RUN``), and the reaper deletes whatever is left under
that ``pk``. Deleting is idempotent, so duplicate or out-of-order stream records are harmless;
a failure raises so that the stream retries the batch (bisected, then to a failure queue).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from runtime.backends.aws import table as t
from runtime.errors import StepkitError

_log = logging.getLogger("stepkit.reaper")
_BATCH = 25  # BatchWriteItem's limit
_TRIES = 8
# What DynamoDB Streams put on a record of an item TTL deleted (the stream API's Identity).
TTL_PRINCIPAL = "dynamodb.amazonaws.com"
TTL_IDENTITY_TYPE = "Service"


class ReapError(StepkitError):
    """Items of an expired run could not be deleted (the stream batch is retried)."""


def stream_filter() -> dict[str, Any]:
    """The event-source filter pattern: TTL deletions of run items, nothing else."""
    return {
        "eventName": ["REMOVE"],
        "userIdentity": {"type": [TTL_IDENTITY_TYPE], "principalId": [TTL_PRINCIPAL]},
        "dynamodb": {"Keys": {"sk": {"S": [t.RUN_SK]}}},
    }


def expired_runs(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """The partition keys (``RUN#<id>``) of run items that TTL deleted, in order, once each.

    The filter already passes only those; this checks again, so a record that slips through
    (a filter edited by hand, a user deleting a run item) never deletes a live run's steps.
    """
    found: list[str] = []
    for record in records:
        identity = record.get("userIdentity") or {}
        keys = (record.get("dynamodb") or {}).get("Keys") or {}
        pk = (keys.get("pk") or {}).get("S", "")
        if (
            record.get("eventName") == "REMOVE"
            and identity.get("type") == TTL_IDENTITY_TYPE
            and identity.get("principalId") == TTL_PRINCIPAL
            and (keys.get("sk") or {}).get("S") == t.RUN_SK
            and pk.startswith(t.RUN_PREFIX)
            and pk not in found
        ):
            found.append(pk)
    return found


def reap(client: Any, table: str, pk: str, *, pause: float = 0.05) -> int:
    """Delete every item under ``pk``; how many delete requests were made.

    Raises:
        ReapError: Some deletes stayed unprocessed after retries with backoff.
    """
    deleted = 0
    if client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": t.RUN_SK}},
                       ProjectionExpression="pk", ConsistentRead=True).get("Item"):
        # A run item is back: a run was created under the same id (its event re-sent after
        # the retention) since TTL deleted the old one. The partition is live: leave it; the
        # old run's leftovers keep their backstop TTL.
        _log.warning("%s has a run item again: not reaped", pk)
        return 0
    pages = client.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ProjectionExpression="pk, sk",
        ConsistentRead=True,
    )
    for page in pages:
        keys = [{"pk": item["pk"], "sk": item["sk"]} for item in page.get("Items", [])]
        for i in range(0, len(keys), _BATCH):
            _delete(client, table, keys[i : i + _BATCH], pause)
            deleted += len(keys[i : i + _BATCH])
    return deleted


def _delete(client: Any, table: str, keys: list[dict[str, Any]], pause: float) -> None:
    requests: list[dict[str, Any]] = [{"DeleteRequest": {"Key": k}} for k in keys]
    for attempt in range(_TRIES):
        result = client.batch_write_item(RequestItems={table: requests})
        requests = (result.get("UnprocessedItems") or {}).get(table, [])
        if not requests:
            return
        time.sleep(pause * 2**attempt)  # throttled: back off, as AWS advises
    raise ReapError(f"{len(requests)} item(s) of {keys[0]['pk']['S']} stayed unprocessed "
                    f"after {_TRIES} BatchWriteItem calls")


def handle(client: Any, table: str, event: Mapping[str, Any]) -> int:
    """Reap every run the stream batch says TTL deleted; items deleted in total."""
    return sum(reap(client, table, pk) for pk in expired_runs(event.get("Records", [])))
