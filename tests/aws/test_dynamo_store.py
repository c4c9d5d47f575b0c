"""DynamoStore on DynamoDB Local: the SQLite store's contract, plus the DynamoDB item layout."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from runtime.backends.aws.store import DynamoStore, StoreError
from runtime.backends.aws.table import table_spec, ttl_spec
from runtime.core.clock import FakeClock
from runtime.core.protocols import RunQuery
from runtime.records import (
    Commit,
    ErrorInfo,
    EventOut,
    Message,
    MessageKind,
    ParentRef,
    RunPatch,
    RunRecord,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    Waiter,
    WaiterKind,
)
from runtime.testing.emulators import AwsEmulators

pytestmark = pytest.mark.aws

TABLE = "stepkit-test-state"
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 08:00 UTC
DAY = 86400.0


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


def make_run(run_id: str = "r1", function_id: str = "fn", created_at: float = START) -> RunRecord:
    return RunRecord(run_id=run_id, function_id=function_id, events=({"id": "e1", "name": "a"},),
                     created_at=created_at)


def step(key: str, status: StepStatus = StepStatus.COMPLETED, attempt: int = 0,
         output: object = None) -> StepRecord:
    return StepRecord(key=key, id=key, kind=StepKind.RUN, status=status, attempt=attempt,
                      output=output)


def waiter(run_id: str = "r1", key: str = "w", event: str = "order/paid") -> Waiter:
    return Waiter(event, run_id, "fn", key, WaiterKind.STEP, "async.data.x == 1", START + 500)


def raw(ddb: Any, pk: str, sk: str) -> dict[str, Any]:
    return dict(ddb.get_item(TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}})["Item"])


# -- create_run ----------------------------------------------------------------------------


def test_create_run_is_idempotent_and_keeps_the_first(store: DynamoStore) -> None:
    cancel = Waiter("order/cancelled", "r1", "fn", "cancel:0", WaiterKind.CANCEL)
    assert store.create_run(make_run(), [cancel]) is True
    assert store.create_run(make_run(function_id="other"), [waiter()]) is False
    state = store.load("r1")
    assert state is not None
    assert state.run == make_run()
    assert state.steps == {}
    assert store.waiters_for("order/cancelled") == [cancel]
    assert store.waiters_for("order/paid") == []  # the refused create added nothing


def test_load_unknown_run_is_none(store: DynamoStore) -> None:
    assert store.load("nope") is None


# -- commit --------------------------------------------------------------------------------


def test_commit_applies_everything_and_bumps_the_version(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    nxt = Message(MessageKind.CONTINUE, "fn", "r1", id="m2", version=1)
    out = (EventOut({"id": "x", "name": "b"}), nxt)
    commit = Commit(msg_id="m1", expect_version=0, steps=(StepWrite(step("a", output=[1])),),
                    add_waiters=(waiter(),), outbox=out)
    assert store.commit("r1", commit) is True
    state = store.load("r1")
    assert state is not None
    assert state.run.version == 1
    assert state.run.last_msg == "m1"
    assert state.run.outbox == out
    assert state.steps == {"a": step("a", output=[1])}
    assert store.waiters_for("order/paid") == [waiter()]


def test_commit_with_a_stale_version_writes_nothing(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit(msg_id="m1", expect_version=0)) is True
    stale = Commit(msg_id="m2", expect_version=0, steps=(StepWrite(step("a")),),
                   run=RunPatch(status=RunStatus.COMPLETED), add_waiters=(waiter(),),
                   outbox=(EventOut({"id": "y", "name": "c"}),))
    assert store.commit("r1", stale) is False
    state = store.load("r1")
    assert state is not None
    assert (state.run.version, state.run.last_msg, state.run.status) == (1, "m1", "Running")
    assert state.run.outbox == ()
    assert state.steps == {}
    assert store.waiters_for("order/paid") == []


def test_commit_on_unknown_run_is_refused_and_creates_nothing(store: DynamoStore,
                                                               ddb: Any) -> None:
    assert store.commit("ghost", Commit(msg_id="m", expect_version=0,
                                        steps=(StepWrite(step("a")),))) is False
    assert ddb.scan(TableName=TABLE)["Items"] == []


def test_step_expected_absent_refuses_an_existing_step(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a", output=1)),)))
    assert not store.commit("r1", Commit("m2", 1, steps=(StepWrite(step("a", output=2)),)))
    state = store.load("r1")
    assert state is not None
    assert state.steps["a"].output == 1
    assert state.run.version == 1


def test_step_expected_status_and_attempt(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    retrying = step("a", StepStatus.RETRYING, attempt=2)
    assert store.commit("r1", Commit("m1", 0, steps=(StepWrite(retrying),)))
    done = step("a", output="ok", attempt=2)

    def attempt(w: StepWrite) -> bool:
        return store.commit("r1", Commit("m2", 1, steps=(w,)))

    # Missing item, wrong status, wrong attempt: each refused.
    assert not attempt(StepWrite(step("b"), StepStatus.RETRYING, 0))
    assert not attempt(StepWrite(done, StepStatus.SCHEDULED, 2))
    assert not attempt(StepWrite(done, StepStatus.RETRYING, 1))
    assert attempt(StepWrite(done, StepStatus.RETRYING, 2))
    state = store.load("r1")
    assert state is not None
    assert state.steps == {"a": done}
    assert state.run.version == 2


def test_one_failing_step_condition_refuses_the_whole_commit(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("b")),)))
    both = Commit("m2", 1, steps=(StepWrite(step("a")), StepWrite(step("b"))))  # b exists
    assert store.commit("r1", both) is False
    state = store.load("r1")
    assert state is not None
    assert set(state.steps) == {"b"}
    assert state.run.last_msg == "m1"


def test_run_patch_sets_given_fields_only(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    err = ErrorInfo("Boom", "bad")
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(attempt=1, error=err)))
    assert store.commit("r1", Commit("m2", 1, run=RunPatch(
        status=RunStatus.COMPLETED, output={"n": 1}, ended_at=START + 200)))
    state = store.load("r1")
    assert state is not None
    run = state.run
    assert (run.status, run.attempt, run.error, run.output, run.ended_at) == (
        RunStatus.COMPLETED, 1, err, {"n": 1}, START + 200)
    assert store.list_runs(RunQuery(status=RunStatus.COMPLETED)) == [run]  # index moved too
    assert store.list_runs(RunQuery(status=RunStatus.RUNNING)) == []


def test_finished_run_refuses_commits(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    assert store.commit("r1", Commit("m1", 0, run=RunPatch(status=RunStatus.CANCELLED)))
    assert store.commit("r1", Commit("m2", 1, steps=(StepWrite(step("a")),))) is False
    state = store.load("r1")
    assert state is not None
    assert state.steps == {}
    assert state.run.version == 1


def test_waiters_are_added_and_removed_by_name_run_and_key(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    store.create_run(make_run("r2"), [])
    w1, w2, w3 = waiter("r1", "a"), waiter("r1", "b"), waiter("r2", "a")
    assert store.commit("r1", Commit("m1", 0, add_waiters=(w1, w2)))
    assert store.commit("r2", Commit("m1", 0, add_waiters=(w3,)))
    # Removal needs only the identifying fields, as the orchestrator rebuilds them.
    ident = Waiter("order/paid", "r1", "fn", "a", WaiterKind.STEP)
    assert store.commit("r1", Commit("m2", 1, remove_waiters=(ident,)))
    assert sorted(store.waiters_for("order/paid"), key=lambda w: (w.run_id, w.key)) == [w2, w3]


def test_a_waiter_both_added_and_removed_in_one_commit_is_kept(store: DynamoStore) -> None:
    # DynamoDB refuses two actions on one item in a transaction; SQLite deletes then inserts.
    store.create_run(make_run(), [])
    w = waiter()
    assert store.commit("r1", Commit("m1", 0, add_waiters=(w,), remove_waiters=(w, w)))
    assert store.waiters_for("order/paid") == [w]


# -- events --------------------------------------------------------------------------------


def test_remember_event_dedups_within_ttl(store: DynamoStore) -> None:
    e = {"id": "e1", "name": "user/signup", "data": {"k": "é"}, "user": {}, "ts": 1}
    assert store.remember_event(e, now=START, ttl=60) is True
    assert store.remember_event(e, now=START + 59, ttl=60) is False
    assert store.remember_event({**e, "name": "other"}, now=START + 59, ttl=60) is False
    assert store.remember_event(e, now=START + 61, ttl=60) is True  # the old entry expired
    assert store.remember_event(e, now=START + 62, ttl=60) is False  # and the new one counts
    assert store.list_events() == [e]


def test_list_events_newest_first_today_then_yesterday(store: DynamoStore,
                                                       clock: FakeClock) -> None:
    clock.advance(3600)  # 09:00 on 2 March
    # 28 Feb 08:00, 1 March 07:00, 2 March 00:00 and 08:00
    for i, at in enumerate([START - 2 * DAY, START - DAY - 3600, START - 8 * 3600, START]):
        store.remember_event({"id": f"e{i}", "name": "n"}, now=at, ttl=2 * DAY)
    assert [e["id"] for e in store.list_events()] == ["e3", "e2", "e1"]  # e0: two days ago
    assert [e["id"] for e in store.list_events(2)] == ["e3", "e2"]
    assert store.list_events(0) == []


# -- listing -------------------------------------------------------------------------------


def test_list_runs_filters_newest_first(store: DynamoStore) -> None:
    store.create_run(make_run("a", "f1", START + 1), [])
    store.create_run(make_run("b", "f2", START + 2), [])
    store.create_run(make_run("c", "f1", START + 3), [])
    store.commit("a", Commit("m", 0, run=RunPatch(status=RunStatus.FAILED)))

    def ids(q: RunQuery) -> list[str]:
        return [r.run_id for r in store.list_runs(q)]

    assert ids(RunQuery()) == ["c", "b", "a"]
    assert ids(RunQuery(limit=2)) == ["c", "b"]
    assert ids(RunQuery(function_id="f1")) == ["c", "a"]
    assert ids(RunQuery(status=RunStatus.RUNNING)) == ["c", "b"]
    assert ids(RunQuery(function_id="f1", status=RunStatus.FAILED)) == ["a"]
    assert ids(RunQuery(function_id="nope")) == []
    assert ids(RunQuery(limit=0)) == []
    assert store.list_runs(RunQuery(function_id="f2")) == [make_run("b", "f2", START + 2)]


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
    for version, chunk in enumerate((keys[:90], keys[90:180], keys[180:])):
        writes = tuple(StepWrite(step(k, output=[k, big])) for k in chunk)
        assert store.commit("r1", Commit(f"m{version}", version, steps=writes))
    calls = record_calls(ddb)
    state = store.load("r1")
    assert state is not None
    assert len(state.steps) == 250
    assert state.steps["s249"] == step("s249", output=["s249", big])
    assert state.run.version == 3
    ops = [op for op, _ in calls]
    assert ops == ["Query"] * len(ops) and len(ops) >= 3
    # One chain: the first call starts the partition, each next one continues the previous.
    assert "ExclusiveStartKey" not in calls[0][1]
    assert all("ExclusiveStartKey" in params for _, params in calls[1:])
    assert all(params["ConsistentRead"] is True for _, params in calls)


def test_load_reads_again_when_it_sees_a_half_applied_commit(store: DynamoStore,
                                                            ddb: Any) -> None:
    store.create_run(make_run(), [])
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a")),)))
    torn = {"left": 1}

    def tear(parsed: dict[str, Any], **_: Any) -> None:
        # Pretend the Query read step "a" before commit m1 reached it.
        if torn["left"]:
            torn["left"] -= 1
            parsed["Items"] = [i for i in parsed["Items"] if i["sk"]["S"] != "STEP#a"]

    ddb.meta.events.register("after-call.dynamodb.Query", tear)
    calls = record_calls(ddb)
    state = store.load("r1")
    assert state is not None
    assert set(state.steps) == {"a"}
    assert [op for op, _ in calls] == ["Query", "Query"]


def test_load_gives_up_on_a_view_that_stays_torn(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    store.commit("r1", Commit("m1", 0))

    def tear(parsed: dict[str, Any], **_: Any) -> None:
        for item in parsed["Items"]:
            if item["sk"]["S"] == "OUTBOX":
                item["version"] = {"N": "0"}

    ddb.meta.events.register("after-call.dynamodb.Query", tear)
    with pytest.raises(StoreError, match="r1") as info:
        store.load("r1")
    assert info.value.code == "TornRead"


# -- the item layout -----------------------------------------------------------------------


def test_a_record_with_every_field_round_trips_exactly(store: DynamoStore) -> None:
    event = {"id": "e1", "name": "order/paid", "ts": 1772438400123, "user": {"ü": "ß"},
             "data": {"amount": 0.1 + 0.2, "note": "café ☕ 日本", "tiny": 5e-324,
                      "nested": {"list": [1, 2.000001, None, True, {"x": -0.0}]}}}
    err = ErrorInfo("PaymentError", "déclinée ☹", retriable=False, stack="Traceback\n  ...")
    wake = Message(MessageKind.WAKE, "billing/charge", "run-1", id="m-9", version=3,
                   key="sleep:1", attempt=2, due=START + 0.1234567, payload={"events": [event]})
    run = RunRecord(
        run_id="run-1", function_id="billing/charge", events=(event, {"id": "e2", "name": "b"}),
        version=0, attempt=2, created_at=START + 0.1234567, error=err,
        parent=ParentRef("parent-run", "billing/parent", "invoke:2"),
        deadline=START + 86400 * 365.25 + 1e-6, last_msg="start-run-1",
        outbox=(wake, EventOut(event)),
    )
    w = Waiter("order/ünïcode", "run-1", "billing/charge", "wait:0", WaiterKind.STEP,
               "async.data.amount > 0.3", START + 0.30000000000000004)
    assert store.create_run(run, [w])
    state = store.load("run-1")
    assert state is not None
    assert state.run == run
    assert state.run.created_at == START + 0.1234567  # exact, not approximately
    assert store.waiters_for("order/ünïcode") == [w]

    rec = StepRecord(key="fetch:1", id="fetch", kind=StepKind.INVOKE, status=StepStatus.RETRYING,
                     attempt=3, output={"π": 3.141592653589793, "big": 1.7976931348623157e308},
                     error=err, wake_at=START + 1e-6, branch=True, started_at=START - 0.5,
                     ended_at=START + 7.25, detail={"child_run_id": "c-1", "ü": [1.5, None]})
    patch = RunPatch(status=RunStatus.COMPLETED, attempt=3, output=[event, "日本"],
                     error=err, ended_at=START + 9.999999)
    assert store.commit("run-1", Commit("m-10", 0, steps=(StepWrite(rec),), run=patch,
                                        outbox=(EventOut({"id": "done", "name": "x"}),)))
    state = store.load("run-1")
    assert state is not None
    assert state.steps == {"fetch:1": rec}
    assert state.run == RunRecord(
        **{**run.__dict__, "status": RunStatus.COMPLETED, "version": 1, "attempt": 3,
           "output": [event, "日本"], "ended_at": START + 9.999999, "last_msg": "m-10",
           "outbox": (EventOut({"id": "done", "name": "x"}),)})


def test_items_are_legible_in_the_console(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    rec = StepRecord(key="charge", id="charge", kind=StepKind.RUN, status=StepStatus.COMPLETED,
                     output={"ok": True, "amount": 12.5}, started_at=START, ended_at=START + 1.5)
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(rec),)))
    item = raw(ddb, "RUN#r1", "STEP#charge")
    assert item["status"] == {"S": "completed"}
    assert item["kind"] == {"S": "run"}
    assert json.loads(item["output"]["S"]) == {"ok": True, "amount": 12.5}
    assert item["started_at"] == {"S": "2026-03-02T08:00:00.000Z"}
    assert item["ended_at"] == {"S": "2026-03-02T08:00:01.500Z"}
    assert item["attempt"] == {"N": "0"}
    assert item["branch"] == {"BOOL": False}
    run = raw(ddb, "RUN#r1", "RUN")
    assert run["status"] == {"S": "Running"}
    assert run["created_at"] == {"S": "2026-03-02T08:00:00.000Z"}
    assert run["version"] == {"N": "1"}
    assert run["gsi1pk"] == {"S": "FN#fn"}
    assert run["gsi2pk"] == {"S": "STATUS#Running"}
    assert run["gsi1sk"] == {"S": "2026-03-02T08:00:00.000Z#r1"}
    assert json.loads(raw(ddb, "RUN#r1", "TRIGGER")["events"]["S"]) == [{"id": "e1", "name": "a"}]
    outbox = raw(ddb, "RUN#r1", "OUTBOX")
    assert outbox["msg_id"] == {"S": "m1"}
    assert "expires_at" not in run  # running: kept


def test_finished_runs_expire_after_retention_and_steps_later(store: DynamoStore, ddb: Any,
                                                              clock: FakeClock) -> None:
    store.create_run(make_run(), [waiter()])
    store.commit("r1", Commit("m1", 0, steps=(StepWrite(step("a")),)))
    clock.advance(100)
    store.commit("r1", Commit("m2", 1, run=RunPatch(status=RunStatus.COMPLETED,
                                                    ended_at=START + 90)))
    expires = int(START + 90 + 30 * DAY)
    for sk in ("RUN", "TRIGGER", "OUTBOX"):
        assert raw(ddb, "RUN#r1", sk)["expires_at"] == {"N": str(expires)}, sk
    assert raw(ddb, "RUN#r1", "STEP#a")["expires_at"] == {"N": str(int(START + 396 * DAY))}
    assert raw(ddb, "WAIT#order/paid", "r1#w")["expires_at"] == {"N": str(int(START + 500 + DAY))}
    # DynamoDB deletes lazily (DynamoDB Local never does): past its TTL the run reads as gone.
    clock.set(expires + 1)
    assert store.load("r1") is None
    assert store.list_runs(RunQuery()) == []


# -- failures ------------------------------------------------------------------------------


def test_more_than_100_items_is_refused_before_calling_aws(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    calls = record_calls(ddb)
    writes = tuple(StepWrite(step(f"s{i}")) for i in range(99))  # + run + outbox + log = 102
    with pytest.raises(StoreError, match=r"run r1: one commit would write 102 items") as info:
        store.commit("r1", Commit("m1", 0, steps=writes))
    assert info.value.code == "TooManyItems"
    assert calls == []
    assert store.commit("r1", Commit("m1", 0, steps=writes[:97]))  # exactly 100 is fine


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
    with Stubber(client) as stub:
        stub.add_client_error("transact_write_items", **_cancelled("None", "TransactionConflict"))
        stub.add_response("transact_write_items", {})
        assert store.commit("r1", Commit("m1", 0)) is True  # a conflict, then through
        for _ in range(4):
            stub.add_client_error("transact_write_items", **_cancelled("TransactionConflict"))
        assert store.commit("r1", Commit("m1", 0)) is False  # conflicts persisted
        stub.add_client_error("transact_write_items",
                              **_cancelled("TransactionConflict", "ConditionalCheckFailed"))
        assert store.commit("r1", Commit("m1", 0)) is False  # refused at once
        stub.add_client_error("transact_write_items", **_cancelled("ThrottlingError"))
        with pytest.raises(StoreError) as info:
            store.commit("r1", Commit("m1", 0))
        assert info.value.code == "TransactionCanceledException"
        stub.assert_no_pending_responses()


# -- concurrency ---------------------------------------------------------------------------


def test_racing_threads_commit_each_version_once(store: DynamoStore) -> None:
    store.create_run(make_run(), [])
    wins: list[int] = []

    def race(n: int) -> None:
        if store.commit("r1", Commit(f"m{n}", 0, steps=(StepWrite(step(f"s{n}")),))):
            wins.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = store.load("r1")
    assert state is not None
    assert len(wins) == 1
    assert list(state.steps) == [f"s{wins[0]}"]
    assert state.run.version == 1
    assert state.run.last_msg == f"m{wins[0]}"


def test_racing_threads_lose_no_update(store: DynamoStore) -> None:
    store.create_run(make_run(), [])

    def worker(name: str) -> None:
        done = 0
        while done < 10:
            state = store.load("r1")
            assert state is not None
            key = f"{name}-{done}"
            if store.commit("r1", Commit(key, state.run.version, steps=(StepWrite(step(key)),))):
                done += 1

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = store.load("r1")
    assert state is not None
    assert state.run.version == 30
    assert len(state.steps) == 30


def test_default_client_comes_from_the_environment(ddb: Any) -> None:
    store = DynamoStore(TABLE)  # boto3.client("dynamodb"), routed by the fixture's env vars
    assert store.create_run(make_run(), [])
    assert store.load("r1") is not None


def test_a_warm_load_reads_only_the_commits_since(store: DynamoStore, ddb: Any) -> None:
    store.create_run(make_run(), [])
    for v in range(20):
        assert store.commit("r1", Commit(f"m{v}", v, steps=(StepWrite(step(f"s{v}")),)))
    assert store.load("r1") is not None  # cold: the whole run
    for v in range(20, 23):
        assert store.commit("r1", Commit(f"m{v}", v, steps=(StepWrite(step(f"s{v}")),)))
    read: list[int] = []
    ddb.meta.events.register(
        "after-call.dynamodb.Query", lambda parsed, **_: read.append(len(parsed["Items"]))
    )
    state = store.load("r1")
    assert state is not None
    assert state.run.version == 23 and len(state.steps) == 23
    assert state.steps["s22"] == step("s22")
    assert read == [5]  # three log entries, the outbox and the run: not the 23 steps
    # and what it assembled equals a cold load of the same run
    fresh = DynamoStore(store.table, client=store.client, clock=store.clock)
    assert fresh.load("r1") == state


def test_a_commit_too_large_to_log_makes_the_next_load_whole(
    store: DynamoStore, ddb: Any
) -> None:
    store.create_run(make_run(), [])
    assert store.load("r1") is not None
    big = "x" * 120_000
    writes = tuple(StepWrite(step(k, output=[k, big])) for k in ("a", "b", "c"))
    assert store.commit("r1", Commit("m0", 0, steps=writes))
    state = store.load("r1")
    assert state is not None and set(state.steps) == {"a", "b", "c"}
    assert state.steps["c"].output == ["c", big]
