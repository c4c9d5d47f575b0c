"""DynamoStore on DynamoDB Local beyond the Store contract (tests/stores): the item layout,
pagination, TTL, the 100-item limit, error translation and the commit log behind warm loads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from runtime.backends.aws import table as t
from runtime.backends.aws.payloads import PayloadError, S3Payloads, is_ref
from runtime.backends.aws.store import DynamoStore, StoreError
from runtime.backends.aws.table import table_spec, ttl_spec
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import RunQuery
from runtime.records import (
    Commit,
    EventOut,
    Gate,
    GateWrite,
    RunPatch,
    RunState,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    applied,
)
from stepkit_emulators.emulators import AwsEmulators
from tests.stores.helpers import DAY, START, make_run, step, waiter

pytestmark = pytest.mark.aws

TABLE = "stepkit-test-state"


@pytest.fixture
def ddb(aws: AwsEmulators) -> Any:
    client = aws.client("dynamodb")
    client.create_table(**table_spec(TABLE))
    client.update_time_to_live(**ttl_spec(TABLE))
    return client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def store(ddb: Any, clock: FakeClock) -> DynamoStore:
    return DynamoStore(TABLE, client=ddb, clock=clock)


def record_calls(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Record (operation, request parameters) of every call ``client`` makes from now on."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def before_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, json.loads(params["body"] or b"{}")))

    client.meta.events.register("before-call.dynamodb.*", before_call)
    return calls


def raw(ddb: Any, pk: str, sk: str) -> dict[str, Any]:
    return dict(ddb.get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"])


# -- events --------------------------------------------------------------------------------


def test_list_events_newest_first_today_then_yesterday(store: DynamoStore,
                                                       clock: FakeClock) -> None:
    clock.advance(3600)  # 09:00 on 2 March
    # 28 Feb 08:00, 1 March 07:00, 2 March 00:00 and 08:00
    for i, at in enumerate([START - 2 * DAY, START - DAY - 3600, START - 8 * 3600, START]):
        store.remember_event({"id": f"e{i}", "name": "n"}, now=at, ttl=2 * DAY)
    assert [e["id"] for e in store.list_events()] == ["e3", "e2", "e1"]  # e0: two days ago
    assert [e["id"] for e in store.list_events(2)] == ["e3", "e2"]
    assert store.list_events(0) == []


def test_an_event_summary_listing_reads_the_index_alone(store: DynamoStore, ddb: Any) -> None:
    """The dashboard's events list costs index entries, not events (each up to 64 KiB)."""
    big = "x" * 60_000
    for i in range(5):
        store.remember_event({"id": f"big#{i}", "name": "order/placed", "ts": 1_000 + i,
                              "data": {"blob": big}}, now=START + i, ttl=DAY)
    # An entry written before the sort key carried the summary: its item is read.
    old = t.event_item({"id": "old", "name": "legacy/x", "ts": 7, "data": {}}, START - 1, DAY)
    old["gsi3sk"] = t.s(f"{t.iso(START - 1)}#old")
    ddb.put_item(TableName=TABLE, Item=old)
    calls = record_calls(ddb)
    listed = store.list_events(6, summary=True)
    assert listed == [{"id": f"big#{i}", "name": "order/placed", "ts": 1_000 + i}
                      for i in range(4, -1, -1)] + [
        {"id": "old", "name": "legacy/x", "ts": 7, "data": {}}]
    gets = [body for op, body in calls if op == "BatchGetItem"]
    assert [k["pk"]["S"] for g in gets for k in g["RequestItems"][TABLE]["Keys"]] == [
        "EVENT#old"]  # only the entry of the old layout
    assert store.list_events(1)[0]["data"] == {"blob": big}  # whole, when asked


def test_event_listing_merges_every_shard_and_reads_only_the_page_shown(
    store: DynamoStore, ddb: Any
) -> None:
    ids = [f"ev{i:02d}" for i in range(40)]
    assert len({t.shard(i) for i in ids}) == t.INDEX_SHARDS  # every shard holds some
    for i, event_id in enumerate(ids):
        store.remember_event({"id": event_id, "name": "n", "data": {"i": i}},
                             now=START + i, ttl=DAY)
    raw_item = raw(ddb, "EVENT#ev07", "EVENT")
    assert raw_item["gsi3pk"] == {"S": f"EVENTS#2026-03-02#{t.shard('ev07')}"}
    calls = record_calls(ddb)
    listed = store.list_events(5)
    assert [e["id"] for e in listed] == ids[::-1][:5]  # newest first across shards
    assert listed[0]["data"] == {"i": 39}  # the whole event, read from the table
    assert [e["id"] for e in store.list_events(100)] == ids[::-1]
    gets = [body for op, body in calls if op == "BatchGetItem"]
    assert len(gets[0]["RequestItems"][TABLE]["Keys"]) == 5  # the page, not the shards' reads
    queries = [body for op, body in calls if op == "Query"]
    assert all(q["Limit"] <= 100 for q in queries)
    assert {q["ExpressionAttributeValues"][":p"]["S"] for q in queries} == {
        f"EVENTS#{day}#{n}" for day in ("2026-03-02", "2026-03-01") for n in range(8)}


def test_a_names_timeline_is_sharded_and_read_back_oldest_first(store: DynamoStore,
                                                                 ddb: Any) -> None:
    ids = [f"t{i:02d}" for i in range(24)]
    assert len({t.shard(i) for i in ids}) == t.INDEX_SHARDS
    for i, event_id in enumerate(ids):
        store.log_event({"id": event_id, "name": "n", "ts": 1000 + i, "data": {}},
                        now=START, ttl=DAY)
    assert raw(ddb, f"EVNAME#n#{t.shard('t05')}", t.timeline_sk(1005, "t05"))
    assert [e["id"] for e in store.events_since("n", 0, now=START)] == ids
    assert [e["id"] for e in store.events_since("n", 1020, now=START)] == ids[20:]
    assert store.logged_event("n", 1005, "t05") == {"id": "t05", "name": "n", "ts": 1005,
                                                    "data": {}}


# -- listing -------------------------------------------------------------------------------


def test_runs_listings_are_the_same_runs_newest_first_across_shards(
    store: DynamoStore, ddb: Any
) -> None:
    ids = [f"run{i:02d}" for i in range(24)]
    assert len({t.shard(i) for i in ids}) == t.INDEX_SHARDS
    for i, run_id in enumerate(ids):
        store.create_run(make_run(run_id, "f1" if i % 3 else "f2", START + i), [])
    for run_id in ids[::4]:  # some finish: they move to STATUS#Failed#<the same shard>
        store.commit(run_id, Commit("m", 0, run=RunPatch(status=RunStatus.FAILED)))
    newest = ids[::-1]
    assert [r.run_id for r in store.list_runs(RunQuery(limit=100))] == newest
    assert [r.run_id for r in store.list_runs(RunQuery(limit=7))] == newest[:7]
    assert [r.run_id for r in store.list_runs(RunQuery("f1", limit=100))] == [
        r for r in newest if int(r[3:]) % 3]
    failed = [r for r in newest if int(r[3:]) % 4 == 0]
    assert [r.run_id for r in store.list_runs(RunQuery(status=RunStatus.FAILED))] == failed
    running = [r.run_id for r in store.list_runs(RunQuery(status=RunStatus.RUNNING, limit=5))]
    assert running == [r for r in newest if r not in failed][:5]
    assert [r.run_id for r in store.list_runs(RunQuery("f2", RunStatus.FAILED))] == [
        r for r in failed if int(r[3:]) % 3 == 0]
    assert [r.run_id for r in store.list_runs(RunQuery(since=START + 20))] == newest[:4]
    failed_item = raw(ddb, "RUN#run04", "RUN")
    assert failed_item["gsi2pk"] == {"S": f"STATUS#Failed#{t.shard('run04')}"}
    assert failed_item["gsi1pk"] == {"S": f"FN#f1#{t.shard('run04')}"}



def test_list_runs_by_function_and_status_reads_past_non_matching_pages(
    store: DynamoStore, ddb: Any
) -> None:
    for i in range(7):
        store.create_run(make_run(f"r{i}", "f1", START + i), [])
    store.commit("r0", Commit("m", 0, run=RunPatch(status=RunStatus.FAILED)))
    calls = record_calls(ddb)
    assert [r.run_id for r in store.list_runs(RunQuery("f1", RunStatus.FAILED, limit=2))] == ["r0"]
    assert all(op in ("Query", "BatchGetItem") for op, _ in calls)  # never a Scan
    assert sum(op == "Query" for op, _ in calls) >= 3  # pages of 2 items, filtered


# -- load: one paginated Query -------------------------------------------------------------


def test_load_of_250_steps_is_one_paginated_query(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    big = "x" * 9000  # 250 steps x 9 KB: more than DynamoDB's 1 MB per Query page
    keys = [f"s{i:03}" for i in range(250)]
    chunks = [keys[i:i + 40] for i in range(0, 250, 40)]  # 40 steps: a 360 KB log item
    for version, chunk in enumerate(chunks):
        writes = tuple(StepWrite(step(k, output=[k, big])) for k in chunk)
        assert store.commit("r1", Commit(f"m{version}", version, steps=writes))
    store = DynamoStore(store.table, client=store.client, clock=store.clock)  # a cold container
    calls = record_calls(ddb)
    state = store.load("r1")
    assert state is not None
    assert len(state.steps) == 250
    assert state.steps["s249"] == step("s249", output=["s249", big])
    assert state.run.version == len(chunks)
    ops = [op for op, _ in calls]
    assert ops == ["Query"] * len(ops) and len(ops) >= 3
    # One chain: the first call starts the partition, each next one continues the previous.
    assert "ExclusiveStartKey" not in calls[0][1]
    assert all("ExclusiveStartKey" in params for _, params in calls[1:])
    assert all(params["ConsistentRead"] is True for _, params in calls)


def test_load_reads_again_when_it_sees_a_half_applied_commit(store: DynamoStore,
                                                            ddb: Any) -> None:
    store.create_run(make_run(), [])
    # A commit that changes the run writes its log entry and the run item in one transaction.
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a")),), run=RunPatch(attempt=1)))
    torn = {"left": 1}

    def tear(parsed: dict[str, Any], **_: Any) -> None:
        # Pretend the Query read the log before commit m1 reached it, the run item after.
        if torn["left"]:
            torn["left"] -= 1
            parsed["Items"] = [i for i in parsed["Items"] if i["sk"]["S"] != "LOG#0000000001"]

    cold = DynamoStore(store.table, client=store.client, clock=store.clock)
    ddb.meta.events.register("after-call.dynamodb.Query", tear)
    calls = record_calls(ddb)
    state = cold.load("r1")
    assert state is not None
    assert set(state.steps) == {"a"} and state.run.attempt == 1
    assert [op for op, _ in calls] == ["Query", "Query"]


def test_load_gives_up_on_a_view_that_stays_torn(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    store.commit("r1", Commit("m1", 0, run=RunPatch(attempt=1)))

    def tear(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Items"] = [i for i in parsed["Items"] if i["sk"]["S"] != "LOG#0000000001"]

    ddb.meta.events.register("after-call.dynamodb.Query", tear)
    with pytest.raises(StoreError, match="r1") as info:
        DynamoStore(store.table, client=store.client, clock=store.clock).load("r1")
    assert info.value.code == "TornRead"


# -- the item layout -----------------------------------------------------------------------


def test_a_refused_commit_on_an_unknown_run_writes_no_item(store: DynamoStore, ddb: Any) -> None:
    assert store.commit("ghost", Commit(msg_id="m", expect_version=0,
                                        steps=(StepWrite(step("a")),))) is False
    assert ddb.scan(TableName=TABLE)["Items"] == []


def test_items_are_legible_in_the_console(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    rec = StepRecord(key="charge", id="charge", kind=StepKind.RUN, status=StepStatus.COMPLETED,
                     output={"ok": True, "amount": 12.5}, started_at=START, ended_at=START + 1.5)
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(rec),)))
    item = raw(ddb, "RUN#r1", "LOG#0000000001")  # the commit's one item: a line of history
    assert item["step"] == {"S": "charge"}
    assert item["status"] == {"S": "Completed"}
    assert item["msg_id"] == {"S": "m1"}
    assert item["committed_at"] == {"S": "2026-03-02T08:00:00.000Z"}
    [written] = json.loads(item["steps"]["S"])
    assert written["output"] == {"ok": True, "amount": 12.5}
    assert (written["kind"], written["started_at"], written["ended_at"]) == (
        "run", START, START + 1.5)
    run = raw(ddb, "RUN#r1", "RUN")
    assert run["status"] == {"S": "Running"}
    assert run["created_at"] == {"S": "2026-03-02T08:00:00.000Z"}
    assert run["version"] == {"N": "0"}  # a step's commit does not rewrite the run item
    assert run["gsi1pk"] == {"S": "FN#fn#1"}  # shard 1 of 8: crc32("r1") % 8
    assert run["gsi2pk"] == {"S": "STATUS#Running#1"}
    assert run["gsi1sk"] == {"S": "2026-03-02T08:00:00.000Z#r1"}
    assert json.loads(raw(ddb, "RUN#r1", "TRIGGER")["events"]["S"]) == [{"id": "e1", "name": "a"}]
    assert "expires_at" not in run  # running: kept
    assert "doing" not in item  # the step has its result
    # A step left pending says what it waits for, in the same item.
    nap = StepRecord(key="nap", id="nap", kind=StepKind.SLEEP, status=StepStatus.SLEEPING,
                     started_at=START, wake_at=START + 3 * 86400)
    store.commit("r1", Commit("m2", 1, steps=(StepWrite(nap),)))
    item = raw(ddb, "RUN#r1", "LOG#0000000002")
    assert (item["status"], item["doing"]) == (
        {"S": "Sleeping"}, {"S": "sleeping in step 'nap' until 2026-03-05T08:00:00Z"})


def test_finished_runs_expire_after_retention_and_steps_later(store: DynamoStore, ddb: Any,
                                                              clock: FakeClock) -> None:
    store.create_run(make_run(), [waiter()])
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a")),)))
    clock.advance(100)
    store.commit("r1", Commit("m2", 1, run=RunPatch(status=RunStatus.COMPLETED,
                                                    ended_at=START + 90)))
    expires = int(START + 90 + 30 * DAY)
    for sk in ("RUN", "TRIGGER"):
        assert raw(ddb, "RUN#r1", sk)["expires_at"] == {"N": str(expires)}, sk
    # The log goes with the run (the run reaper); this is only the backstop if it gives up.
    log = raw(ddb, "RUN#r1", "LOG#0000000001")
    assert log["expires_at"] == {"N": str(int(START + 396 * DAY))}
    waiter_item = raw(ddb, "WAIT#order/paid#data.x=1", "r1#w")  # indexed by its match value
    assert waiter_item["expires_at"] == {"N": str(int(START + 500 + DAY))}
    # DynamoDB deletes lazily (DynamoDB Local never does): past its TTL the run reads as gone.
    clock.set(expires + 1)
    assert store.load("r1") is None
    assert store.list_runs(RunQuery()) == []


# -- failures ------------------------------------------------------------------------------


def test_more_than_100_items_is_refused_before_calling_aws(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    store.load("r1")
    calls = record_calls(ddb)
    waiters = tuple(waiter(key=f"w{i}") for i in range(99))  # + the log and the run item = 101
    patch = RunPatch(attempt=1)
    with pytest.raises(StoreError, match=r"run r1: one commit would write 101 items") as info:
        store.commit("r1", Commit("m1", 0, run=patch, add_waiters=waiters))
    assert info.value.code == "TooManyItems"
    assert [op for op, _ in calls] == ["UpdateItem"]  # the index registry, before the commit
    assert store.commit("r1", Commit("m1", 0, run=patch, add_waiters=waiters[:98]))  # 100 fits
    # Steps are no items of their own: a hundred of them are one log entry.
    steps = tuple(StepWrite(step(f"s{i}")) for i in range(150))
    assert store.commit("r1", Commit("m2", 1, steps=steps))


def test_a_log_item_over_the_item_limit_is_refused_naming_the_run(store: DynamoStore,
                                                                 ddb: Any) -> None:
    store.create_run(make_run(), [])
    big = "x" * 100_000
    fits = tuple(StepWrite(step(k, output=[k, big])) for k in "abc")  # 300 KB
    assert store.commit("r1", Commit("m0", 0, steps=fits))
    over = tuple(StepWrite(step(k, output=[k, big])) for k in "defg")  # 400 KB
    with pytest.raises(StoreError, match=r"run r1: commit 2 would write a log item of") as info:
        store.commit("r1", Commit("m1", 1, steps=over))
    assert info.value.code == "ItemTooLarge" and not info.value.is_retriable
    state = DynamoStore(store.table, client=store.client, clock=store.clock).load("r1")
    assert state is not None and set(state.steps) == {"a", "b", "c"}


def test_aws_errors_become_store_errors(aws: AwsEmulators) -> None:
    store = DynamoStore("no-such-table", client=aws.client("dynamodb"))
    with pytest.raises(StoreError) as info:
        store.load("r1")
    assert info.value.code == "ResourceNotFoundException"
    assert "Query" in str(info.value)
    with pytest.raises(StoreError) as info:
        store.create_run(make_run(), [])
    assert info.value.code == "ResourceNotFoundException"
    with pytest.raises(StoreError):
        store.remember_event({"id": "e", "name": "n"}, now=START, ttl=1)


def _cancelled(*codes: str) -> dict[str, Any]:
    return {"service_error_code": "TransactionCanceledException",
            "service_message": f"Transaction cancelled [{', '.join(codes)}]",
            "modeled_fields": {"CancellationReasons": [{"Code": c} for c in codes]}}


def test_transaction_conflicts_are_retried_then_refused() -> None:
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x")
    store = DynamoStore(TABLE, client=client)
    patch = RunPatch(attempt=1)  # a commit that changes the run: a transaction

    def commit() -> bool:
        store._cache.clear()
        store._cache.put(RunState(make_run(), {}))
        return store.commit("r1", Commit("m1", 0, run=patch))

    with Stubber(client) as stub:
        stub.add_client_error("transact_write_items", **_cancelled("None", "TransactionConflict"))
        stub.add_response("transact_write_items", {})
        assert commit() is True  # a conflict, then through
        for _ in range(4):
            stub.add_client_error("transact_write_items", **_cancelled("TransactionConflict"))
        assert commit() is False  # conflicts persisted
        stub.add_client_error("transact_write_items",
                              **_cancelled("TransactionConflict", "ConditionalCheckFailed"))
        assert commit() is False  # refused at once
        stub.add_client_error("transact_write_items", **_cancelled("ThrottlingError"))
        with pytest.raises(StoreError) as info:
            commit()
        assert info.value.code == "TransactionCanceledException"
        stub.assert_no_pending_responses()


def test_a_create_refused_for_no_known_reason_raises_rather_than_passing_for_a_copy() -> None:
    # Only the run item and the gates carry conditions; a refusal elsewhere would be a bug or
    # an AWS change, and taking it for "the run exists" would drop the start silently.
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x")
    store = DynamoStore(TABLE, client=client)
    with Stubber(client) as stub:
        stub.add_client_error("transact_write_items",
                              **_cancelled("None", "ConditionalCheckFailed", "None"))
        with pytest.raises(StoreError) as info:
            store.create_run(make_run(), [])
        assert info.value.code == "TransactionCanceled" and info.value.is_retriable
        stub.assert_no_pending_responses()


# -- the client and the commit log ---------------------------------------------------------


def test_default_client_comes_from_the_environment(ddb: Any) -> None:
    store = DynamoStore(TABLE)  # boto3.client("dynamodb"), routed by the fixture's env vars
    assert store.create_run(make_run(), [])
    assert store.load("r1") is not None


def test_a_warm_load_reads_only_the_commits_since(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    for v in range(20):
        assert store.commit("r1", Commit(f"m{v}", v, steps=(StepWrite(step(f"s{v}")),)))
    other = DynamoStore(store.table, client=store.client, clock=store.clock)  # another container
    assert other.load("r1") is not None  # cold: the whole run
    for v in range(20, 23):
        assert other.commit("r1", Commit(f"m{v}", v, steps=(StepWrite(step(f"s{v}")),)))
    read: list[int] = []
    ddb.meta.events.register(
        "after-call.dynamodb.Query", lambda parsed, **_: read.append(len(parsed["Items"]))
    )
    state = store.load("r1")
    assert state is not None
    assert state.run.version == 23 and len(state.steps) == 23
    assert state.steps["s22"] == step("s22")
    assert read == [3]  # the three log entries since: not the 23 steps
    assert other.load("r1") == state and read == [3, 0]  # it knows its own commits
    # and what it assembled equals a cold load of the same run
    fresh = DynamoStore(store.table, client=store.client, clock=store.clock)
    assert fresh.load("r1") == state


# -- gates ---------------------------------------------------------------------------------


def _gate(key: str, state: dict[str, Any], expect: int = 0, expires_at: float | None = None,
          scope: str = "throttle:fn") -> GateWrite:
    return GateWrite(scope, key, state, expect, expires_at)


def test_gate_items_are_keyed_legibly_and_unambiguously(store: DynamoStore, ddb: Any) -> None:
    long = "é" * 300  # 300 characters, 600 bytes: over the 512 bytes a readable key may take
    fits = "é" * 256  # exactly 512 bytes: kept as is
    cases = {"": "-", "-": "#-", "-a": "#-a", "#": "##", "#sha256:ab": "##sha256:ab",
             "a-#": "a-#", fits: fits,
             long: "#sha256:" + hashlib.sha256(long.encode()).hexdigest()}
    for i, key in enumerate(cases):
        assert store.put_gate(_gate(key, {"i": i, "ü": "日本"}))
    items = {item["sk"]["S"]: item for item in ddb.scan(TableName=TABLE)["Items"]}
    assert set(items) == set(cases.values())
    for i, (key, sk) in enumerate(cases.items()):
        item = items[sk]
        assert item["pk"] == {"S": "GATE#throttle:fn"}, key[:20]
        assert item["scope"] == {"S": "throttle:fn"}
        assert item["key"] == {"S": key[:512]}
        assert item["version"] == {"N": "1"}
        assert item["state"] == {"S": f'{{"i":{i},"ü":"日本"}}'}  # compact, UTF-8 kept
        assert "expires_at" not in item and "expires_ts" not in item
    # A key over 512 characters keeps its first 512 in "key"; the digest is of all of it.
    huge = "k" * 600
    assert store.put_gate(_gate(huge, {"n": 1}))
    item = raw(ddb, "GATE#throttle:fn", "#sha256:" + hashlib.sha256(huge.encode()).hexdigest())
    assert item["key"] == {"S": "k" * 512}
    # The next write bumps the version in place.
    assert store.put_gate(_gate("-a", {"n": 2}, expect=1))
    assert raw(ddb, "GATE#throttle:fn", "#-a")["version"] == {"N": "2"}
    assert json.loads(raw(ddb, "GATE#throttle:fn", "#-a")["state"]["S"]) == {"n": 2}


def test_a_gate_ttl_is_rounded_up_and_its_expiry_kept_exactly(store: DynamoStore,
                                                               ddb: Any) -> None:
    assert store.put_gate(_gate("k", {"n": 1}, expires_at=START + 60.25))
    item = raw(ddb, "GATE#throttle:fn", "k")
    assert item["expires_at"] == {"N": str(int(START) + 61)}  # never deleted before it expired
    assert item["expires_ts"] == {"N": str(START + 60.25)}
    assert item["expires"] == {"S": "2026-03-02T08:01:00.250Z"}
    assert store.put_gate(_gate("k", {"n": 2}, expect=1, expires_at=START + 120))
    assert raw(ddb, "GATE#throttle:fn", "k")["expires_at"] == {"N": str(int(START) + 120)}
    assert store.put_gate(_gate("k", {"n": 3}, expect=2))  # no expiry: no TTL left behind
    item = raw(ddb, "GATE#throttle:fn", "k")
    assert not {"expires_at", "expires_ts", "expires"} & item.keys()
    assert item["version"] == {"N": "3"}


def test_an_oversized_gate_state_is_refused_before_calling_aws(store: DynamoStore,
                                                               ddb: Any) -> None:
    limit = 350 * 1024
    at_limit = {"x": "y" * (limit - len('{"x":""}'))}  # exactly 350 KB of JSON
    assert store.put_gate(_gate("k", at_limit))
    assert store.gate("throttle:fn", "k") == Gate(at_limit, 1)
    over = {"x": "y" * (limit - len('{"x":""}') + 1)}
    calls = record_calls(ddb)
    too_large = r"gate 'throttle:fn' key 'k': its state is 358401 bytes"
    with pytest.raises(StoreError, match=too_large) as info:
        store.put_gate(_gate("k", over, expect=1))
    assert info.value.code == "GateTooLarge"
    assert info.value.is_retriable is False
    with pytest.raises(StoreError, match=r"'idem:fn' key 'order-1'") as info:
        store.create_run(make_run(), [waiter()], [_gate("order-1", over, scope="idem:fn")])
    assert info.value.code == "GateTooLarge"
    assert info.value.is_retriable is False
    assert calls == []  # neither reached DynamoDB, so no run, waiter path or gate was written
    assert store.gate("throttle:fn", "k") == Gate(at_limit, 1)
    assert store.load("r1") is None


def _offline() -> tuple[Any, DynamoStore]:
    """A client no request can reach (for Stubber) and a store over it."""
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x")
    return client, DynamoStore(TABLE, client=client, clock=FakeClock(START))


def test_create_run_whose_conflicts_persist_raises_a_retriable_error() -> None:
    client, store = _offline()
    gate = _gate("", {"tat": START}, expect=3)
    # run, events, outbox, gate: the gate's item is the one another transaction holds
    reasons = ("None", "None", "None", "TransactionConflict")
    with Stubber(client) as stub:
        for _ in range(4):
            stub.add_client_error("transact_write_items", **_cancelled(*reasons))
        conflicts = r"run r1: .*conflicting transactions 4 times"
        with pytest.raises(StoreError, match=conflicts) as info:
            store.create_run(make_run(), [], [gate])
        # Retried, and neither "the run exists" (False) nor "a gate moved": it may yet land.
        stub.assert_no_pending_responses()
        assert info.value.code == "TransactionConflict"
        assert info.value.is_retriable is True
        # One conflict, then through: created.
        stub.add_client_error("transact_write_items", **_cancelled(*reasons))
        stub.add_response("transact_write_items", {})
        assert store.create_run(make_run(), [], [gate]) is True
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException",
                                  "ThrottlingException", "RequestLimitExceeded"])
def test_put_gate_surfaces_throttling_as_a_retriable_error(code: str) -> None:
    client, store = _offline()
    with Stubber(client) as stub:
        stub.add_client_error("put_item", service_error_code=code,
                              service_message="Rate exceeded", http_status_code=400)
        with pytest.raises(StoreError, match=r"PutItem \(gate throttle:fn\) failed") as info:
            store.put_gate(_gate("k", {"n": 1}))
        stub.assert_no_pending_responses()
    assert info.value.code == code
    assert info.value.is_retriable is True


def test_list_gates_reads_the_whole_partition_consistently(store: DynamoStore, ddb: Any,
                                                           clock: FakeClock) -> None:
    big = "x" * 300_000  # 5 gates of 300 KB: more than DynamoDB's 1 MB per Query page
    keys = ["#e", "-d", "c", "b", ""]  # stored in the order "##e", "#-d", "-", "b", "c"
    for key in keys:
        assert store.put_gate(_gate(key, {"big": big}, scope="batch:fn"))
    long = "k" * 600
    assert store.put_gate(_gate(long, {"n": 1}, scope="batch:fn", expires_at=START + 5))
    assert store.put_gate(_gate("other", {"n": 1}, scope="batch:fn2"))
    calls = record_calls(ddb)
    found = store.list_gates("batch:fn", limit=2)
    assert found == [("", Gate({"big": big}, 1)), ("#e", Gate({"big": big}, 1))]
    ops = [op for op, _ in calls]
    assert ops == ["Query"] * len(ops) and len(ops) >= 2  # every page, not just the first
    assert all(params["ConsistentRead"] is True for _, params in calls)
    assert "ExclusiveStartKey" not in calls[0][1]
    assert all("ExclusiveStartKey" in params for _, params in calls[1:])
    # A key over 512 characters lists by the first 512 (what the item keeps).
    assert [k for k, _ in store.list_gates("batch:fn")] == ["", "#e", "-d", "b", "c", "k" * 512]
    clock.advance(6)  # past its expiry; DynamoDB Local never deletes it
    assert [k for k, _ in store.list_gates("batch:fn")] == ["", "#e", "-d", "b", "c"]


# -- large outputs out of line ---------------------------------------------------------------


def test_outputs_over_64_kib_live_in_s3_and_read_back(ddb: Any, aws: AwsEmulators,
                                                      clock: FakeClock) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="payloads")
    store = DynamoStore(TABLE, client=ddb, clock=clock, payloads=S3Payloads("payloads", s3))
    store.create_run(make_run(), [])
    small, big = {"n": 1}, ["y" * (4 * 1024 * 1024 - 8)]  # 4 MiB of JSON
    assert store.commit("r1", Commit("m0", 0, steps=(StepWrite(step("a", output=small)),
                                                     StepWrite(step("b", output=big)))))
    assert store.commit("r1", Commit("m1", 1, run=RunPatch(
        status=RunStatus.COMPLETED, output=big, ended_at=START + 5)))
    log = raw(ddb, "RUN#r1", "LOG#0000000001")
    assert t.item_bytes(log) < 2048  # the log entry holds a reference, not the 4 MiB
    [a, b] = json.loads(log["steps"]["S"])
    assert a["output"] == small and is_ref(b["output"])
    assert is_ref(json.loads(raw(ddb, "RUN#r1", "RUN")["output"]["S"]))
    objects = s3.list_objects_v2(Bucket="payloads")["Contents"]
    assert [o["Key"] for o in objects] == [b["output"]["$stepkit_payload"]["key"]]  # one object
    cold = DynamoStore(TABLE, client=ddb, clock=clock, payloads=S3Payloads("payloads", s3))
    state = cold.load("r1")
    assert state is not None
    assert state.steps["a"].output == small and state.steps["b"].output == big
    assert state.run.output == big
    assert cold.list_runs(RunQuery())[0].output == big


def test_a_payload_that_does_not_match_its_digest_is_refused(ddb: Any, aws: AwsEmulators,
                                                            clock: FakeClock) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="payloads")
    payloads = S3Payloads("payloads", s3)
    ref = payloads.offload("r1", "z" * 100_000)
    s3.put_object(Bucket="payloads", Key=ref["$stepkit_payload"]["key"], Body=b'"tampered"')
    with pytest.raises(PayloadError, match="does not match its digest"):
        payloads.resolve(ref)


# -- cold loads: a snapshot and the log after it -------------------------------------------


def _container(store: DynamoStore, client: Any = None, **options: Any) -> DynamoStore:
    """Another Lambda container on the same table (its own cache), snapshotting eagerly."""
    fresh = DynamoStore(store.table, client=client or store.client, clock=store.clock, **options)
    fresh.snapshot_tail_bytes = 1  # any log after the snapshot asks for a new one
    return fresh


def _commit_for(v: int) -> Commit:
    """Commit ``v`` of a long run: new steps, steps moving on, run changes now and then."""
    if v % 7 == 3:
        return Commit(f"m{v}", v, run=RunPatch(attempt=v), outbox=(_event(v),))
    if v % 5 == 4 and (v - 2) % 7 != 3:  # the step started two commits ago completes
        return Commit(f"m{v}", v, steps=(StepWrite(
            step(f"s{v - 2}", output={"v": v, "list": [1.5, None, "é"]}), StepStatus.SLEEPING),))
    return Commit(f"m{v}", v, steps=(StepWrite(step(f"s{v}", StepStatus.SLEEPING)),))


def _event(v: int) -> EventOut:
    return EventOut({"name": "n", "data": {"v": v}})


def _build(store: DynamoStore, commits: int, every: int) -> RunState:
    """A run of ``commits`` commits; one in ``every`` by a cold container, which snapshots.

    Returns the reference: the state the commits made, applied in memory.
    """
    reference = RunState(make_run(), {})
    assert store.create_run(reference.run, [])
    for v in range(commits):
        worker = _container(store) if v % every == every - 1 else store
        assert worker.commit("r1", _commit_for(v))
        reference = applied(reference, _commit_for(v))
    return reference


def _whole(store: DynamoStore) -> RunState | None:
    """The run as its whole log says, read without any snapshot."""
    found = store._load_whole("r1")
    return None if found is None else found[0]


@pytest.mark.parametrize("every", [1, 3, 17, 1000])
def test_a_cold_load_after_snapshots_returns_exactly_the_committed_state(
        store: DynamoStore, ddb: Any, every: int) -> None:
    reference = _build(store, 60, every)
    assert reference.run.version == 60 and reference.run.attempt == 59
    cold = _container(store).load("r1")
    assert cold == reference == _whole(store)
    snaps = ddb.query(TableName=TABLE, KeyConditionExpression="pk = :p AND sk = :s",
                      ExpressionAttributeValues={":p": {"S": "RUN#r1"}, ":s": {"S": "SNAP"}})
    versions = [int(item["version"]["N"]) for item in snaps["Items"]]
    # By the last cold container to find log after the snapshot (with one every commit,
    # every other finds the snapshot its predecessor just wrote, and no log after it).
    assert versions == ([] if every > 60 else [59] if every == 1 else [60 - 60 % every])
    if every == 17:  # a snapshot read back is the state at its version
        assert t.snapshot_from(snaps["Items"][0], raw(ddb, "RUN#r1", "TRIGGER")) == \
            _states(60)[51]


def _states(commits: int) -> list[RunState]:
    states = [RunState(make_run(), {})]
    for v in range(commits):
        states.append(applied(states[-1], _commit_for(v)))
    return states


def test_any_snapshot_of_the_run_gives_the_same_state(store: DynamoStore, ddb: Any) -> None:
    # A stale or crashed worker's snapshot is still the committed state at its version: put
    # each version's snapshot in place (as no condition would let it) and load cold.
    states = _states(40)
    store.create_run(states[0].run, [])
    for v in range(40):
        assert store.commit("r1", _commit_for(v))
    for old in (states[0], states[1], states[13], states[39], states[40]):
        ddb.put_item(TableName=TABLE, Item=t.snapshot_item(old, at=START, ttl=START + DAY))
        assert _container(store).load("r1") == states[40]
    # Another run under the same id (created earlier) left a newer snapshot: not used.
    other = replace(states[40], run=replace(states[40].run, created_at=START - DAY, version=99))
    ddb.put_item(TableName=TABLE, Item=t.snapshot_item(other, at=START, ttl=START + DAY))
    assert _container(store).load("r1") == states[40]


def test_a_cold_load_after_a_snapshot_reads_a_bounded_number_of_items(
        store: DynamoStore, ddb: Any) -> None:
    reference = _build(store, 300, 1000)  # no snapshot yet: a cold load reads it all
    calls = record_calls(ddb)
    read: list[int] = []
    ddb.meta.events.register(
        "after-call.dynamodb.Query", lambda parsed, **_: read.append(len(parsed["Items"])))
    first = _container(store)
    assert first.load("r1") == reference
    assert read == [3, 301]  # TRIGGER, RUN, LOG#300; then LOG#300..0
    assert first.commit("r1", _commit_for(300))  # ... so it writes a snapshot after its commit
    assert [op for op, _ in calls][-2:] == ["PutItem", "PutItem"]  # the log entry, the snapshot
    reference = applied(reference, _commit_for(300))
    for v in range(301, 305):  # four more commits by a warm container: the log after it
        assert first.commit("r1", _commit_for(v))
        reference = applied(reference, _commit_for(v))
    del calls[:], read[:]
    assert _container(store).load("r1") == reference
    assert [op for op, _ in calls] == ["Query", "Query"]  # one walk: two pages
    assert all(params["ConsistentRead"] is True for _, params in calls)
    assert read == [3, 4]  # TRIGGER, SNAP, RUN; then the four entries after the snapshot


def _slow_snapshot(aws: AwsEmulators, store: DynamoStore,
                   meanwhile: Any) -> tuple[DynamoStore, list[int]]:
    """A cold container whose snapshot write runs ``meanwhile(params)`` just before it."""
    slow = aws.client("dynamodb")
    worker, ran = _container(store, slow), []

    def before(params: dict[str, Any], **_: Any) -> None:
        if params["Item"]["sk"] == {"S": "SNAP"} and not ran:
            ran.append(1)
            meanwhile(params)

    slow.meta.events.register("provide-client-params.dynamodb.PutItem", before)
    return worker, ran


def test_a_slow_snapshot_cannot_set_a_newer_one_back(aws: AwsEmulators, store: DynamoStore,
                                                     ddb: Any) -> None:
    # Worker A commits version 11, then is slow to write its snapshot: meanwhile B commits
    # 12 and 13 and writes the snapshot of 12. A's write is refused, and loads stay exact.
    states = _states(13)
    _build(store, 10, 1000)

    def meanwhile(_: dict[str, Any]) -> None:
        assert _container(store).load("r1") == states[11]  # 11 committed, no snapshot yet
        b = _container(store)
        assert b.commit("r1", _commit_for(11)) and b.commit("r1", _commit_for(12))
        assert raw(ddb, "RUN#r1", "SNAP")["version"] == {"N": "12"}

    a, ran = _slow_snapshot(aws, store, meanwhile)
    assert a.load("r1") == states[10]  # cold: its next commit will snapshot
    assert a.commit("r1", _commit_for(10)) and ran  # its snapshot refused: no error
    assert raw(ddb, "RUN#r1", "SNAP")["version"] == {"N": "12"}
    assert _container(store).load("r1") == states[13] == _whole(store)
    assert not a.commit("r1", _commit_for(11))  # A is behind: refused
    assert a.load("r1") == states[13]


def test_a_duplicate_snapshot_write_changes_nothing(aws: AwsEmulators, store: DynamoStore,
                                                    ddb: Any) -> None:
    states = _states(11)
    _build(store, 10, 1000)

    def meanwhile(params: dict[str, Any]) -> None:  # the same write lands first
        ddb.put_item(**{**params, "TableName": TABLE})

    a, ran = _slow_snapshot(aws, store, meanwhile)
    assert a.load("r1") == states[10]
    assert a.commit("r1", _commit_for(10)) and ran
    assert raw(ddb, "RUN#r1", "SNAP")["version"] == {"N": "11"}
    assert _container(store).load("r1") == states[11] == _whole(store)


def test_a_snapshot_keeps_references_to_outputs_in_s3(ddb: Any, aws: AwsEmulators,
                                                      clock: FakeClock) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="payloads")
    store = DynamoStore(TABLE, client=ddb, clock=clock, payloads=S3Payloads("payloads", s3))
    store.create_run(make_run(), [])
    big = ["y" * 100_000]
    assert store.commit("r1", Commit("m0", 0, steps=(StepWrite(step("big", output=big)),)))
    worker = _container(store, payloads=S3Payloads("payloads", s3))
    assert worker.load("r1") is not None
    assert worker.commit("r1", Commit("m1", 1, steps=(StepWrite(step("small", output=1)),)))
    snap = raw(ddb, "RUN#r1", "SNAP")
    assert t.item_bytes(snap) < 2048  # the reference, not 100 KB
    stored = t.snapshot_from(snap, raw(ddb, "RUN#r1", "TRIGGER"))
    assert is_ref(stored.steps["big"].output) and stored.steps["small"].output == 1
    gets: list[str] = []
    s3.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append("get"))
    state = _container(store, payloads=S3Payloads("payloads", s3)).load("r1")
    assert state is not None and state.steps["big"].output == big and gets == ["get"]


def test_a_snapshot_past_the_item_limit_is_not_written(store: DynamoStore, ddb: Any,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    states = _states(40)
    _build(store, 20, 1000)
    assert _container(store).commit("r1", _commit_for(20))  # a snapshot within the limit
    assert raw(ddb, "RUN#r1", "SNAP")["version"] == {"N": "21"}
    for v in range(21, 39):
        assert store.commit("r1", _commit_for(v))
    monkeypatch.setattr(t, "MAX_LOG_ITEM_BYTES", t.item_bytes(raw(ddb, "RUN#r1", "SNAP")))
    worker = _container(store)
    with caplog.at_level("WARNING", logger="stepkit"):
        assert worker.commit("r1", _commit_for(39))  # the commit stands
    assert "run r1: a snapshot of" in caplog.text and "would pass the item limit" in caplog.text
    assert raw(ddb, "RUN#r1", "SNAP")["version"] == {"N": "21"}  # the last one stays
    assert _container(store).load("r1") == states[40] == _whole(store)
