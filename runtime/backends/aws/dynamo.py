"""The DynamoDB table a store's parts share: the client, errors, transactions, S3 offload.

Every part of the DynamoDB store (runs, gates, waiters, event log) is a :class:`DynamoTable`:
the calls go through it, so boto3/botocore types never leave these modules (failures become
:class:`StoreError`), and a large attribute is kept in S3 the same way whichever part writes it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from runtime.backends.aws import table as t
from runtime.backends.aws.payloads import INLINE_MAX_BYTES, REF_KEY, S3Payloads, is_ref
from runtime.backends.rules import RunCache
from runtime.errors import StepkitError
from runtime.orchestration.clock import SystemClock
from runtime.orchestration.protocols import Clock

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit on actions in one TransactWriteItems
CONFLICT_TRIES = 4  # TransactionConflict: another transaction held one of our items
REFUSED = "ConditionalCheckFailed"  # a cancellation reason: that action's condition failed
# Of the trigger, log, event-log and timeline items: kept in S3 when large.
LARGE_ATTRS = ("events", "outbox", "event")
REF_JSON = '{"' + REF_KEY + '"'  # how a reference stored as an attribute begins (t.js)


class StoreError(StepkitError):
    """A DynamoDB call failed for a reason other than a refused condition.

    Attributes:
        code: The AWS error code (e.g. ``ValidationException``), the botocore error class for
            failures without a response (connection errors), or a stepkit code.

    """

    def __init__(self, message: str, *, code: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.is_retriable = retriable


def store_error(exc: ClientError | BotoCoreError, what: str) -> StoreError:
    """The :class:`StoreError` of a botocore failure of the call ``what``."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Unknown"), err.get("Message", str(exc))
    else:
        code, message = type(exc).__name__, str(exc)
    return StoreError(f"DynamoDB {what} failed: {code}: {message}", code=code)


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turn botocore failures inside the block into :class:`StoreError`."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise store_error(exc, what) from exc


def cancellation_codes(exc: ClientError) -> list[str]:
    """Per-action reason codes of a cancelled transaction (empty for any other error)."""
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return []
    reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons", [])  # type: ignore[assignment]
    return [str(r.get("Code", "None")) for r in reasons]  # one per action, in request order


class DynamoTable:
    """One app's state table, as every part of the store uses it.

    Args:
        table_name: The app's state table (created from :func:`table.table_spec`).
        retention_days: How long finished runs are kept before TTL deletes them.
        client: A low-level DynamoDB client; defaults to ``boto3.client("dynamodb")``, whose
            endpoint and region come from the environment.
        clock: Time source for TTLs and expiry checks.
        cache_size: How many runs to keep in the run-state cache.
        payloads: Where outputs over 64 KiB go (``None``: kept in the item, up to 400 KB).

    """

    def __init__(
        self,
        table_name: str,
        *,
        retention_days: int = 30,
        client: DynamoDBClient | None = None,
        clock: Clock | None = None,
        cache_size: int = 256,
        payloads: S3Payloads | None = None,
    ) -> None:
        self.table = table_name
        self.retention = retention_days * t.DAY
        self.client: DynamoDBClient = client or boto3.client("dynamodb")
        self.clock: Clock = clock or SystemClock()
        # Where outputs over 64 KiB go (None: kept in the item, up to its 400 KB).
        self.payloads = payloads
        # Runs this container loaded lately. A warm Lambda that handles a run's next message
        # reads only the commit-log entries since (linear in steps, not quadratic).
        self._cache = RunCache(cache_size)
        # Runs this container cold-loaded whose log after the snapshot was long, as stored (S3
        # references unread), at the version read: the next commit of one writes a snapshot.
        self._due = RunCache(64)
        # (event name, path) pairs this container knows are in the value-index registry.
        self.indexed_paths: set[tuple[str, str]] = set()

    def _offload(self, run_id: str, value: Any) -> Any:
        """``value``, or a reference to the S3 object holding it when it is large."""
        return value if self.payloads is None else self.payloads.offload(run_id, value)

    def _offload_attrs(self, run_id: str, item: t.Item) -> t.Item:
        """``item`` with a large ``events``, ``outbox`` or ``event`` (past 64 KiB) in S3."""
        if self.payloads is None:
            return item
        for name in LARGE_ATTRS:
            raw = item.get(name, {}).get("S")
            if raw is not None and len(raw) > INLINE_MAX_BYTES:  # characters: bytes or fewer
                item = {**item, name: t.js(self.payloads.offload(run_id, json.loads(raw)))}
        return item

    def _inline_attrs(self, row: t.Item) -> t.Item:
        """Inverse of :meth:`_offload_attrs`: a stored attribute read back."""
        for name in LARGE_ATTRS:
            raw = row.get(name, {}).get("S")
            if raw is not None and raw.startswith(REF_JSON) and self.payloads is not None:
                value = json.loads(raw)
                if is_ref(value):
                    row = {**row, name: t.js(self.payloads.resolve(value))}
        return row

    def _resolve(self, value: Any) -> Any:
        """The value an item holds (an S3 reference is read)."""
        return value if self.payloads is None else self.payloads.resolve(value)

    def put_action(self, item: t.Item, condition: str | None = None,
             names: dict[str, str] | None = None,
             values: t.Item | None = None) -> TransactWriteItemTypeDef:
        """A transaction's Put of ``item``, on ``condition`` when there is one."""
        extra = {"ConditionExpression": condition, "ExpressionAttributeNames": names,
                 "ExpressionAttributeValues": values}
        put = {"TableName": self.table, "Item": item, **{k: v for k, v in extra.items() if v}}
        return {"Put": put}  # type: ignore[typeddict-item]

    def put_if(self, what: str, put: Any) -> bool:
        """One conditional PutItem (a :meth:`put_action`'s ``Put``); whether it was written.

        A failed condition is an answer (``False``), not an error.
        """
        try:
            with aws_call(what):
                self.client.put_item(**put)
        except StoreError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _transact(self, run_id: str, actions: list[TransactWriteItemTypeDef]) -> bool:
        """Run one transaction; ``False`` when a condition failed (or conflicts persisted)."""
        return self._transact_codes(run_id, actions) is None

    def _transact_codes(self, run_id: str,
                        actions: list[TransactWriteItemTypeDef]) -> list[str] | None:
        """Run one transaction: ``None`` once applied, else the per-action reason codes.

        The codes (one per action, in order) include ``ConditionalCheckFailed`` when a
        condition failed; without it, ``TransactionConflict`` persisted through every try.
        """
        if len(actions) > MAX_TRANSACTION_ITEMS:
            raise StoreError(
                f"run {run_id}: one commit would write {len(actions)} items, more than "
                f"DynamoDB's {MAX_TRANSACTION_ITEMS} per transaction (too many parallel steps "
                "or waiters at once)", code="TooManyItems", retriable=False)
        what = f"TransactWriteItems (run {run_id})"
        codes: list[str] = []
        for attempt in range(CONFLICT_TRIES):
            try:
                # botocore fills in ClientRequestToken, so when it retries a request that did
                # land, DynamoDB answers success instead of applying it twice (or refusing it).
                self.client.transact_write_items(TransactItems=actions)
                return None
            except ClientError as exc:
                codes = cancellation_codes(exc)
                if REFUSED in codes:
                    return codes
                if "TransactionConflict" not in codes:
                    raise store_error(exc, what) from exc
            except BotoCoreError as exc:
                raise store_error(exc, what) from exc
            # Another transaction held one of our items; it most likely moves the version on
            # (and we will be refused), but it may fail, so try again after a moment.
            time.sleep(random.uniform(0, 0.004 * 2**attempt))
        return codes

    def _batch_get(self, keys: list[t.Item], *, consistent: bool) -> list[t.Item]:
        """The items of ``keys`` that exist (any order), 100 keys per ``BatchGetItem``.

        Keys DynamoDB leaves unprocessed (throttling) are asked again with backoff, as AWS
        advises; still unprocessed after 8 tries is an error, never a shorter answer.
        """
        found: list[t.Item] = []
        for chunk in chunks(keys, 100):  # BatchGetItem's limit
            pending: dict[str, Any] = {self.table: {"Keys": chunk, "ConsistentRead": consistent}}
            for attempt in range(8):
                with aws_call("BatchGetItem"):
                    out = self.client.batch_get_item(RequestItems=pending)
                found += map(self._inline_attrs, out["Responses"].get(self.table, []))
                pending = dict(out.get("UnprocessedKeys") or {})
                if not pending:
                    break
                time.sleep(0.01 * 2**attempt)
            else:
                raise StoreError("BatchGetItem kept returning unprocessed keys",
                                 code="UnprocessedKeys")
        return found

    def _query(self, **kwargs: Any) -> Iterator[t.Item]:
        """Items of one Query, following its pages lazily."""
        with aws_call("Query"):
            pages = self.client.get_paginator("query").paginate(TableName=self.table, **kwargs)
            for page in pages:
                yield from map(self._inline_attrs, page["Items"])


def chunks(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``values`` in lists of ``size`` (the last may be shorter)."""
    rest = iter(values)
    while chunk := list(islice(rest, size)):
        yield chunk
