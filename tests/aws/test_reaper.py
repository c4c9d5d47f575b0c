"""The run reaper against DynamoDB Local, fed synthetic stream records shaped as AWS sends them."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.aws import reaper
from runtime.handlers import reaper as reaper_handler
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators

pytestmark = pytest.mark.aws

app = App("reap")


@app.function(id="steps", trigger=TriggerEvent("go"))
def steps(ctx: Context) -> int:
    for i in range(26):  # more log items than one BatchWriteItem takes
        ctx.step.run(f"s{i}", lambda i=i: i)
    if ctx.event.data.get("wait"):
        ctx.step.sleep("nap", "1d")
    return 13


def record(pk: str, *, sk: str = "RUN", name: str = "REMOVE", ttl: bool = True) -> dict[str, Any]:
    """A DynamoDB stream record (KEYS_ONLY view) as Lambda receives it."""
    out: dict[str, Any] = {
        "eventID": "1",
        "eventName": name,
        "eventSource": "aws:dynamodb",
        "dynamodb": {"Keys": {"pk": {"S": pk}, "sk": {"S": sk}}, "StreamViewType": "KEYS_ONLY"},
    }
    if ttl:
        out["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    return out


def partition(h: AwsBackend, run_id: str) -> list[str]:
    got = h.clients["dynamodb"].query(
        TableName=h.resources.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}},
    )
    return [i["sk"]["S"] for i in got["Items"]]


@pytest.fixture
def runs(aws: AwsEmulators) -> tuple[AwsBackend, str, str]:
    h = Harness.aws(app, aws)
    h.send("go", {})
    h.send("go", {"wait": True})
    h.settle()
    done = next(r for r in h.runs() if r.status == "Completed")
    running = next(r for r in h.runs() if r.status == "Running")
    assert isinstance(h.backend, AwsBackend)
    return h.backend, done.id, running.id


def test_a_ttl_deleted_run_item_takes_its_steps_log_and_trigger_with_it(
    runs: tuple[AwsBackend, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, done, running = runs
    ddb, table = h.clients["dynamodb"], h.resources.table
    left = partition(h, done)
    assert {"RUN", "TRIGGER"} <= set(left) and len(left) > 25  # and the log: its steps
    before_running = partition(h, running)
    # TTL deletes the run item (DynamoDB Local never does, so the test does).
    ddb.delete_item(TableName=table, Key={"pk": {"S": f"RUN#{done}"}, "sk": {"S": "RUN"}})
    monkeypatch.setenv("STEPKIT_TABLE", table)
    monkeypatch.setattr(reaper_handler, "_client", ddb)
    event = {"Records": [
        record(f"RUN#{running}", ttl=False),  # a person deleting a run item: not a TTL expiry
        record(f"RUN#{running}", sk="LOG#0000000001"),  # TTL on another item of a live run
        record(f"RUN#{running}", name="MODIFY"),
        # TTL-deleted, but the run was created again under the same id since: it is live.
        record(f"RUN#{running}"),
        record(f"RUN#{done}"),
        record(f"RUN#{done}"),  # streams deliver at least once
    ]}
    result = reaper_handler.handler(event, None)
    assert result == {"deleted": len(left) - 1}
    assert partition(h, done) == []
    assert partition(h, running) == before_running
    assert reaper_handler.handler(event, None) == {"deleted": 0}  # again: nothing left to do


class Throttled:
    """The real client, but BatchWriteItem leaves the last request unprocessed N times."""

    def __init__(self, client: Any, times: int) -> None:
        self.client, self.times = client, times

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        if self.times > 0:
            self.times -= 1
            if len(requests) > 1:
                self.client.batch_write_item(RequestItems={table: requests[:-1]})
            return {"UnprocessedItems": {table: requests[-1:]}}
        return dict(self.client.batch_write_item(RequestItems=RequestItems))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_unprocessed_deletes_are_retried_and_a_lasting_failure_raises(
    runs: tuple[AwsBackend, str, str],
) -> None:
    h, done, running = runs
    ddb, table = h.clients["dynamodb"], h.resources.table
    count = len(partition(h, done)) - 1
    ddb.delete_item(TableName=table, Key={"pk": {"S": f"RUN#{done}"}, "sk": {"S": "RUN"}})
    assert reaper.reap(Throttled(ddb, 3), table, f"RUN#{done}", pause=0) == count
    assert partition(h, done) == []
    assert reaper.reap(ddb, table, f"RUN#{running}") == 0  # it has a run item: live
    ddb.delete_item(TableName=table, Key={"pk": {"S": f"RUN#{running}"}, "sk": {"S": "RUN"}})
    with pytest.raises(reaper.ReapError, match=f"1 item\\(s\\) of RUN#{running} stayed"):
        reaper.reap(Throttled(ddb, 100), table, f"RUN#{running}", pause=0)


def test_the_filter_passes_exactly_what_the_reaper_accepts() -> None:
    pattern = reaper.stream_filter()
    assert pattern["eventName"] == ["REMOVE"]
    assert pattern["userIdentity"] == {
        "type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]
    }
    assert pattern["dynamodb"] == {"Keys": {"sk": {"S": ["RUN"]}}}
    assert reaper.expired_runs([record("RUN#a"), record("WAIT#x"), record("RUN#b", sk="RUN")]) == [
        "RUN#a", "RUN#b"
    ]
