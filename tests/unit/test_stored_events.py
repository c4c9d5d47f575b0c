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


class _Refusing:
    """An S3 client that refuses every GetObject with ``code``, as S3 answers a reader."""

    def __init__(self, code: str) -> None:
        self.code = code

    def get_object(self, **params: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "GetObject")


@pytest.mark.parametrize(("code", "key", "broken"), [
    ("NoSuchKey", "runs/e1/a.json", True),
    # The stack grants s3:ListBucket, so a missing key is a 404: a 403 is a real denial.
    ("AccessDenied", "runs/e1/a.json", False),
    ("SlowDown", "runs/e1/a.json", False),
    ("InternalError", "runs/e1/a.json", False),
])
def test_only_a_missing_object_is_a_broken_reference(code: str, key: str, broken: bool) -> None:
    from runtime.backends.aws.payloads import BrokenReferenceError, PayloadError, S3Payloads

    payloads = S3Payloads("b", _Refusing(code))
    with pytest.raises(PayloadError) as caught:
        payloads.resolve({REF_KEY: {"key": key, "bytes": 1, "sha256": "x"}})
    assert isinstance(caught.value, BrokenReferenceError) is broken
    assert caught.value.is_retriable is not broken
