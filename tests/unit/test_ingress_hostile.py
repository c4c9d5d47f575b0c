"""Hostile requests to the event endpoint: every one is answered 4xx, none raises, none starts
anything (the core over a local backend, with keys checked as deployed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.ingress.endpoint import Ingress, IngressRequest
from runtime.ingress.keys import EventKeys, create_key
from runtime.orchestration.clock import FakeClock
from runtime.webhooks import GitHub, Hmac, Stripe
from tests.conftest import START

app = App("hostile")
app.webhook("stripe", verify=Stripe(secret="S1"), secrets={"S1": "ssm:/s1"})
app.webhook("github", verify=GitHub(secret="S2"), secrets={"S2": "ssm:/s2"})
app.webhook("acme", verify=Hmac(secret="S3", encoding="base64"), secrets={"S3": "ssm:/s3"})


@app.function(id="any", trigger=TriggerEvent("a/b"))
def anything(ctx: Context) -> None:
    return None


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ingress, str,
                                                                              LocalBackend]]:
    for name in ("S1", "S2", "S3"):
        monkeypatch.setenv(name, "secret")
    clock = FakeClock(START)
    backend = LocalBackend(app, tmp_path / "db.sqlite3", clock=clock)
    _, key = create_key(backend.store, clock)
    yield Ingress(app, keys=EventKeys(backend.store, clock), publish=backend.orchestrator.send,
                  clock=clock), key, backend
    backend.close()


def _cases(key: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    event = json.dumps({"name": "a/b"}).encode()
    weird_headers = {"stripe-signature": "t=\u00e9\u0000,v1=\U0001f600",
                     "x-hub-signature-256": "sha256=" + "z" * 64,
                     "x-signature": "!!!not base64!!!", "x-timestamp": "1e309",
                     "x-webhook-id": "\ud800"}
    return [
        ("POST", f"/e/{key}", {}, b"\xff\xfe\x00"),  # not UTF-8
        ("POST", f"/e/{key}", {}, b"[" * 10_000 + b"]" * 10_000),  # deep
        ("POST", f"/e/{key}", {}, b'{"name": "a/b", "data": {"n": 1' + b"0" * 5000 + b"}}"),
        ("POST", f"/e/{key}", {}, b'{"name": "a/b", "data": "\\ud800"}'),
        ("POST", f"/e/{key}", {}, b'{"name": "a/b", "data": NaN}'),
        ("POST", f"/e/{key}", {}, b'"just a string"'),
        ("POST", f"/e/{key}", {}, b"null"),
        ("POST", f"/e/{key}", {}, b'{"name": "a/b", "ts": 1e400}'),
        ("POST", f"/e/{key}", {}, b'{"name": "a/b", "id": "' + b"x" * 200 + b'"}'),
        ("POST", f"/e/{key}", {}, b'{"name": "' + b"n" * 200 + b'"}'),
        ("POST", f"/e/{key}%00", {}, event),
        ("POST", "/e/%ff%fe", {}, event),
        ("POST", "/e/" + "sk_" + "0" * 12 + "_" + "A" * 43, {}, event),
        ("POST", "/e", {"authorization": "Bearer"}, event),
        ("POST", "/e", {"authorization": "Basic " + key}, event),
        ("POST", "/e/a/b/c", {}, event),
        ("POST", "/webhooks/", {}, event),
        ("POST", "/webhooks/" + "x" * 5000, {}, event),
        ("POST", "/webhooks/stripe", weird_headers, event),
        ("POST", "/webhooks/github", weird_headers, event),
        ("POST", "/webhooks/acme", weird_headers, event),
        ("POST", "/webhooks/stripe", {"stripe-signature": "t=1,v1=" + "0" * 64 + ",v1"}, b""),
        ("DELETE", f"/e/{key}", {}, event),
        ("POST", "//..//e", {}, event),
    ]


def test_every_hostile_request_is_a_4xx_and_starts_nothing(
        setup: tuple[Ingress, str, LocalBackend]) -> None:
    ingress, key, backend = setup
    for method, path, headers, body in _cases(key):
        answer = ingress.handle(IngressRequest(method, path, headers, body))
        assert 400 <= answer.status < 500, (path[:40], headers, body[:40], answer)
        assert "error" in answer.body
        assert key not in json.dumps(answer.body)
    backend.run_until_idle()
    assert backend.list_runs() == []


def test_a_signed_body_too_deep_to_parse_is_a_400_not_a_crash(
        setup: tuple[Ingress, str, LocalBackend]) -> None:
    """Stripe's verifier reads the event id from the body: by the endpoint's strict rules."""
    import hashlib
    import hmac

    ingress, _, backend = setup
    at = int(backend.clock.now())
    for body in (b"[" * 5_000 + b"]" * 5_000, b'{"id": "evt_1", "n": NaN}'):
        mac = hmac.new(b"secret", f"{at}.".encode() + body, hashlib.sha256).hexdigest()
        answer = ingress.handle(IngressRequest("POST", "/webhooks/stripe",
                                               {"stripe-signature": f"t={at},v1={mac}"}, body))
        assert answer.status == 400 and "not JSON" in answer.body["error"], answer


def test_a_transform_that_fails_answers_500_without_its_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S4", "secret")
    broken = App("broken")

    def transform(request: object, verified: object) -> object:
        raise KeyError("customer card 4242")

    broken.webhook("acme", verify=Hmac(secret="S4", timestamp_header=None, signed="{body}"),
                   transform=transform, secrets={"S4": "ssm:/s4"})
    clock = FakeClock(START)
    backend = LocalBackend(broken, tmp_path / "b.sqlite3", clock=clock)
    try:
        import hashlib
        import hmac

        body = b'{"a": 1}'
        mac = hmac.new(b"secret", body, hashlib.sha256).hexdigest()
        answer = Ingress(broken, keys=None, publish=backend.orchestrator.send,
                         clock=clock).handle(IngressRequest(
                             "POST", "/webhooks/acme", {"x-signature": mac}, body))
        assert answer.status == 500 and "transform failed" in answer.body["error"]
        assert "4242" not in json.dumps(answer.body)
    finally:
        backend.close()
