"""API Gateway's payload 2.0 event to the endpoint's request, and its answer back."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest

from runtime import App
from runtime.handlers.ingress import (
    ANSWER_MARGIN_S,
    PUBLISH_THREADS,
    IngressLambda,
    request_of,
    response_of,
)
from runtime.ingress.endpoint import Answer, route_of
from stepkit_emulators.lambda_events import http_api_event


def test_a_binary_body_arrives_base64_and_is_decoded_to_its_bytes() -> None:
    body = b"payload=\xff\x00"
    event = http_api_event("POST", "/webhooks/acme", {"Content-Type": "application/octet-stream",
                                                      "X-Signature": "ab"}, body,
                           route_key="POST /webhooks/{source}")
    assert event["isBase64Encoded"] and event["body"] == base64.b64encode(body).decode()
    request = request_of(event)
    assert (request.method, request.path, request.body) == ("POST", "/webhooks/acme", body)
    assert request.headers["x-signature"] == "ab"


def test_a_json_body_arrives_as_text() -> None:
    event = http_api_event("POST", "/e/k", {"content-type": "application/json"}, b'{"a":1}',
                           route_key="POST /e/{key}", query={"x": "1"})
    assert not event["isBase64Encoded"]
    request = request_of(event)
    assert request.body == b'{"a":1}' and request.query == {"x": "1"}


def test_a_body_marked_base64_that_is_not_is_a_bad_request() -> None:
    event = {"requestContext": {"http": {"method": "POST"}}, "rawPath": "/e/k",
             "body": "not base64!", "isBase64Encoded": True}
    with pytest.raises(ValueError, match="base64"):
        request_of(event)


def test_the_answer_is_json_with_its_headers() -> None:
    response = response_of(Answer.error(429, "busy", ids=["a"]))
    assert response["statusCode"] == 429 and response["headers"]["retry-after"] == "1"
    assert json.loads(response["body"]) == {"error": "busy", "status": 429, "ids": ["a"]}


class _Events:
    """An ``events`` client whose ``PutEvents`` takes ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay, self.calls, self.lock = delay, [], threading.Lock()
        self.running = self.most = 0

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self.lock:
            self.running -= 1
            self.calls.append(len(Entries))
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"} for _ in Entries]}


class _Context:
    def __init__(self, remaining_s: float) -> None:
        self.remaining_s = remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_s * 1000)


def _endpoint(events: _Events) -> IngressLambda:
    lam = IngressLambda(App("shop"), {"STEPKIT_TABLE": "t", "STEPKIT_BUS": "b"},
                        {"dynamodb": object(), "events": events})
    lam.ingress.keys = None  # any key: the publish is what is tested
    return lam


def _post(lam: IngressLambda, count: int, context: Any) -> dict[str, Any]:
    body = json.dumps([{"name": "shop/order.placed", "id": f"e{i}"} for i in range(count)])
    event = http_api_event("POST", "/e/k", {"content-type": "application/json"},
                           body.encode(), route_key="POST /e/{key}")
    return lam.handle(event, context)


def test_a_thousand_events_go_out_in_slices_of_ten_side_by_side() -> None:
    events = _Events(delay=0.02)
    response = _post(_endpoint(events), 1000, _Context(10))
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["ids"] == [f"e{i}" for i in range(1000)]
    assert sorted(events.calls) == [10] * 100
    assert 1 < events.most <= PUBLISH_THREADS  # one after another they took 2 s here


def test_a_publish_that_would_outlast_the_lambda_answers_429_with_every_id_in_time() -> None:
    events = _Events(delay=0.25)  # 100 calls, 8 at a time: over 3 s
    started = time.monotonic()
    response = _post(_endpoint(events), 1000, _Context(ANSWER_MARGIN_S + 0.5))
    took = time.monotonic() - started
    assert response["statusCode"] == 429 and response["headers"]["retry-after"] == "1"
    assert json.loads(response["body"])["ids"] == [f"e{i}" for i in range(1000)]
    assert took < 0.5 + 0.3  # answered by its deadline, not when the publish ended


def test_a_request_matches_the_routes_as_the_http_api_matches_them() -> None:
    assert route_of("POST", "/e/sk_1") == "POST /e/{key}"
    assert route_of("post", "/e?x=1") == "POST /e"
    assert route_of("POST", "/webhooks/stripe") == "POST /webhooks/{source}"
    for method, path in (("GET", "/e/k"), ("POST", "/e/"), ("POST", "/e/a/b"),
                         ("POST", "/webhooks"), ("POST", "/"), ("POST", "/other/x")):
        assert route_of(method, path) is None, (method, path)
