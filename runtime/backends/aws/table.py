"""The DynamoDB table that holds an app's run state: key schema, indexes, TTL and item layout.

One table per app, on-demand, every item keyed by readable string prefixes so the DynamoDB
console is a usable debugger (``RUN#<id>`` / ``RUN``, ``TRIGGER`` and ``LOG#<version>``,
``WAIT#<event>``, ``EVENT#<id>``, ``GATE#<scope>`` / ``<key>``).
The test harness creates the table from :func:`table_spec`; the CDK app mirrors it. The
second half of this module maps records to items and back (the layout, not the operations:
those are in ``store.py`` and the parts it joins).

A run is its commit log: one ``LOG#<version>`` item per commit holds the step records it
wrote, its change to the run and its outbox, so a step costs one write of its own log item.
The ``RUN`` item is the run's header for listings and the console; it is rewritten only when
the run itself changes (its status, handler attempt, output or error).

Index projections are chosen for the write path: an update that changes no projected
attribute writes nothing to an index.

* ``gsi1`` (runs by function and time) projects only ``status``: the one attribute its queries
  filter on. An update that changes no projected attribute writes nothing to an index, so a
  commit costs one index write only when the status changes, instead of two on every commit
  (with ``ALL``) plus a second copy of every run's output.
* ``gsi2`` (runs by status and time) is ``KEYS_ONLY`` for the same reason; listings fetch the
  current items with one ``BatchGetItem`` (and re-check the filter on them, since indexes lag).
* ``gsi3`` (events by day) is ``KEYS_ONLY`` too: every event is written once to the table, and
  with ``ALL`` a second time (up to 64 KiB) to the index; a listing instead reads the page it
  shows with one ``BatchGetItem``.

Index partition keys are sharded (:data:`INDEX_SHARDS`): ``FN#<fn>#<n>``,
``STATUS#<status>#<n>``, ``EVENTS#<day>#<n>``, with ``n`` a stable hash of the run or event
id, so no key takes more than one shard's share of the app's writes (one partition key takes
at most 1,000 WCU/s, GSIs included, and a throttled index throttles the table). A listing
queries every shard of its key with its page size and merges them newest first.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from runtime.activity import step_activity
from runtime.durations import format_instant
from runtime.records import (
    Committed,
    ErrorInfo,
    GateWrite,
    Outgoing,
    ParentRef,
    RerunOf,
    RunPatch,
    RunRecord,
    RunState,
    RunStatus,
    StepRecord,
    Waiter,
    WaiterKind,
    outgoing_from_json,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

#: The TTL attribute (epoch seconds). DynamoDB deletes lazily (up to days late) and DynamoDB
#: Local never does, so readers treat an item whose ``expires_at`` has passed as absent.
TTL_ATTRIBUTE = "expires_at"

GSI_RUNS_BY_FUNCTION = "gsi1"  # gsi1pk = FN#<function_id>#<n>, gsi1sk = <created ISO>#<run_id>
GSI_RUNS_BY_STATUS = "gsi2"  # gsi2pk = STATUS#<status>#<n>, gsi2sk = <created ISO>#<run_id>
GSI_EVENTS_BY_DAY = "gsi3"  # gsi3pk = EVENTS#<yyyy-mm-dd>#<n>, gsi3sk = <received ISO>#<id>

#: Partitions per listing key. The hottest key is ``STATUS#Running``: every start writes it
#: and every finish deletes from it, so at 2,000 run starts+finishes/s app-wide it takes
#: 2,000 one-WCU index writes/s unsharded (twice the 1,000 WCU/s a partition key takes), and
#: 250 WCU/s in 8 shards: a quarter of the cap, room for 4x that load. A listing queries every
#: shard (8 small Queries a key), which is why it is not more.
INDEX_SHARDS = 8


def shard(ident: str) -> int:
    """The index shard of a run or event id: stable across processes (unlike ``hash``)."""
    return zlib.crc32(ident.encode()) % INDEX_SHARDS


def function_pk(function_id: str, run_id: str) -> str:
    """The ``gsi1`` key of ``run_id``: its function's shard ``FN#<fn>#<n>``."""
    return f"{FN_PREFIX}{function_id}#{shard(run_id)}"


def status_pk(status: RunStatus, run_id: str) -> str:
    """The ``gsi2`` key of ``run_id`` while in ``status``: ``STATUS#<status>#<n>``."""
    return f"{STATUS_PREFIX}{status.value}#{shard(run_id)}"


def day_pk(day: str, event_id: str) -> str:
    """The ``gsi3`` key of an event received on ``day`` (``yyyy-mm-dd``): ``EVENTS#<day>#<n>``."""
    return f"{DAY_PREFIX}{day}#{shard(event_id)}"


def shard_pks(prefix: str) -> list[str]:
    """Every shard of an index key: ``<prefix>#0`` .. ``<prefix>#<INDEX_SHARDS - 1>``."""
    return [f"{prefix}#{i}" for i in range(INDEX_SHARDS)]


def _index(name: str, projection: dict[str, Any]) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": f"{name}pk", "KeyType": "HASH"},
            {"AttributeName": f"{name}sk", "KeyType": "RANGE"},
        ],
        "Projection": projection,
    }


def table_spec(name: str) -> dict[str, Any]:
    """``CreateTable`` arguments for an app's state table.

    TTL cannot be enabled in ``CreateTable``; follow it with ``UpdateTimeToLive`` using
    :func:`ttl_spec` (the CDK app sets ``timeToLiveAttribute`` instead).

    Args:
        name: The table name (``AppResources.table``).

    Returns:
        Keyword arguments for ``client.create_table``.

    """
    keys = ("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk")
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": k, "AttributeType": "S"} for k in keys],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            _index(GSI_RUNS_BY_FUNCTION,
                   {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]}),
            _index(GSI_RUNS_BY_STATUS, {"ProjectionType": "KEYS_ONLY"}),
            _index(GSI_EVENTS_BY_DAY, {"ProjectionType": "KEYS_ONLY"}),
        ],
    }


def ttl_spec(name: str) -> dict[str, Any]:
    """``UpdateTimeToLive`` arguments that enable TTL on :data:`TTL_ATTRIBUTE`."""
    return {
        "TableName": name,
        "TimeToLiveSpecification": {"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    }


# -- the item layout ----------------------------------------------------------------------
# Records become items with one attribute per field, so the console shows them plainly:
# times as ISO strings (``*_at``) next to exact epoch numbers (``*_ts``) the code reads back,
# free-form values as JSON strings, enums by their value.

Item: TypeAlias = "dict[str, AttributeValueTypeDef]"

RUN_PREFIX, WAIT_PREFIX, EVENT_PREFIX = "RUN#", "WAIT#", "EVENT#"
#: A delivery's mark (``RunStore.mark_delivery``): ``MARK#<run id>`` / the message id.
MARK_PREFIX = "MARK#"
RUN_SK, EVENT_SK = "RUN", "EVENT"
# A run's partition sorts as LOG#..., RUN, SNAP, TRIGGER: the commit log, then the header, the
# snapshot and the events side by side, so a cold load is one walk down from the end (the last
# three items, then the log down to the snapshot's version) and a warm one a range of the log
# (LOG#<v+1> .. LOG$).
EVENTS_SK = "TRIGGER"  # the triggering events
SNAP_SK = "SNAP"  # the run's state as of one version, compressed (see snapshot_item)
LOG_PREFIX, LOG_END = "LOG#", "LOG$"  # '$' sorts right after '#'
#: The most a commit-log item may hold (DynamoDB refuses items over 400 KB, names included).
MAX_LOG_ITEM_BYTES = 390 * 1024


def log_sk(version: int) -> str:
    """The sort key of the commit-log item of ``version`` (zero-padded so it sorts)."""
    return f"{LOG_PREFIX}{version:010d}"


FN_PREFIX, STATUS_PREFIX, DAY_PREFIX = "FN#", "STATUS#", "EVENTS#"
DAY = 86400


def s(value: str) -> AttributeValueTypeDef:
    """Make a string attribute."""
    return {"S": value}


def n(value: float) -> AttributeValueTypeDef:
    """Make a number attribute from a float's shortest repr, so it reads back exactly."""
    return {"N": str(Decimal(repr(value)))}


def js(value: Any) -> AttributeValueTypeDef:
    """Make a JSON string attribute (UTF-8 kept readable)."""
    return {"S": json.dumps(value, ensure_ascii=False, separators=(",", ":"))}


def iso(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds: ``2026-03-02T08:00:00.000Z``."""
    return format_instant(ts)


def key(pk: str, sk: str) -> Item:
    """Make a primary key."""
    return {"pk": s(pk), "sk": s(sk)}


def _time(item: Item, name: str, ts: float | None) -> None:
    if ts is not None:
        item[f"{name}_at"], item[f"{name}_ts"] = s(iso(ts)), n(ts)


def _ts(row: Item, name: str) -> float | None:
    return float(row[name]["N"]) if name in row else None


def expires_at(row: Item) -> float | None:
    """An item's :data:`TTL_ATTRIBUTE` (``None``: it never expires)."""
    return _ts(row, TTL_ATTRIBUTE)


def _json(row: Item, name: str) -> Any:
    return json.loads(row[name]["S"]) if name in row else None


def run_fields(run_id: str, *, status: RunStatus | None = None, attempt: int | None = None,
               output: Any = None, error: ErrorInfo | None = None,
               ended_at: float | None = None, expires: float | None = None) -> Item:
    """Encode the run attributes a commit may change (``None`` ones left out)."""
    item: Item = {}
    if status is not None:
        item["status"], item["gsi2pk"] = s(status.value), s(status_pk(status, run_id))
    if attempt is not None:
        item["attempt"] = n(attempt)
    if output is not None:
        item["output"] = js(output)
    if error is not None:
        item["error"] = js(error.to_json())
    _time(item, "ended", ended_at)
    if expires is not None:
        item[TTL_ATTRIBUTE] = n(int(expires))
    return item


def run_item(run: RunRecord, expires: float | None) -> Item:
    """Encode the run item (``RUN#<id>`` / ``RUN``): all but its events, as of ``run.version``.

    The item is written when the run is created and updated only by commits that change the
    run itself (a status, the handler's attempt, its output or error): a step's commit writes
    its log item alone. ``version`` says which commit the item reflects.
    """
    sort = f"{iso(run.created_at)}#{run.run_id}"
    item: Item = {
        **key(RUN_PREFIX + run.run_id, RUN_SK),
        "run_id": s(run.run_id), "function_id": s(run.function_id), "version": n(run.version),
        "gsi1pk": s(function_pk(run.function_id, run.run_id)), "gsi1sk": s(sort),
        "gsi2sk": s(sort),
        **run_fields(run.run_id, status=run.status, attempt=run.attempt, output=run.output,
                     error=run.error, ended_at=run.ended_at, expires=expires),
    }
    _time(item, "created", run.created_at)
    if run.deadline is not None:
        item["deadline"], item["deadline_ts"] = s(iso(run.deadline)), n(run.deadline)
    if run.parent is not None:
        item["parent"] = js(asdict(run.parent))
    if run.rerun_of is not None:
        item["rerun_of"] = js(asdict(run.rerun_of))
    if run.held_by is not None:
        item["held_by"] = s(run.held_by)
    if run.held_until is not None:
        item["held_until"], item["held_until_ts"] = s(iso(run.held_until)), n(run.held_until)
    return item


def events_item(run: RunRecord, expires: float | None) -> Item:
    """Encode the run's events, kept apart from the run item (they may be 256 KB)."""
    item: Item = {**key(RUN_PREFIX + run.run_id, EVENTS_SK), "events": js(list(run.events))}
    if expires is not None:
        item[TTL_ATTRIBUTE] = n(int(expires))
    return item


def log_item(run_id: str, version: int, msg_id: str | None, *, at: float, ttl: float,
             steps: Sequence[StepRecord] = (), patch: RunPatch | None = None,
             outbox: Sequence[Outgoing] = ()) -> Item:
    """Encode the commit-log entry of ``version``: everything that commit changed.

    The log is the run's history and the only copy of its steps: the step records the
    commit wrote (``steps``), its change to the run record (``run``), the message that made
    it (``msg_id``) and what it had to send (``outbox``, re-sent if that message is
    delivered again). Append-only: a reader holding the run at version ``v`` catches up by
    reading the entries after ``v``. ``step`` and ``status`` repeat a one-step commit's key
    and status, and ``doing`` says what a step it left pending waits for (sleeping until T,
    waiting for an event, invoking, retrying at T), so the console reads as a timeline.
    """
    item: Item = {
        **key(RUN_PREFIX + run_id, log_sk(version)), "version": n(version),
        "steps": js([rec.to_json() for rec in steps]), TTL_ATTRIBUTE: n(int(ttl)),
        "outbox": js([o.to_json() for o in outbox]),
    }
    _time(item, "committed", at)
    if msg_id is not None:
        item["msg_id"] = s(msg_id)
    if len(steps) == 1:
        item["step"], item["status"] = s(steps[0].key), s(steps[0].status.value)
        doing = step_activity(steps[0])
        if doing is not None:
            item["doing"] = s(doing["message"])  # "sleeping in step 'x' until ..."
    if patch is not None:
        item["run"] = js(patch.to_json())
    return item


def log_committed(row: Item) -> Committed:
    """The commit a log entry records: its version, outbox and step keys."""
    return Committed(
        int(row["version"]["N"]),
        tuple(outgoing_from_json(o) for o in _json(row, "outbox") or ()),
        tuple(raw["key"] for raw in _json(row, "steps") or ()),
    )


def log_entry(row: Item) -> tuple[int, list[StepRecord], RunPatch | None, str | None,
                                  tuple[Outgoing, ...]]:
    """Inverse of :func:`log_item`: ``(version, steps, run patch, msg_id, outbox)``."""
    patch = _json(row, "run")
    return (
        int(row["version"]["N"]),
        [StepRecord.from_json(raw) for raw in _json(row, "steps") or ()],
        RunPatch.from_json(patch) if patch is not None else None,
        row["msg_id"]["S"] if "msg_id" in row else None,
        tuple(outgoing_from_json(o) for o in _json(row, "outbox") or ()),
    )


def snapshot_item(state: RunState, *, at: float, ttl: float) -> Item:
    """Encode the snapshot of a run's state at ``state.run.version`` (``RUN#<id>`` / ``SNAP``).

    Derived data: the run record (but its events, which the ``TRIGGER`` item keeps) and every
    step record as the log holds them (an output in S3 stays a reference), as zlib-compressed
    JSON in the binary ``state``. The steps are stored by column (every key, then every
    status, ...; a column whose values are all the same as ``{"same": value}``): records of
    one run repeat most fields, so a thousand small steps take about 5-16 KB. ``version`` and
    ``created_ts`` are plain so a write can be conditioned on them; ``steps``, ``bytes`` and
    ``snapshot_at`` are for people.
    """
    run = state.run.to_json()
    del run["events"]
    records = [rec.to_json() for rec in state.steps.values()]
    columns = {name: _column([raw[name] for raw in records]) for name in _STEP_FIELDS}
    body = json.dumps({"run": run, "n": len(records), "steps": columns},
                      ensure_ascii=False, separators=(",", ":")).encode()
    item: Item = {
        **key(RUN_PREFIX + state.run.run_id, SNAP_SK), "version": n(state.run.version),
        "created_ts": n(state.run.created_at), "steps": n(len(records)),
        "bytes": n(len(body)), "state": {"B": zlib.compress(body, 9)},
        TTL_ATTRIBUTE: n(int(ttl)),
    }
    _time(item, "snapshot", at)
    return item


_STEP_FIELDS = tuple(f.name for f in fields(StepRecord))  # the keys of StepRecord.to_json


def _column(values: list[Any]) -> Any:
    return {"same": values[0]} if values and all(v == values[0] for v in values) else values


def snapshot_from(row: Item, events: Item) -> RunState:
    """Inverse of :func:`snapshot_item`, with the run's events from its ``TRIGGER`` item."""
    raw = json.loads(zlib.decompress(row["state"]["B"]))
    run = RunRecord.from_json({**raw["run"], "events": _json(events, "events") or []})
    count, columns = raw["n"], raw["steps"]
    values = {name: [col["same"]] * count if isinstance(col, dict) else col
              for name, col in columns.items()}
    steps = (StepRecord.from_json({name: values[name][i] for name in values})
             for i in range(count))
    return RunState(run, {rec.key: rec for rec in steps})


def run_from(run: Item, events: Item | None) -> RunRecord:
    """Inverse of :func:`run_item` + :func:`events_item` (as of the run item's ``version``)."""
    error, parent = _json(run, "error"), _json(run, "parent")
    return RunRecord(
        run_id=run["run_id"]["S"],
        function_id=run["function_id"]["S"],
        events=tuple(_json(events, "events") or ()) if events else (),
        status=RunStatus(run["status"]["S"]),
        version=int(run["version"]["N"]),
        attempt=int(run["attempt"]["N"]),
        created_at=float(run["created_ts"]["N"]),
        ended_at=_ts(run, "ended_ts"),
        output=_json(run, "output"),
        error=ErrorInfo.from_json(error) if error else None,
        parent=ParentRef(**parent) if parent else None,
        rerun_of=RerunOf(**rerun_of) if (rerun_of := _json(run, "rerun_of")) else None,
        deadline=_ts(run, "deadline_ts"),
        held_by=run["held_by"]["S"] if "held_by" in run else None,
        held_until=_ts(run, "held_until_ts"),
    )


def item_bytes(item: Item) -> int:
    """An item's size as DynamoDB counts it (names + values; numbers ~1 byte per 2 digits)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: Any) -> int:
    kind, v = next(iter(value.items()))
    if kind == "S":
        return len(v.encode())
    if kind == "B":
        return len(v)
    if kind == "N":
        return len(str(v)) // 2 + 1
    if kind == "M":
        return 3 + item_bytes(v)
    if kind in ("L",):
        return 3 + sum(1 + _value_bytes(x) for x in v)
    if kind in ("SS", "NS"):
        return sum(len(str(x).encode()) for x in v)
    return 1


WAIT_PATHS_SK = "!paths"  # in WAIT#<name>: the paths its waiters are indexed by


def waiters_pk(event_name: str, path: str = "", value: str = "") -> str:
    """The partition of an event name's waiters.

    Those with no value index (``path`` empty), or those indexed under ``path`` = ``value``
    (:attr:`Waiter.index`).
    """
    return WAIT_PREFIX + event_name + (f"#{path}={value}" if path else "")


def waiter_key(w: Waiter) -> tuple[str, str]:
    """Return a waiter's ``(pk, sk)``.

    In its event name's partition, or in the partition of the value its match needs, so an
    event reads only the waiters it could match.
    """
    return waiters_pk(w.event_name, *(w.index or ("", ""))), f"{w.run_id}#{w.key}"


def wait_paths_update(table: str, event_name: str, paths: Sequence[str]) -> dict[str, Any]:
    """``UpdateItem`` arguments that add ``paths`` to the name's index registry."""
    return {
        "TableName": table, "Key": key(waiters_pk(event_name), WAIT_PATHS_SK),
        "UpdateExpression": "ADD paths :p",
        "ExpressionAttributeValues": {":p": {"SS": list(paths)}},
    }


def waiter_item(w: Waiter) -> Item:
    """Encode a waiter; its TTL is a day after it lapses, to leave time to act on the lapse."""
    item: Item = {
        **key(*waiter_key(w)), "event_name": s(w.event_name), "run_id": s(w.run_id),
        "function_id": s(w.function_id), "key": s(w.key), "kind": s(w.kind.value),
        "expression": s(w.expression),
    }
    if w.expires_at is not None:
        item["expires_ts"], item["expires"] = n(w.expires_at), s(iso(w.expires_at))
        item[TTL_ATTRIBUTE] = n(int(w.expires_at + DAY))
    return item


def waiter_from(row: Item) -> Waiter:
    """Inverse of :func:`waiter_item`."""
    return Waiter(
        event_name=row["event_name"]["S"], run_id=row["run_id"]["S"],
        function_id=row["function_id"]["S"], key=row["key"]["S"],
        kind=WaiterKind(row["kind"]["S"]), expression=row.get("expression", s(""))["S"],
        expires_at=_ts(row, "expires_ts"),
    )


def event_item(event: dict[str, Any], now: float, ttl: float) -> Item:
    """Encode an event-log entry, in the day bucket of ``now`` (:data:`GSI_EVENTS_BY_DAY`).

    The index's sort key carries what a listing row shows (:func:`event_summary`): the
    receive time first (the order), then the event's ``ts``, name and id. ``gsi3`` is
    ``KEYS_ONLY``, so the dashboard's events list is read from the index alone, at the
    index entries' size, never at the events' (up to 64 KiB each inline).
    """
    received = iso(now)
    item: Item = {
        **key(EVENT_PREFIX + event["id"], EVENT_SK), "name": s(event["name"]),
        "event": js(event), "gsi3pk": s(day_pk(received[:10], event["id"])),
        "gsi3sk": s(f"{received}#{int(event.get('ts') or 0)}#{event['name']}#{event['id']}"),
        TTL_ATTRIBUTE: n(int(now + ttl) + 1),
    }
    _time(item, "received", now)
    return item


TIMELINE_PREFIX = "EVNAME#"


def timeline_pk(name: str, event_id: str) -> str:
    """The timeline partition of an event: its name's shard ``EVNAME#<name>#<n>``.

    Sharded like the listing indexes, so a busy name spreads its writes: a lookback reads
    every shard of the name (:func:`timeline_pks`).
    """
    return f"{TIMELINE_PREFIX}{name}#{shard(event_id)}"


def timeline_pks(name: str) -> list[str]:
    """Every timeline partition of ``name``."""
    return shard_pks(TIMELINE_PREFIX + name)


def timeline_key(name: str, ts: int, event_id: str) -> Item:
    """Key of an event's timeline entry: in its name's shard, sorted by ``ts``."""
    return key(timeline_pk(name, event_id), timeline_sk(ts, event_id))


def timeline_sk(ts: int, event_id: str) -> str:
    """Sort key of a timeline entry (``ts`` zero-padded so strings sort as numbers)."""
    return f"{ts:015d}#{event_id}"


def timeline_item(event: dict[str, Any], now: float, ttl: float) -> Item:
    """Encode a timeline entry (what waits and cancel_on look back over)."""
    return {
        **timeline_key(event["name"], int(event["ts"]), event["id"]),
        "event": js(event), TTL_ATTRIBUTE: n(int(now + ttl) + 1),
    }


def event_summary(sort_key: str) -> dict[str, Any] | None:
    """An event's listing row (``id``, ``name``, ``ts``) from its ``gsi3sk``.

    ``None`` for an entry written before the sort key carried them (``<received>#<id>``):
    its item must be read. A name has no ``#``; the id, which may, comes last.
    """
    parts = sort_key.split("#", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    _, ts, name, event_id = parts
    return {"id": event_id, "name": name, "ts": int(ts)}


def event_from(row: Item) -> dict[str, Any]:
    """Decode the event of an event-log item."""
    return dict(json.loads(row["event"]["S"]))


# -- flow-control gates --------------------------------------------------------------------

GATE_PREFIX = "GATE#"  # GATE#<scope> / <key>: one item per gate
GATE_EMPTY_KEY = "-"  # a key attribute cannot be empty
GATE_DIGEST_PREFIX = "#sha256:"
MAX_GATE_KEY_BYTES = 512  # longer keys are stored by digest (a sort key holds 1 KB)
MAX_GATE_STATE_BYTES = 350 * 1024  # leaves room under the 400 KB item limit


def gate_sk(value: str) -> str:
    """The sort key of the gate keyed ``value`` within its scope's partition.

    Readable as the key itself where that is unambiguous: ``-`` for the empty key, a digest
    (``#sha256:<hex>``) for one longer than :data:`MAX_GATE_KEY_BYTES`, and ``#`` before a
    key that starts with ``-`` or ``#`` (so ``"-"`` is not the empty key and no key reads as
    a digest).
    """
    if not value:
        return GATE_EMPTY_KEY
    raw = value.encode()
    if len(raw) > MAX_GATE_KEY_BYTES:
        return GATE_DIGEST_PREFIX + hashlib.sha256(raw).hexdigest()
    return "#" + value if value[0] in "-#" else value


def gate_key(scope: str, value: str) -> Item:
    """The primary key of the gate ``(scope, value)``."""
    return key(GATE_PREFIX + scope, gate_sk(value))


def gate_item(write: GateWrite) -> Item:
    """Encode a gate's new state (its version becomes ``expect_version + 1``).

    ``key`` keeps the original key (cut to 512 characters) for reading in the console; the
    TTL rounds ``expires_at`` up so DynamoDB never deletes a gate before it expired.
    """
    item: Item = {
        **gate_key(write.scope, write.key), "scope": s(write.scope),
        "key": s(write.key[:512]), "state": js(write.state),
        "version": n(write.expect_version + 1),
    }
    if write.expires_at is not None:
        item["expires_ts"], item["expires"] = n(write.expires_at), s(iso(write.expires_at))
        item[TTL_ATTRIBUTE] = n(math.ceil(write.expires_at))
    return item


def gate_from(row: Item) -> tuple[dict[str, Any] | None, int, float | None]:
    """Inverse of :func:`gate_item`: the gate's ``(state, version, expires_at)``."""
    return _json(row, "state"), int(row["version"]["N"]), _ts(row, "expires_ts")
