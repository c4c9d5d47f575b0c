"""Loading runs from DynamoDB: warm from the cache, or cold down to the run's snapshot.

A warm load reads the log since the cached version; a cold one walks down the run's
partition to its snapshot and reads the log after it.

A cold load does not grow with the run's history: its events, its snapshot (the state as of
some version, compressed) and its header, then the log after the snapshot. The snapshot is
derived data, written after a commit by the worker that made it (one conditional
``PutItem``, never part of the commit), only when that worker's cold load had to read a long
log after the last one; a missing or old snapshot costs reads, never correctness.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import (
    DynamoTable,
    StoreError,
    aws_call,
)
from runtime.backends.aws.payloads import is_ref
from runtime.backends.rules import expired
from runtime.records import (
    Commit,
    RunPatch,
    RunState,
    StepRecord,
    committed_run,
    patched,
)

if TYPE_CHECKING:
    pass

TORN_TRIES = 5  # load saw a commit half-applied (see _assemble)
#: A cold load that read at least this much log after the snapshot (or half the snapshot's
#: size, if more) asks for a new snapshot: about ten one-step commits, 1-2 read units.
SNAPSHOT_TAIL_BYTES = 6 * 1024
_log = logging.getLogger("stepkit")


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


def _log_bytes(logs: dict[int, t.Item]) -> int:
    return sum(t.item_bytes(row) for row in logs.values())


def _assemble(rows: Iterable[t.Item], now: float) -> tuple[RunState | None, bool]:
    """Build a run's state from its partition's items; also say whether the read was torn.

    The state is as stored: an output held in S3 is its reference.

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
    if run is None or expired(t.expires_at(run), now):
        return None, False  # absent, or expired and awaiting TTL deletion (lazy on AWS)
    if events is None or 0 not in logs:
        return None, True  # a create in flight
    record = t.run_from(run, events)
    head, rest = record.version, {v: row for v, row in logs.items() if v > record.version}
    if head not in logs:
        return None, True
    steps: dict[str, StepRecord] = {}
    for v in sorted(v for v in logs if v <= head):
        steps.update((rec.key, rec) for rec in t.log_entry(logs[v])[1])
    _, _, _, msg_id, outbox = t.log_entry(logs[head])
    base = RunState(replace(record, last_msg=msg_id, outbox=outbox), steps)
    state = _fold(base, rest, head)
    if state is None or len(logs) != max(logs) + 1:
        return None, True
    return state, False

class DynamoRunLoads(DynamoTable):
    """How :class:`DynamoRunStore` reads a run: warm from its cache, or cold to its snapshot."""

    #: See :data:`SNAPSHOT_TAIL_BYTES` (tests lower it to snapshot often).
    snapshot_tail_bytes = SNAPSHOT_TAIL_BYTES

    def load(self, run_id: str) -> RunState | None:
        """Load the run and its steps, in two Queries at most whatever the run's length.

        Warm (this store loaded or committed the run before), one strongly consistent Query
        reads only the log entries after the cached version and applies them to the cached
        state: usually one item, or none. Cold, see :meth:`_load_cold`.
        """
        cached = self._cache.get(run_id)
        state = self._catch_up(run_id, cached) if cached is not None else None
        if state is None:
            state = self._load_cold(run_id)
        if state is None:
            self._cache.drop(run_id)
            return None
        self._cache.put(state)
        return state

    def drop_cache(self) -> None:
        """Forget every run this store holds, as a fresh container would."""
        self._cache.clear()
        self._due.clear()

    def _load_cold(self, run_id: str) -> RunState | None:
        """The run read afresh: one walk down its partition that stops at the snapshot.

        The walk starts at the partition's end (``TRIGGER``, ``SNAP``, ``RUN``, then the log
        newest first): its first page is those three items; the rest continues below ``RUN``
        through the log down to the entry after the snapshot (or to entry 0 when there is
        none), so it does not grow with history. Every page is strongly consistent: the
        snapshot and the header come from one read and the log after them from later reads,
        so any snapshot seen is at most as new as the log read after it. A snapshot of
        another run under the same id (created at another time) is not used. A load that
        had to read a long log after the snapshot asks this store's next commit of the run
        to write a new one.
        """
        with aws_call("Query"):
            first = self.client.query(
                TableName=self.table, KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": t.s(t.RUN_PREFIX + run_id)},
                ScanIndexForward=False, Limit=3, ConsistentRead=True,
            )["Items"]
        head = {row["sk"]["S"]: self._inline_attrs(row) for row in first}
        run, snap, events = (head.get(sk) for sk in (t.RUN_SK, t.SNAP_SK, t.EVENTS_SK))
        now = self.clock.now()
        found, snap_bytes = None, 0
        if run is not None and events is not None:
            if expired(t.expires_at(run), now):
                return None  # expired and awaiting TTL deletion
            base = None if snap is None else t.snapshot_from(snap, events)
            if base is not None and base.run.created_at != float(run["created_ts"]["N"]):
                base = None
            snap_bytes = 0 if base is None else t.item_bytes(head[t.SNAP_SK])
            found = self._walk_log(run_id, run, events, base)
        if found is None:
            found = self._load_whole(run_id)
        if found is None:
            return None
        stored, tail = found
        if tail >= max(self.snapshot_tail_bytes, snap_bytes // 2):
            self._due.put(stored)
        return self._resolved_state(stored)

    def _walk_log(self, run_id: str, run: t.Item, events: t.Item,
                  base: RunState | None) -> tuple[RunState, int] | None:
        """The rest of a cold load's walk: the log below ``RUN`` down to the snapshot ``base``.

        Returns the state as stored and the size of the log read; ``None`` when the view
        stayed torn (read the whole run instead).
        """
        since = -1 if base is None else base.run.version
        for attempt in range(TORN_TRIES):
            logs = {int(row["version"]["N"]): row for row in self._query(
                KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                ExpressionAttributeValues={":pk": t.s(t.RUN_PREFIX + run_id),
                                           ":lo": t.s(t.log_sk(since + 1)),
                                           ":hi": t.s(t.RUN_SK)},
                ExclusiveStartKey=t.key(t.RUN_PREFIX + run_id, t.RUN_SK),
                ScanIndexForward=False, ConsistentRead=True,
            )}
            if base is not None:
                state = _fold(base, logs, since)
            else:  # no snapshot: as a whole read, with the header of the first page
                state, torn = _assemble([run, events, *logs.values()], self.clock.now())
                state = None if torn else state
            if state is not None:
                return state, _log_bytes(logs)
            time.sleep(0.005 * 2**attempt)  # an entry written while the Query paged
        return None

    def _load_whole(self, run_id: str) -> tuple[RunState, int] | None:
        """The run as its whole partition holds it (S3 references unread), and its log's size."""
        for attempt in range(TORN_TRIES):
            rows = list(self._query(
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": t.s(t.RUN_PREFIX + run_id)},
                ConsistentRead=True,
            ))
            state, torn = _assemble(rows, self.clock.now())
            if not torn:
                tail = sum(t.item_bytes(row) for row in rows
                           if row["sk"]["S"].startswith(t.LOG_PREFIX))
                return None if state is None else (state, tail)
            time.sleep(0.005 * 2**attempt)  # the commit completes within milliseconds
        raise StoreError(f"run {run_id}: read a half-applied commit {TORN_TRIES} times in a row",
                         code="TornRead")

    def _log_since(self, run_id: str, since: int) -> dict[int, t.Item]:
        """The run's log entries after version ``since``, by version (strongly consistent)."""
        return {int(row["version"]["N"]): row for row in self._query(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": t.s(t.RUN_PREFIX + run_id),
                ":lo": t.s(t.log_sk(since + 1)),
                ":hi": t.s(t.LOG_END),
            },
            ConsistentRead=True,
        )}

    def _resolved_state(self, state: RunState) -> RunState:
        """``state`` with the values of its outputs held in S3 (read now) in their place."""
        if self.payloads is None:
            return state
        run = state.run
        if is_ref(run.output):
            run = replace(run, output=self._resolve(run.output))
        return RunState(run, {key: _resolved(rec, self._resolve) if is_ref(rec.output) else rec
                              for key, rec in state.steps.items()})

    def _catch_up(self, run_id: str, cached: RunState) -> RunState | None:
        """The cached state plus the commits since; ``None`` means: load it cold instead."""
        since = cached.run.version
        for attempt in range(TORN_TRIES):
            state = _fold(cached, self._log_since(run_id, since), since, self._resolve)
            if state is not None:
                run = state.run
                if run.status.finished and expired((run.ended_at or 0) + self.retention,
                                                   self.clock.now()):
                    return None  # expired: awaiting TTL deletion
                return state
            time.sleep(0.005 * 2**attempt)  # an entry written while the Query paged
        return None

    def _snapshot(self, state: RunState, commit: Commit, records: Sequence[StepRecord],
                  patch: RunPatch | None) -> None:
        """Write the snapshot of the run as ``commit`` (just applied) left it, if one is due.

        It is due when this store's cold load of the run read a long log after the last
        snapshot (see :meth:`_load_cold`), so containers that keep a run warm never pay for
        snapshots nobody reads. ``records`` and ``patch`` are the commit's as the log holds
        them (S3 references for large outputs). The write is conditioned on the stored
        snapshot being older (or another run's under the same id): a slow worker cannot set it
        back and a duplicate changes nothing. It is derived data, written after the commit
        landed: if it fails, the commit stands and cold loads read more log until the next.
        """
        run_id = state.run.run_id
        due = self._due.get(run_id)
        if (due is None or due.run.version != commit.expect_version
                or due.run.created_at != state.run.created_at):
            return
        self._due.drop(run_id)
        steps = dict(due.steps)
        steps.update((rec.key, rec) for rec in records)
        stored = RunState(committed_run(due.run, replace(commit, run=patch)), steps)
        now = self.clock.now()
        item = t.snapshot_item(stored, at=now, ttl=now + self.retention + 366 * t.DAY)
        size = t.item_bytes(item)
        if size > t.MAX_LOG_ITEM_BYTES:
            _log.warning("run %s: a snapshot of %d bytes would pass the item limit: cold loads "
                         "read the log after the last one", run_id, size)
            return
        try:
            with aws_call(f"PutItem (run {run_id} snapshot)"):
                self.client.put_item(
                    TableName=self.table, Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR #v < :v OR #c <> :c",
                    ExpressionAttributeNames={"#v": "version", "#c": "created_ts"},
                    ExpressionAttributeValues={":v": item["version"], ":c": item["created_ts"]},
                )
        except StoreError as exc:
            if exc.code != "ConditionalCheckFailedException":  # else a newer one is there
                _log.warning("run %s: snapshot of version %d not written, cold loads read the "
                             "log after the last one: %s", run_id, stored.run.version, exc)

    @property
    def cache_size(self) -> int:
        """How many runs the run-state cache keeps (0: none, every load is cold)."""
        return self._cache.size

    @cache_size.setter
    def cache_size(self, size: int) -> None:
        self._cache.size = size
