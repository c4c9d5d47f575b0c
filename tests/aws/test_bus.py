"""EventBridge adapter: batching, size checks and retries of failed entries (with a fake client)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.backends.aws.bus import EventBridgeBus, PublishError


class FakeEvents:
    """Records PutEvents calls; fails the entries named in ``fail`` a number of times."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail = dict(fail or {})

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        results = []
        for e in Entries:
            eid = json.loads(e["Detail"])["id"]
            if self.fail.get(eid, 0) > 0:
                self.fail[eid] -= 1
                results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"})
            else:
                results.append({"EventId": eid})
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedEntryCount": failed, "Entries": results}


def event(i: int, size: int = 10) -> dict[str, Any]:
    return {"id": f"e{i}", "name": "a/b", "data": {"x": "y" * size}, "user": {}, "ts": 1}


def test_entries_are_batched_ten_per_call_with_the_documented_shape() -> None:
    fake = FakeEvents()
    EventBridgeBus("shop", "shop-bus", fake).publish([event(i) for i in range(23)])
    assert [len(c) for c in fake.calls] == [10, 10, 3]
    first = fake.calls[0][0]
    assert first["Source"] == "shop" and first["DetailType"] == "a/b"
    assert first["EventBusName"] == "shop-bus"
    assert json.loads(first["Detail"]) == event(0)


def test_batches_also_stay_under_the_request_size_limit() -> None:
    fake = FakeEvents()
    EventBridgeBus("shop", "bus", fake).publish([event(i, size=100_000) for i in range(5)])
    assert [len(c) for c in fake.calls] == [2, 2, 1]


def test_only_failed_entries_are_retried() -> None:
    fake = FakeEvents(fail={"e1": 2})
    EventBridgeBus("shop", "bus", fake).publish([event(0), event(1), event(2)])
    sent = [[json.loads(e["Detail"])["id"] for e in call] for call in fake.calls]
    assert sent == [["e0", "e1", "e2"], ["e1"], ["e1"]]


def test_entries_that_keep_failing_raise_a_clear_error() -> None:
    fake = FakeEvents(fail={"e0": 99})
    with pytest.raises(PublishError, match=r"refused 1 entr.* on bus 'bus' after 4 tries"):
        EventBridgeBus("shop", "bus", fake).publish([event(0)])
