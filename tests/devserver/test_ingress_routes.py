"""The event endpoint's routes on the dev server: keys optional, webhooks open to tunnels."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.devserver.api import create_app
from runtime.ingress.endpoint import MAX_REQUEST_BYTES
from runtime.ingress.keys import create_key
from runtime.orchestration.clock import FakeClock
from runtime.webhooks import Hmac
from tests.conftest import START

app = App("devingress")
app.webhook("acme", verify=Hmac(secret="ACME_SECRET"), secrets={"ACME_SECRET": "ssm:/acme"})


@app.function(id="note", trigger=TriggerEvent("note/added"))
def note(ctx: Context) -> Any:
    return ctx.event.data


@app.function(id="acme", trigger=TriggerEvent("acme/webhook"))
def acme(ctx: Context) -> Any:
    return ctx.event.data


class Dev:
    def __init__(self, tmp_path: Path, *, require_keys: bool) -> None:
        self.clock = FakeClock(START)
        self.backend = LocalBackend(app, tmp_path / "dev.sqlite3", clock=self.clock)
        self.client = TestClient(create_app(self.backend, allowed_hosts=["testserver"],
                                            require_keys=require_keys))

    def outputs(self, function_id: str) -> list[Any]:
        self.backend.run_until_idle()
        return [r.output for r in self.backend.list_runs() if r.function_id == function_id]


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dev]:
    monkeypatch.setenv("ACME_SECRET", "acme-secret")
    d = Dev(tmp_path, require_keys=False)
    yield d
    d.client.close()
    d.backend.close()


def test_any_key_is_accepted_locally_by_default(dev: Dev) -> None:
    resp = dev.client.post("/e/whatever", json={"name": "note/added", "data": {"n": 1}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == 200 and len(resp.json()["ids"]) == 1
    assert dev.client.post("/e", json={"name": "note/added", "data": {"n": 2}}).status_code == 200
    assert sorted(o["n"] for o in dev.outputs("note")) == [1, 2]


def test_require_keys_checks_them_as_deployed(tmp_path: Path) -> None:
    d = Dev(tmp_path, require_keys=True)
    try:
        refused = d.client.post("/e/whatever", json={"name": "note/added"})
        assert refused.status_code == 401 and "not a stepkit event key" in refused.json()["error"]
        _, key = create_key(d.backend.store, d.clock, label="dev")
        ok = d.client.post(f"/e/{key}", json={"name": "note/added", "data": {"n": 3}})
        assert ok.status_code == 200, ok.text
        assert d.outputs("note") == [{"n": 3}]
    finally:
        d.client.close()
        d.backend.close()


def test_the_events_route_keeps_the_dev_servers_guards(dev: Dev) -> None:
    foreign = dev.client.post("/e/k", json={"name": "note/added"},
                              headers={"host": "evil.example"})
    assert foreign.status_code == 403 and "DNS rebinding" in foreign.json()["error"]
    cross = dev.client.post("/e/k", json={"name": "note/added"},
                            headers={"origin": "http://evil.example"})
    assert cross.status_code == 403
    assert dev.outputs("note") == []


def _signed(body: bytes, at: int) -> dict[str, str]:
    mac = hmac.new(b"acme-secret", f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return {"x-signature": mac, "x-timestamp": str(at), "x-webhook-id": "d-1"}


def test_a_webhook_through_a_tunnel_is_admitted_by_its_signature(dev: Dev) -> None:
    body = json.dumps({"ticket": 7}).encode()
    at = int(dev.clock.now())
    # A tunnel forwards under its own host name, with the provider's content type.
    headers = {"host": "abc123.tunnel.example", "content-type": "text/plain",
               **_signed(body, at)}
    for _ in range(2):
        resp = dev.client.post("/webhooks/acme", content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["ids"] == ["acme-d-1"]
    bad = dev.client.post("/webhooks/acme", content=body,
                          headers={**headers, "x-signature": "0" * 64})
    assert bad.status_code == 401
    assert dev.outputs("acme") == [{"ticket": 7}]


def test_a_body_over_the_limit_is_refused_while_it_streams(dev: Dev) -> None:
    big = b'{"name": "note/added", "data": {"x": "' + b"y" * MAX_REQUEST_BYTES + b'"}}'
    resp = dev.client.post("/e/k", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "MiB" in resp.json()["error"]
    assert dev.client.get("/e/k").status_code == 405
