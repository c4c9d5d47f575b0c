"""Run state in one DynamoDB table: each Store operation is one transaction or one Query.

A commit is one ``TransactWriteItems`` (or one conditional ``PutItem``) conditioned on the run's
version, so two workers racing on a run serialize exactly as the SQLite store's
``BEGIN IMMEDIATE`` does: the loser's write is refused and it gets ``False``.

:class:`DynamoStore` is the five parts of a store over one table, one module each: runs and
commits (``run_store``), flow-control gates (``gate_store``), concurrency slots and lines
(``slot_store``), waiters (``waiter_store``) and
the event log (``event_log``), all :class:`~runtime.backends.aws.dynamo.DynamoTable`. The item
layout is in ``table.py``, the rules shared with the SQLite store in
:mod:`runtime.backends.rules`; boto3/botocore types never leave these modules (failures become
:class:`StoreError`).
"""

from __future__ import annotations

from runtime.backends.aws.dynamo import MAX_TRANSACTION_ITEMS, StoreError
from runtime.backends.aws.event_log import DynamoEventLog
from runtime.backends.aws.gate_store import DynamoGateStore
from runtime.backends.aws.run_store import DynamoRunStore
from runtime.backends.aws.slot_store import DynamoSlotStore
from runtime.backends.aws.waiter_store import DynamoWaiterStore
from runtime.backends.aws.window_store import DynamoWindowStore

__all__ = ["MAX_TRANSACTION_ITEMS", "DynamoStore", "StoreError"]


class DynamoStore(DynamoRunStore, DynamoGateStore, DynamoSlotStore, DynamoWaiterStore,
                  DynamoEventLog, DynamoWindowStore):
    """The :class:`~runtime.orchestration.protocols.Store` over one DynamoDB table.

    Args:
        table_name: The app's state table (created from :func:`table.table_spec`).
        retention_days: How long finished runs are kept before TTL deletes them.
        client: A low-level DynamoDB client; defaults to ``boto3.client("dynamodb")``, whose
            endpoint and region come from the environment.
        clock: Time source for TTLs and expiry checks.
        cache_size: How many runs to keep in the run-state cache.
        payloads: Where outputs over 64 KiB go (``None``: kept in the item, up to 400 KB).

    """
