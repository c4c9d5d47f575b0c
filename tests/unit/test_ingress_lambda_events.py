"""API Gateway's payload 2.0 event to the endpoint's request, and its answer back."""

from __future__ import annotations

import base64
import json

import pytest

from runtime.handlers.ingress import request_of, response_of
from runtime.ingress.endpoint import Answer
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
