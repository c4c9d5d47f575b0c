"""Runs in DynamoDB: each run is its commit log, written in one Put and read in two Queries.

A commit is one conditional ``PutItem`` of its log entry (or one ``TransactWriteItems`` when
it also changes the run item or waiters), on the run as this store holds it at the commit's
version: the loser of two racing workers finds the version taken and gets ``False``.

How a run is loaded (warm from the cache, cold to its snapshot) is ``run_loads.py``. The item
layout is in ``table.py``; the rules shared with the SQLite store in
:mod:`runtime.backends.rules`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import (
    CONFLICT_TRIES,
    REFUSED,
    StoreError,
    aws_call,
    chunks,
)
from runtime.backends.aws.gate_store import gate_put
from runtime.backends.aws.run_loads import DynamoRunLoads
from runtime.backends.aws.waiter_store import register_paths
from runtime.backends.rules import MARK_SECONDS, commit_holds, expired, gate_moved
from runtime.orchestration.protocols import RunQuery
from runtime.records import (
    Commit,
    Committed,
    GateWrite,
    RunRecord,
    RunState,
    RunStatus,
    StepRecord,
    Waiter,
    applied,
    check_distinct,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef


class DynamoRunStore(DynamoRunLoads):
    """The :class:`~runtime.orchestration.protocols.RunStore` over DynamoDB."""

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

    def mark_delivery(self, run_id: str, msg_id: str, *, now: float) -> bool:
        """Mark a delivery that runs user code; whether an earlier one had (and died).

        One small item of its own partition (``MARK#<run>``, sort key the message id; TTL
        deletes it), written with ``ReturnValues=ALL_OLD``: one write unit, and only on a
        redelivery.
        """
        with aws_call("PutItem (delivery mark)"):
            old = self.client.put_item(
                TableName=self.table,
                Item={**t.key(t.MARK_PREFIX + run_id, msg_id),
                      t.TTL_ATTRIBUTE: t.n(float(int(now + MARK_SECONDS)))},
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        return bool(old) and not expired(t.expires_at(old), now)

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """List runs matching ``query``, newest first, from the indexes (never a Scan)."""
        if query.limit <= 0:
            return []
        found: Iterable[tuple[str, str]]
        since, until = query.since, query.until
        if query.function_id is not None:
            found = self._shards(t.GSI_RUNS_BY_FUNCTION, t.FN_PREFIX + query.function_id,
                                 query.limit, query.status, since, until)
        elif query.status is not None:
            found = self._shards(t.GSI_RUNS_BY_STATUS, t.STATUS_PREFIX + query.status.value,
                                 query.limit, since=since, until=until)
        else:  # one newest-first stream per status, merged
            found = heapq.merge(*(self._shards(t.GSI_RUNS_BY_STATUS, t.STATUS_PREFIX + s.value,
                                               query.limit, since=since, until=until)
                                  for s in RunStatus),
                                reverse=True)
        runs: list[RunRecord] = []
        for chunk in chunks((run_id for _, run_id in found), query.limit):
            fetched = self._fetch_runs(chunk)
            for run_id in chunk:
                run = fetched.get(run_id)
                # Indexes lag the table: re-check the filter on the item just read.
                if run is None or (query.status is not None and run.status != query.status):
                    continue
                if since is not None and run.created_at < since:  # the key is in whole ms
                    continue
                if until is not None and run.created_at >= until:
                    continue
                runs.append(run)
                if len(runs) == query.limit:
                    return runs
        return runs

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
        gate_puts = [gate_put(self, g) for g in gates]  # refuses an oversized state first
        register_paths(self, waiters)
        seeded = [rec if rec.output is None
                  else replace(rec, output=self._offload(run.run_id, rec.output)) for rec in steps]
        log = t.log_item(run.run_id, 0, run.last_msg, at=now, outbox=run.outbox, steps=seeded,
                         ttl=expires or now + self.retention + 366 * t.DAY)
        if t.item_bytes(log) > t.MAX_LOG_ITEM_BYTES:
            raise StoreError(f"run {run.run_id}: its first log entry would pass the item limit",
                             code="ItemTooLarge", retriable=False)
        actions = [
            self.put_action(t.run_item(replace(run, version=0), expires),
                            "attribute_not_exists(pk)"),
            self.put_action(self._offload_attrs(run.run_id, t.events_item(run, expires))),
            self.put_action(self._offload_attrs(run.run_id, log)),
            *(self.put_action(t.waiter_item(w)) for w in waiters),
            *gate_puts,
        ]
        codes = self._transact_codes(run.run_id, actions)
        if codes is None:
            self._cache.put(RunState(replace(run, version=0), {rec.key: rec for rec in steps}))
            return True
        if REFUSED not in codes:
            raise StoreError(
                f"run {run.run_id}: TransactWriteItems met conflicting transactions "
                f"{CONFLICT_TRIES} times in a row", code="TransactionConflict")
        # The run existing wins over any gate that moved. Its own reason says so, unless it
        # was caught in a conflict (a concurrent create of the same run): then ask the table.
        run_code = codes[0] if codes else "None"
        if run_code == REFUSED or (run_code != "None" and self._run_exists(run.run_id)):
            return False
        first_gate = len(actions) - len(gates)
        moved = [g for i, g in enumerate(gates)
                 if first_gate + i < len(codes) and codes[first_gate + i] == REFUSED]
        if not moved:  # only the run and the gates have conditions: never taken for a copy
            raise StoreError(f"run {run.run_id}: TransactWriteItems refused with reasons "
                             f"{codes}", code="TransactionCanceled")
        raise gate_moved(moved)

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
        put = self.put_action(log, "attribute_not_exists(pk)")
        if patch is None and not commit.add_waiters and not commit.remove_waiters:
            try:
                with aws_call(f"PutItem (run {run_id} log)"):
                    self.client.put_item(**put["Put"])
            except StoreError as exc:
                if exc.code == "ConditionalCheckFailedException":
                    return False  # the version was taken: a duplicate or a race lost
                raise
            self._cache.put(after)
            self._snapshot(state, commit, records, patch)
            return True
        actions: list[TransactWriteItemTypeDef] = [put]
        if patch is not None:
            expires = (after.run.ended_at or now) + self.retention \
                if after.run.status.finished else None
            changes = {"version": t.n(version), **t.run_fields(run_id,
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
        register_paths(self, commit.add_waiters)
        added = {t.waiter_key(w): w for w in commit.add_waiters}
        removed = {t.waiter_key(w) for w in commit.remove_waiters} - added.keys()
        actions += [self.put_action(t.waiter_item(w)) for w in added.values()]
        actions += [{"Delete": {"TableName": self.table, "Key": t.key(*k)}}
                    for k in sorted(removed)]
        if not self._transact(run_id, actions):
            return False
        self._cache.put(after)
        self._snapshot(state, commit, records, patch)
        return True

    def _run_exists(self, run_id: str) -> bool:
        with aws_call("GetItem (run)"):
            return "Item" in self.client.get_item(
                TableName=self.table, Key=t.key(t.RUN_PREFIX + run_id, t.RUN_SK),
                ConsistentRead=True, ProjectionExpression="pk",
            )

    def _shards(self, index: str, prefix: str, page: int, status: RunStatus | None = None,
                since: float | None = None, until: float | None = None,
                ) -> Iterator[tuple[str, str]]:
        """``(sort key, run_id)`` under every shard of key ``prefix``, merged newest first.

        Each shard is one Query read a page of ``page`` keys at a time, and only as far as
        the merge consumes it: a listing of ``page`` runs reads at most one page per shard.
        """
        return heapq.merge(*(self._index(index, pk, page, status, since, until)
                             for pk in t.shard_pks(prefix)), reverse=True)

    def _index(self, index: str, pk: str, page: int, status: RunStatus | None = None,
               since: float | None = None, until: float | None = None,
               ) -> Iterator[tuple[str, str]]:
        """``(sort key, run_id)`` in one shard of a runs index, newest first.

        ``since`` bounds the sort key (``<created ISO>#<run_id>``) from below and ``until``
        from above, so the Query reads only the runs created between. ``until`` alone is an
        inclusive bound on the bare ISO instant, which every key of that millisecond
        (``<ISO>#<run_id>``) sorts after: the bound is exclusive, as :class:`RunQuery` says.
        """
        values: dict[str, Any] = {":p": t.s(pk)}
        kwargs: dict[str, Any] = {}
        if status is not None:  # gsi1 projects status for this
            kwargs = {"FilterExpression": "#s = :s", "ExpressionAttributeNames": {"#s": "status"}}
            values[":s"] = t.s(status.value)
        condition = f"{index}pk = :p"
        if since is not None:
            values[":since"] = t.s(t.iso(since))
        if until is not None:
            values[":until"] = t.s(t.iso(until))
        if since is not None and until is not None:
            condition += f" AND {index}sk BETWEEN :since AND :until"
        elif since is not None:
            condition += f" AND {index}sk >= :since"
        elif until is not None:
            condition += f" AND {index}sk <= :until"
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
        for row in self._batch_get(keys, consistent=True):
            by_run.setdefault(row["pk"]["S"], []).append(row)
        now, found = self.clock.now(), {}
        for rows in by_run.values():
            items = {row["sk"]["S"]: row for row in rows}
            run = items.get(t.RUN_SK)
            if run is None or expired(t.expires_at(run), now):
                continue  # absent, or expired and awaiting TTL deletion
            record = t.run_from(run, items.get(t.EVENTS_SK))
            found[record.run_id] = replace(record, output=self._resolve(record.output))
        return found
