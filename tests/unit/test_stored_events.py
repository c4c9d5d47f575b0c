"""Events too large for EventBridge travel by reference; a forged reference is refused."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.backends.aws.payloads import REF_KEY
from runtime.handlers.service import BadMessageError, event_from_envelope

BIG = {"id": "e1", "name": "video/uploaded", "data": {"frames": "f" * 10}, "user": {},
       "ts": 1_700_000_000_000}


class _Payloads:
    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects

    def resolve(self, value: Any) -> Any:
        return self.objects[value[REF_KEY]["key"]]


def _delivery(key: str, event_id: str = "e1") -> dict[str, Any]:
    return {"detail-type": "video/uploaded", "id": "eb-1", "time": "2026-01-01T00:00:00Z",
            "detail": {"id": event_id, "name": "video/uploaded", "ts": BIG["ts"],
                       REF_KEY: {"key": key, "bytes": 1, "sha256": "x"}}}


def test_a_stored_event_is_read_back_whole() -> None:
    payloads = _Payloads({"runs/e1/a.json": BIG})
    got = event_from_envelope(_delivery("runs/e1/a.json"), payloads)  # type: ignore[arg-type]
    assert got["data"] == BIG["data"] and got["id"] == "e1"


@pytest.mark.parametrize(("key", "stored", "why"), [
    ("runs/r-secret/out.json", {"secret": 1}, "is not its own"),  # another run's output
    ("runs/e1/b.json", {**BIG, "id": "e2"}, "is another event"),  # an object of its id, swapped
    ("runs/e1/c.json", {**BIG, "name": "other/name"}, "is another event"),
])
def test_a_forged_reference_is_refused(key: str, stored: Any, why: str) -> None:
    payloads = _Payloads({key: stored})
    with pytest.raises(BadMessageError, match=why):
        event_from_envelope(_delivery(key), payloads)  # type: ignore[arg-type]


def test_a_stored_event_needs_the_bucket() -> None:
    with pytest.raises(BadMessageError, match="STEPKIT_PAYLOAD_BUCKET"):
        event_from_envelope(_delivery("runs/e1/a.json"), None)
