"""Run state in one DynamoDB table: each Store operation is one transaction or one Query.

A commit is one ``TransactWriteItems`` whose run-item update is conditioned on the run's
version and status, so two workers racing on a run serialize exactly as the SQLite store's
``BEGIN IMMEDIATE`` does: the loser's whole transaction is cancelled and it gets ``False``.
The item layout is in ``table.py``; boto3/botocore types never leave this module (failures
become :class:`StoreError`).
"""

from __future__ import annotations

import heapq
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from runtime.backends.aws import table as t
from runtime.backends.aws.payloads import INLINE_MAX_BYTES, REF_KEY, S3Payloads, is_ref
from runtime.core.clock import SystemClock
from runtime.core.protocols import Clock, RunQuery
from runtime.errors import GateMovedError, StepkitError
from runtime.expressions import event_index_keys
from runtime.records import (
    Commit,
    Committed,
    Gate,
    GateWrite,
    RunRecord,
    RunState,
    RunStatus,
    StepRecord,
    Waiter,
    applied,
    check_distinct,
    commit_holds,
    patched,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit on actions in one TransactWriteItems
_CONFLICT_TRIES = 4  # TransactionConflict: another transaction held one of our items
_REFUSED = "ConditionalCheckFailed"  # a cancellation reason: that action's condition failed
# Of the trigger, log, event-log and timeline items: kept in S3 when large.
_LARGE_ATTRS = ("events", "outbox", "event")
_REF_JSON = '{"' + REF_KEY + '"'  # how a reference stored as an attribute begins (t.js)
_TORN_TRIES = 5  # load saw a commit half-applied (see _assemble)


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


def _store_error(exc: ClientError | BotoCoreError, what: str) -> StoreError:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "Unknown"), err.get("Message", str(exc))
    else:
        code, message = type(exc).__name__, str(exc)
    return StoreError(f"DynamoDB {what} failed: {code}: {message}", code=code)


@contextmanager
def _aws(what: str) -> Iterator[None]:
    """Turn botocore failures inside the block into :class:`StoreError`."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise _store_error(exc, what) from exc


def _cancellation_codes(exc: ClientError) -> list[str]:
    """Per-action reason codes of a cancelled transaction (empty for any other error)."""
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return []
    reasons: list[dict[str, Any]] = exc.response.get("CancellationReasons", [])  # type: ignore[assignment]
    return [str(r.get("Code", "None")) for r in reasons]  # one per action, in request order


def _identity(value: Any) -> Any:
    return value


def _fold(base: RunState, logs: dict[int, t.Item], since: int,
          resolve: Callable[[Any], Any] = _identity) -> RunState | None:
    """``base`` (the run at version ``since``) with the log entries after it applied.

    ``None`` when ``logs`` is not exactly the entries ``since+1 .. max`` (a Query may see a
    later entry and miss an earlier one written while it paged): read again.
    """
    top = max(logs, default=since)
    if sorted(logs) != list(range(since + 1, top + 1)):
        return None
    run, steps = base.run, dict(base.steps)
    for v in range(since + 1, top + 1):
        _, records, patch, msg_id, outbox = t.log_entry(logs[v])
        steps.update((rec.key, _resolved(rec, resolve)) for rec in records)
        if patch is not None and patch.output is not None:
            patch = replace(patch, output=resolve(patch.output))
        run = replace(patched(run, patch), version=v, last_msg=msg_id, outbox=outbox)
    return RunState(run, steps)


def _resolved(rec: StepRecord, resolve: Callable[[Any], Any]) -> StepRecord:
    return rec if rec.output is None else replace(rec, output=resolve(rec.output))


def _assemble(rows: Iterable[t.Item], now: float,
              resolve: Callable[[Any], Any] = _identity) -> tuple[RunState | None, bool]:
    """Build a run's state from its partition's items; also say whether the read was torn.

    The run item reflects the commits up to its ``version`` R (it is rewritten only by
    commits that change the run); the steps come from the log entries 0..R, and the log
    entries after R are applied on top. A Query is only read-committed per item, so it may
    see a run item updated by a transaction whose log entry it read before the entry
    existed: the view is whole when the entries are exactly 0..top with R <= top.
    """
    run = events = None
    logs: dict[int, t.Item] = {}
    for row in rows:
        sk = row["sk"]["S"]
        if sk == t.RUN_SK:
            run = row
        elif sk == t.EVENTS_SK:
            events = row
        elif sk.startswith(t.LOG_PREFIX):
            logs[int(row["version"]["N"])] = row
    if run is None or float(run.get(t.TTL_ATTRIBUTE, {"N": "inf"})["N"]) < now:
        return None, False  # absent, or expired and awaiting TTL deletion (lazy on AWS)
    if events is None or 0 not in logs:
        return None, True  # a create in flight
    record = t.run_from(run, events)
    record = replace(record, output=resolve(record.output))
    head, rest = record.version, {v: row for v, row in logs.items() if v > record.version}
    if head not in logs:
        return None, True
    steps: dict[str, StepRecord] = {}
    for v in sorted(v for v in logs if v <= head):
        steps.update((rec.key, _resolved(rec, resolve)) for rec in t.log_entry(logs[v])[1])
    _, _, _, msg_id, outbox = t.log_entry(logs[head])
    base = RunState(replace(record, last_msg=msg_id, outbox=outbox), steps)
    state = _fold(base, rest, head, resolve)
    if state is None or len(logs) != max(logs) + 1:
        return None, True
    return state, False


class DynamoStore:
    """The :class:`~runtime.core.protocols.Store` over one DynamoDB table.

    Args:
        table_name: The app's state table (created from :func:`table.table_spec`).
        retention_days: How long finished runs are kept before TTL deletes them.
        client: A low-level DynamoDB client; defaults to ``boto3.client("dynamodb")``, whose
            endpoint and region come from the environment.
        clock: Time source for TTLs and expiry checks.

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
        self._cache: OrderedDict[str, RunState] = OrderedDict()
        self.cache_size = cache_size
        # (event name, path) pairs this container knows are in the value-index registry.
        self._indexed: set[tuple[str, str]] = set()

    # -- reads ---------------------------------------------------------------------------

    def load(self, run_id: str) -> RunState | None:
        """Load the run and its steps: one strongly consistent, paginated Query.

        Cold, the Query reads the run's partition (run item, events, commit log); warm (this
        store loaded or committed the run before), it reads only the log entries after the
        cached version and applies them to the cached state: usually one item, or none.
        """
        cached = self._cache.get(run_id)
        state = self._catch_up(run_id, cached) if cached is not None else None
        if state is None:
            state = self._load_whole(run_id)
        if state is None:
            self._cache.pop(run_id, None)
            return None
        self._remember(state)
        return state

    def _load_whole(self, run_id: str) -> RunState | None:
        for attempt in range(_TORN_TRIES):
            rows = self._query(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": t.s(t.RUN_PREFIX + run_id)},
                ConsistentRead=True,
            )
            state, torn = _assemble(rows, self.clock.now(), self._resolve)
            if not torn:
                return state
            time.sleep(0.005 * 2**attempt)  # the commit completes within milliseconds
        raise StoreError(f"run {run_id}: read a half-applied commit {_TORN_TRIES} times in a row",
                         code="TornRead")

    def _catch_up(self, run_id: str, cached: RunState) -> RunState | None:
        """The cached state plus the commits since; ``None`` means: load it whole instead."""
        since = cached.run.version
        for attempt in range(_TORN_TRIES):
            logs = {int(row["version"]["N"]): row for row in self._query(
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": t.s(t.RUN_PREFIX + run_id),
                    ":lo": t.s(t.log_sk(since + 1)),
                    ":hi": t.s(t.LOG_END),
                },
                ConsistentRead=True,
            )}
            state = _fold(cached, logs, since, self._resolve)
            if state is not None:
                run = state.run
                if run.status.finished and (run.ended_at or 0) + self.retention < self.clock.now():
                    return None  # expired: awaiting TTL deletion
                return state
            time.sleep(0.005 * 2**attempt)  # an entry written while the Query paged
        return None

    def _remember(self, state: RunState) -> None:
        """Keep ``state`` as this container's latest view of its run (never an older one)."""
        run_id = state.run.run_id
        cached = self._cache.get(run_id)
        if cached is None or cached.run.version <= state.run.version:
            self._cache[run_id] = state
            self._cache.move_to_end(run_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def gate(self, scope: str, key: str) -> Gate:
        """The gate ``(scope, key)``: one strongly consistent GetItem.

        DynamoDB deletes expired items lazily, so a gate past its ``expires_at`` reads as
        ``state=None`` with its stored version (which a write must name).
        """
        with _aws(f"GetItem (gate {scope})"):
            row = self.client.get_item(
                TableName=self.table, Key=t.gate_key(scope, key), ConsistentRead=True,
            ).get("Item")
        if row is None:
            return Gate()
        state, version, expires_at = t.gate_from(row)
        if expires_at is not None and expires_at < self.clock.now():
            return Gate(None, version)
        return Gate(state, version)

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
                state, version, expires_at = t.gate_from(row)
                if state is not None and (expires_at is None or expires_at >= now):
                    yield row["key"]["S"], row["sk"]["S"], Gate(state, version)

        # Keys cut to 512 characters may tie: the sort key keeps their order stable.
        smallest = heapq.nsmallest(limit, live(), key=lambda g: (g[0], g[1]))
        return [(k, gate) for k, _, gate in smallest]

    def remove_waiters(self, waiters: Sequence[Waiter]) -> None:
        """Delete waiters, one DeleteItem each (idempotent; rare: only past a commit's share)."""
        for w in waiters:
            with _aws("DeleteItem (waiter)"):
                self.client.delete_item(TableName=self.table, Key=t.key(*t.waiter_key(w)))

    def committed(self, run_id: str, msg_id: str) -> Committed | None:
        """The commit ``msg_id`` applied, from the run's commit log (newest first).

        Only a redelivered message asks, so reading the log is rare; the filter runs
        server-side, newest entries first, and stops at the first match. Entry 0 (the
        run's creation) is no commit.
        """
        rows = self._query(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            FilterExpression="msg_id = :m",
            ExpressionAttributeValues={
                ":pk": t.s(t.RUN_PREFIX + run_id), ":lo": t.s(t.log_sk(1)),
                ":hi": t.s(t.LOG_END), ":m": t.s(msg_id)},
            ScanIndexForward=False,
            ConsistentRead=True,
        )
        for row in rows:
            return t.log_committed(row)
        return None

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

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """List runs matching ``query``, newest first, from the indexes (never a Scan)."""
        if query.limit <= 0:
            return []
        found: Iterable[tuple[str, str]]
        since = query.since
        if query.function_id is not None:
            found = self._index(t.GSI_RUNS_BY_FUNCTION, t.FN_PREFIX + query.function_id,
                                query.limit, query.status, since)
        elif query.status is not None:
            found = self._index(t.GSI_RUNS_BY_STATUS, t.STATUS_PREFIX + query.status.value,
                                query.limit, since=since)
        else:  # one newest-first stream per status, merged
            found = heapq.merge(*(self._index(t.GSI_RUNS_BY_STATUS, t.STATUS_PREFIX + s.value,
                                              query.limit, since=since) for s in RunStatus),
                                reverse=True)
        runs: list[RunRecord] = []
        for chunk in _chunks((run_id for _, run_id in found), query.limit):
            fetched = self._fetch_runs(chunk)
            for run_id in chunk:
                run = fetched.get(run_id)
                # Indexes lag the table: re-check the filter on the item just read.
                if run is None or (query.status is not None and run.status != query.status):
                    continue
                if since is not None and run.created_at < since:  # the key is in whole ms
                    continue
                runs.append(run)
                if len(runs) == query.limit:
                    return runs
        return runs

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recently received events, newest first: today's bucket, then yesterday's."""
        now = self.clock.now()
        events: list[dict[str, Any]] = []
        for day in (now, now - t.DAY):
            rows = self._query(
                IndexName=t.GSI_EVENTS_BY_DAY,
                KeyConditionExpression="gsi3pk = :p",
                ExpressionAttributeValues={":p": t.s(t.DAY_PREFIX + t.iso(day)[:10])},
                ScanIndexForward=False,
                PaginationConfig={"PageSize": max(limit, 1)},
            )
            for row in rows:
                if len(events) >= limit:
                    return events
                events.append(t.event_from(row))
        return events

    # -- writes ----------------------------------------------------------------------------

    def create_run(
        self, run: RunRecord, waiters: Sequence[Waiter], gates: Sequence[GateWrite] = (),
        steps: Sequence[StepRecord] = (),
    ) -> bool:
        """Create the run, its events, log entry 0 (its outbox) and waiters, and write ``gates``.

        One transaction.

        Returns:
            Whether it was created (``False``: the run exists; nothing written).

        Raises:
            GateMovedError: The run does not exist but a gate's version moved on.
            StoreError: DynamoDB failed, or other transactions kept conflicting with this
                one (retriable: the run may or may not exist, so the caller must try again
                rather than take it for a duplicate).
        """
        check_distinct(gates)
        now = self.clock.now()
        expires = (run.ended_at or now) + self.retention if run.status.finished else None
        gate_puts = [self._gate_put(g) for g in gates]  # refuses an oversized state first
        self._register_paths(waiters)
        seeded = [rec if rec.output is None
                  else replace(rec, output=self._offload(run.run_id, rec.output)) for rec in steps]
        log = t.log_item(run.run_id, 0, run.last_msg, at=now, outbox=run.outbox, steps=seeded,
                         ttl=expires or now + self.retention + 366 * t.DAY)
        if t.item_bytes(log) > t.MAX_LOG_ITEM_BYTES:
            raise StoreError(f"run {run.run_id}: its first log entry would pass the item limit",
                             code="ItemTooLarge", retriable=False)
        actions = [
            self._put(t.run_item(replace(run, version=0), expires), "attribute_not_exists(pk)"),
            self._put(self._offload_attrs(run.run_id, t.events_item(run, expires))),
            self._put(self._offload_attrs(run.run_id, log)),
            *(self._put(t.waiter_item(w)) for w in waiters),
            *gate_puts,
        ]
        codes = self._transact_codes(run.run_id, actions)
        if codes is None:
            self._remember(RunState(replace(run, version=0), {rec.key: rec for rec in steps}))
            return True
        if _REFUSED not in codes:
            raise StoreError(
                f"run {run.run_id}: TransactWriteItems met conflicting transactions "
                f"{_CONFLICT_TRIES} times in a row", code="TransactionConflict")
        # The run existing wins over any gate that moved. Its own reason says so, unless it
        # was caught in a conflict (a concurrent create of the same run): then ask the table.
        run_code = codes[0] if codes else "None"
        if run_code == _REFUSED or (run_code != "None" and self._run_exists(run.run_id)):
            return False
        first_gate = len(actions) - len(gates)
        moved = [g for i, g in enumerate(gates)
                 if first_gate + i < len(codes) and codes[first_gate + i] == _REFUSED]
        if not moved:  # only the run and the gates have conditions: never taken for a copy
            raise StoreError(f"run {run.run_id}: TransactWriteItems refused with reasons "
                             f"{codes}", code="TransactionCanceled")
        raise GateMovedError("gate moved: " + ", ".join(
            f"{g.scope!r} key {g.key[:100]!r} (expected version {g.expect_version})"
            for g in moved))

    def put_gate(self, write: GateWrite) -> bool:
        """Write a gate if its version is still ``write.expect_version``: one conditional Put.

        Returns:
            Whether it was written (``False``: its version moved on; read it again).

        Raises:
            StoreError: DynamoDB failed (throttling, ...), or the state is too large.
        """
        put = self._gate_put(write)["Put"]
        try:
            with _aws(f"PutItem (gate {write.scope})"):
                self.client.put_item(**put)
        except StoreError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def persist(self) -> None:
        """Nothing to do: every commit is durable once its write returns."""

    def commit(self, run_id: str, commit: Commit) -> bool:
        """Apply ``commit`` if its conditions hold (see the Store protocol).

        The conditions are checked on the run as stored at ``expect_version`` (this store's
        cached view, caught up first if it is older), and the commit's log entry
        ``LOG#<expect_version+1>`` is written only if it does not exist yet: a version is
        taken once, so the check cannot go stale between the read and the write. A commit
        that changes only steps (nearly every one) is that one conditional ``PutItem``; one
        that changes the run (status, attempt, output, error) also rewrites the run item, and
        one that adds or removes waiters writes them, in one transaction.
        """
        state = self._cache.get(run_id)
        if state is None or state.run.version != commit.expect_version:
            state = self.load(run_id)
        if not commit_holds(state, commit):
            return False
        assert state is not None  # commit_holds refuses a missing run
        now, patch, version = self.clock.now(), commit.run, commit.expect_version + 1
        after = applied(state, commit)
        records = [w.record if w.record.output is None
                   else replace(w.record, output=self._offload(run_id, w.record.output))
                   for w in commit.steps]
        if patch is not None and patch.output is not None:
            patch = replace(patch, output=self._offload(run_id, patch.output))
        # A backstop only: the run reaper deletes the log with its run (ARCHITECTURE.md).
        log = self._offload_attrs(run_id, t.log_item(
            run_id, version, commit.msg_id, at=now, patch=patch, steps=records,
            outbox=commit.outbox, ttl=now + self.retention + 366 * t.DAY))
        size = t.item_bytes(log)
        if size > t.MAX_LOG_ITEM_BYTES:
            raise StoreError(
                f"run {run_id}: commit {version} would write a log item of {size} bytes, more "
                f"than the {t.MAX_LOG_ITEM_BYTES} an item may hold", code="ItemTooLarge",
                retriable=False)
        put = self._put(log, "attribute_not_exists(pk)")
        if patch is None and not commit.add_waiters and not commit.remove_waiters:
            try:
                with _aws(f"PutItem (run {run_id} log)"):
                    self.client.put_item(**put["Put"])
            except StoreError as exc:
                if exc.code == "ConditionalCheckFailedException":
                    return False  # the version was taken: a duplicate or a race lost
                raise
            self._remember(after)
            return True
        actions: list[TransactWriteItemTypeDef] = [put]
        if patch is not None:
            expires = (after.run.ended_at or now) + self.retention \
                if after.run.status.finished else None
            changes = {"version": t.n(version), **t.run_fields(
                status=patch.status, attempt=patch.attempt, output=patch.output,
                error=patch.error, ended_at=patch.ended_at, expires=expires)}
            if patch.clear_error:
                changes["error"] = t.js(None)  # reads back as no error
            names = {f"#a{i}": name for i, name in enumerate(changes)}
            values = {f":a{i}": value for i, value in enumerate(changes.values())}
            actions.append({"Update": {
                "TableName": self.table, "Key": t.key(t.RUN_PREFIX + run_id, t.RUN_SK),
                "UpdateExpression": "SET " + ", ".join(f"{k} = :a{k[2:]}" for k in names),
                "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}})
            if expires is not None:  # the events item leaves with the run
                actions.append({"Update": {
                    "TableName": self.table, "Key": t.key(t.RUN_PREFIX + run_id, t.EVENTS_SK),
                    "UpdateExpression": "SET #x = :x",
                    "ExpressionAttributeNames": {"#x": t.TTL_ATTRIBUTE},
                    "ExpressionAttributeValues": {":x": t.n(int(expires))}}})
        # One transaction may touch an item once: a waiter both added and removed is a Put.
        self._register_paths(commit.add_waiters)
        added = {t.waiter_key(w): w for w in commit.add_waiters}
        removed = {t.waiter_key(w) for w in commit.remove_waiters} - added.keys()
        actions += [self._put(t.waiter_item(w)) for w in added.values()]
        actions += [{"Delete": {"TableName": self.table, "Key": t.key(*k)}}
                    for k in sorted(removed)]
        if not self._transact(run_id, actions):
            return False
        self._remember(after)
        return True

    def remember_event(self, event: dict[str, Any], *, now: float, ttl: float) -> bool:
        """Log ``event`` unless its id was received within ``ttl`` seconds; whether it is new."""
        try:
            with _aws("PutItem (event log)"):
                self.client.put_item(
                    TableName=self.table,
                    Item=self._offload_attrs(event["id"], t.event_item(event, now, ttl)),
                    # TTL deletion is lazy (absent locally): an expired entry counts as absent.
                    ConditionExpression="attribute_not_exists(pk) OR received_ts <= :cutoff",
                    ExpressionAttributeValues={":cutoff": t.n(now - ttl)},
                )
        except StoreError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def event_seen(self, event_id: str, *, now: float, ttl: float) -> bool:
        """Whether ``event_id`` was remembered (fully routed) within ``ttl`` seconds."""
        with _aws("GetItem (event log)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.key(t.EVENT_PREFIX + event_id, t.EVENT_SK),
                ConsistentRead=True,
            ).get("Item")
        return row is not None and float(row["received_ts"]["N"]) > now - ttl

    def log_event(self, event: dict[str, Any], *, now: float, ttl: float) -> None:
        """Keep ``event`` in its name's timeline for ``ttl`` seconds (an idempotent Put)."""
        with _aws("PutItem (event timeline)"):
            self.client.put_item(TableName=self.table, Item=self._offload_attrs(
                event["id"], t.timeline_item(event, now, ttl)))

    def events_since(self, name: str, since_ms: int, *, now: float) -> list[dict[str, Any]]:
        """Timeline events named ``name`` with ``ts >= since_ms``: one consistent Query."""
        rows = self._query(
            KeyConditionExpression="pk = :pk AND sk >= :lo",
            ExpressionAttributeValues={
                ":pk": t.s(t.TIMELINE_PREFIX + name), ":lo": t.s(t.timeline_sk(since_ms, ""))},
            ConsistentRead=True,
        )
        return [t.event_from(r) for r in rows
                if float(r.get(t.TTL_ATTRIBUTE, {"N": "inf"})["N"]) >= now]

    def logged_event(self, name: str, ts: int, event_id: str) -> dict[str, Any] | None:
        """One timeline event by its key, or ``None``."""
        with _aws("GetItem (event timeline)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.timeline_key(name, ts, event_id), ConsistentRead=True,
            ).get("Item")
        return t.event_from(self._inline_attrs(row)) if row else None

    # -- plumbing --------------------------------------------------------------------------

    def _offload(self, run_id: str, value: Any) -> Any:
        """``value``, or a reference to the S3 object holding it when it is large."""
        return value if self.payloads is None else self.payloads.offload(run_id, value)

    def _offload_attrs(self, run_id: str, item: t.Item) -> t.Item:
        """``item`` with a large ``events``, ``outbox`` or ``event`` (past 64 KiB) in S3."""
        if self.payloads is None:
            return item
        for name in _LARGE_ATTRS:
            raw = item.get(name, {}).get("S")
            if raw is not None and len(raw) > INLINE_MAX_BYTES:  # characters: bytes or fewer
                item = {**item, name: t.js(self.payloads.offload(run_id, json.loads(raw)))}
        return item

    def _inline_attrs(self, row: t.Item) -> t.Item:
        """Inverse of :meth:`_offload_attrs`: a stored attribute read back."""
        for name in _LARGE_ATTRS:
            raw = row.get(name, {}).get("S")
            if raw is not None and raw.startswith(_REF_JSON) and self.payloads is not None:
                value = json.loads(raw)
                if is_ref(value):
                    row = {**row, name: t.js(self.payloads.resolve(value))}
        return row

    def _resolve(self, value: Any) -> Any:
        """The value an item holds (an S3 reference is read)."""
        return value if self.payloads is None else self.payloads.resolve(value)

    def _register_paths(self, waiters: Sequence[Waiter]) -> None:
        """Record the paths ``waiters`` are indexed by, before the waiters themselves.

        Written first (and outside the transaction, so concurrent commits do not conflict on
        the registry item), an event that can see a waiter can see its path. ``ADD`` to a
        set is idempotent; each container writes a pair once.
        """
        new: dict[str, set[str]] = {}
        for w in waiters:
            if w.index is not None and (w.event_name, w.index[0]) not in self._indexed:
                new.setdefault(w.event_name, set()).add(w.index[0])
        for name, paths in sorted(new.items()):
            with _aws("UpdateItem (waiter index paths)"):
                self.client.update_item(**t.wait_paths_update(self.table, name, sorted(paths)))
            self._indexed.update((name, p) for p in paths)

    def _put(self, item: t.Item, condition: str | None = None,
             names: dict[str, str] | None = None,
             values: t.Item | None = None) -> TransactWriteItemTypeDef:
        extra = {"ConditionExpression": condition, "ExpressionAttributeNames": names,
                 "ExpressionAttributeValues": values}
        put = {"TableName": self.table, "Item": item, **{k: v for k, v in extra.items() if v}}
        return {"Put": put}  # type: ignore[typeddict-item]

    def _gate_put(self, write: GateWrite) -> TransactWriteItemTypeDef:
        """The conditional Put of a gate write (version 0: the gate must not exist)."""
        item = t.gate_item(write)
        size = len(item["state"]["S"].encode())
        if size > t.MAX_GATE_STATE_BYTES:
            raise StoreError(
                f"gate {write.scope!r} key {write.key[:100]!r}: its state is {size} bytes of "
                f"JSON, more than the {t.MAX_GATE_STATE_BYTES} a gate may hold",
                code="GateTooLarge", retriable=False)
        if write.expect_version == 0:
            return self._put(item, "attribute_not_exists(pk)")
        return self._put(item, "#v = :v", {"#v": "version"}, {":v": t.n(write.expect_version)})

    def _run_exists(self, run_id: str) -> bool:
        with _aws("GetItem (run)"):
            return "Item" in self.client.get_item(
                TableName=self.table, Key=t.key(t.RUN_PREFIX + run_id, t.RUN_SK),
                ConsistentRead=True, ProjectionExpression="pk",
            )

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
        for attempt in range(_CONFLICT_TRIES):
            try:
                # botocore fills in ClientRequestToken, so when it retries a request that did
                # land, DynamoDB answers success instead of applying it twice (or refusing it).
                self.client.transact_write_items(TransactItems=actions)
                return None
            except ClientError as exc:
                codes = _cancellation_codes(exc)
                if _REFUSED in codes:
                    return codes
                if "TransactionConflict" not in codes:
                    raise _store_error(exc, what) from exc
            except BotoCoreError as exc:
                raise _store_error(exc, what) from exc
            # Another transaction held one of our items; it most likely moves the version on
            # (and we will be refused), but it may fail, so try again after a moment.
            time.sleep(random.uniform(0, 0.004 * 2**attempt))
        return codes

    def _query(self, **kwargs: Any) -> Iterator[t.Item]:
        """Items of one Query, following its pages lazily."""
        with _aws("Query"):
            pages = self.client.get_paginator("query").paginate(TableName=self.table, **kwargs)
            for page in pages:
                yield from map(self._inline_attrs, page["Items"])

    def _index(self, index: str, pk: str, page: int, status: RunStatus | None = None,
               since: float | None = None) -> Iterator[tuple[str, str]]:
        """``(sort key, run_id)`` in one partition of a runs index, newest first.

        ``since`` bounds the sort key (``<created ISO>#<run_id>``) from below, so the Query
        reads only the runs created since then.
        """
        values: dict[str, Any] = {":p": t.s(pk)}
        kwargs: dict[str, Any] = {}
        if status is not None:  # gsi1 projects status for this
            kwargs = {"FilterExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "status"}}
            values[":s"] = t.s(status.value)
        condition = f"{index}pk = :p"
        if since is not None:
            condition += f" AND {index}sk >= :since"
            values[":since"] = t.s(t.iso(since))
        rows = self._query(IndexName=index, KeyConditionExpression=condition,
                           ScanIndexForward=False, PaginationConfig={"PageSize": page},
                           ExpressionAttributeValues=values, **kwargs)
        for row in rows:
            yield row[f"{index}sk"]["S"], row["pk"]["S"].removeprefix(t.RUN_PREFIX)

    def _fetch_runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        """Read run records (run, events items) by id, leaving out expired ones.

        A listing's record is the run item's: its status, output and error are current (every
        commit that changes them rewrites it), its ``version`` the last such commit's.
        """
        keys = [t.key(t.RUN_PREFIX + r, sk) for r in run_ids for sk in (t.RUN_SK, t.EVENTS_SK)]
        by_run: dict[str, list[t.Item]] = {}
        for chunk in _chunks(keys, 100):  # BatchGetItem's limit
            pending: dict[str, Any] = {self.table: {"Keys": chunk, "ConsistentRead": True}}
            for attempt in range(8):
                with _aws("BatchGetItem"):
                    out = self.client.batch_get_item(RequestItems=pending)
                for row in out["Responses"].get(self.table, []):
                    by_run.setdefault(row["pk"]["S"], []).append(self._inline_attrs(row))
                pending = dict(out.get("UnprocessedKeys") or {})
                if not pending:
                    break
                time.sleep(0.01 * 2**attempt)  # throttled: back off, as AWS advises
            else:
                raise StoreError("BatchGetItem kept returning unprocessed keys",
                                 code="UnprocessedKeys")
        now, found = self.clock.now(), {}
        for rows in by_run.values():
            items = {row["sk"]["S"]: row for row in rows}
            run = items.get(t.RUN_SK)
            if run is None or float(run.get(t.TTL_ATTRIBUTE, {"N": "inf"})["N"]) < now:
                continue  # absent, or expired and awaiting TTL deletion
            record = t.run_from(run, items.get(t.EVENTS_SK))
            found[record.run_id] = replace(record, output=self._resolve(record.output))
        return found


def _chunks(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    rest = iter(values)
    while chunk := list(islice(rest, size)):
        yield chunk
