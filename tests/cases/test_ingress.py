"""The HTTPS event endpoint and webhooks, on every backend and mode.

On AWS the requests go to the deployed endpoint's Lambda as API Gateway sends them; locally
to the dev server's endpoint with keys checked. What a client sees is the same: a 2xx with
the ids only once the events are on the bus, a refusal that says why and starts nothing, and
no second run for an id posted again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from pydantic import BaseModel

from runtime import App, Context, TriggerEvent
from runtime.ingress.endpoint import MAX_REQUEST_BYTES, MAX_REQUEST_EVENTS, Answer, Ingress
from runtime.ingress.keys import KEY_CACHE_SECONDS
from runtime.testing import Harness
from runtime.webhooks import GitHub, Stripe
from tests.conftest import MakeHarness

STRIPE_SECRET = "whsec_test_0123456789"
GITHUB_SECRET = "gh-hook-secret"


class Refund(BaseModel):
    order: str
    amount: int


def _shop() -> App:
    app = App("shop")

    @app.function(id="fulfil", trigger=TriggerEvent("shop/order.placed"))
    def fulfil(ctx: Context) -> Any:
        return ctx.step.run("ship", lambda: ctx.event.data["order"])

    @app.function(id="audit", trigger=TriggerEvent("audit/note"))
    def audit(ctx: Context) -> Any:
        return ctx.event.data

    @app.function(id="paid", trigger=TriggerEvent("stripe/webhook"))
    def paid(ctx: Context) -> Any:
        return ctx.step.run("apply", lambda: ctx.event.data["type"])

    @app.function(id="refund", trigger=TriggerEvent("shop/refund", data=Refund))
    def refund(ctx: Context) -> Any:
        return ctx.event.data["amount"]

    @app.function(id="pushed", trigger=TriggerEvent("github/push"))
    def pushed(ctx: Context) -> Any:
        return ctx.event.data["ref"]

    app.webhook("stripe", verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"),
                secrets={"STRIPE_WEBHOOK_SECRET": "secretsmanager:shop/stripe"})
    app.webhook("github", verify=GitHub(secret="GITHUB_WEBHOOK_SECRET"),
                transform={"name": "github/{headers.x-github-event}", "data": "{body}"},
                secrets={"GITHUB_WEBHOOK_SECRET": "ssm:/shop/github"})
    return app


@pytest.fixture(autouse=True)
def _webhook_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Locally (and in the harness) a secret is the environment variable of its name.
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)


def _post(h: Harness, path: str, body: Any = None, **options: Any) -> Answer:
    """One post, as a client makes it (chaos faults workers, not the test's own requests).

    The endpoint's own failures are injected where a case needs them (the bus's pushback,
    a publish that landed and then failed).
    """
    return h.post(path, body, **options)


def _outputs(h: Harness, function_id: str) -> list[Any]:
    return sorted(json.dumps(r.output) for r in h.runs(function_id) if r.status == "Completed")


def test_a_keyed_post_starts_the_runs_its_events_trigger(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    key = h.create_key("web shop")
    one = _post(h, f"/e/{key}", {"name": "shop/order.placed", "data": {"order": "o1"},
                                 "id": "evt-o1"})
    assert (one.status, one.body) == (200, {"ids": ["evt-o1"], "status": 200})
    many = _post(h, "/e", [{"name": "shop/order.placed", "data": {"order": f"o{i}"},
                            "id": f"evt-o{i}"} for i in (2, 3, 4)],
                 headers={"Authorization": f"Bearer {key}"})
    assert many.status == 200 and many.body["ids"] == ["evt-o2", "evt-o3", "evt-o4"]
    assert _outputs(h, "fulfil") == ['"o1"', '"o2"', '"o3"', '"o4"']
    assert h.runs("fulfil")[0].steps["ship"].status == "Completed"


def test_an_id_posted_again_starts_nothing_new(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    key = h.create_key()
    event = {"name": "shop/order.placed", "data": {"order": "o1"}, "id": "evt-once"}
    first = _post(h, f"/e/{key}", event)
    again = _post(h, f"/e/{key}", event)
    assert first.body["ids"] == again.body["ids"] == ["evt-once"]
    assert len(h.runs("fulfil")) == 1
    assert _outputs(h, "fulfil") == ['"o1"']


def test_keys_that_are_not_live_start_nothing_and_say_why(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    key = h.create_key()
    event = {"name": "shop/order.placed", "data": {"order": "o1"}}
    missing = _post(h, "/e", event)
    assert missing.status == 401 and "no event key" in missing.body["error"]
    garbled = _post(h, "/e/not-a-key", event)
    assert garbled.status == 401 and "not a stepkit event key" in garbled.body["error"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    unknown = _post(h, f"/e/{forged}", event)
    assert unknown.status == 401 and "unknown event key" in unknown.body["error"]
    assert forged not in json.dumps(unknown.body) and key not in json.dumps(unknown.body)
    other = h.create_key()
    assert _post(h, f"/e/{other}", {**event, "id": "before-revoke"}).status == 200

    from runtime.ingress.keys import key_id, revoke_key

    revoke_key(h._store, h.clock, key_id(other))
    h.advance(f"{int(KEY_CACHE_SECONDS) + 1}s")  # the endpoint's cached read lapses
    revoked = _post(h, f"/e/{other}", {**event, "id": "after-revoke"})
    assert revoked.status == 401 and "revoked" in revoked.body["error"]
    assert [r.output for r in h.runs("fulfil")] == ["o1"]  # only the one accepted


def test_a_key_limited_to_prefixes_sends_only_those_names(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    key = h.create_key("shop only", prefixes=["shop/"])
    mixed = _post(h, f"/e/{key}", [{"name": "shop/order.placed", "data": {"order": "o1"}},
                                 {"name": "audit/note", "data": {"n": 1}}])
    assert mixed.status == 403 and "event[1].name" in mixed.body["error"]
    assert "'shop/'" in mixed.body["error"]
    assert h.runs("fulfil") == [] and h.runs("audit") == []  # all or none
    assert _post(h, f"/e/{key}", {"name": "shop/order.placed", "data": {"order": "o2"},
                                  "id": "o2"}).status == 200
    assert _outputs(h, "fulfil") == ['"o2"']


def test_bad_requests_are_refused_with_the_rule_and_start_nothing(
        make_harness: MakeHarness, backend_name: str) -> None:
    h = make_harness(_shop())
    key = h.create_key()
    path = f"/e/{key}"
    bad_json = _post(h, path, raw=b'{"name": "shop/order.placed", "data": ')
    assert bad_json.status == 400 and "invalid JSON body" in bad_json.body["error"]
    second_bad = _post(h, path, [{"name": "shop/order.placed", "data": {"order": "o1"}},
                               {"name": "shop/order.placed", "data": {"n": 2 ** 70}}])
    assert second_bad.status == 400 and "event[1].data.n" in second_bad.body["error"]
    typed = _post(h, path, {"name": "shop/refund", "data": {"order": "o1", "amount": "ten"}})
    assert typed.status == 400 and "Refund" in typed.body["error"]
    assert "'refund'" in typed.body["error"]  # the function that declared it
    reserved = _post(h, path, {"name": "stepkit/function.failed", "data": {}})
    assert reserved.status == 400 and "reserved" in reserved.body["error"]
    empty = _post(h, path, [])
    assert empty.status == 400
    too_many = _post(h, path, [{"name": "audit/note"}] * (MAX_REQUEST_EVENTS + 1))
    assert too_many.status == 413
    big = {"name": "audit/note", "data": {"blob": "x" * MAX_REQUEST_BYTES}}
    too_big = _post(h, path, big)
    assert too_big.status == 413 and "MiB" in too_big.body["error"]
    # Only POST is routed: the core answers 405; on AWS, API Gateway has no such route (404).
    assert _post(h, path, method="GET").status == (405 if backend_name == "local" else 404)
    assert _post(h, "/nowhere", {}).status == 404
    assert h.runs() == []


def _stripe_signed(payload: dict[str, Any], secret: str, at: int) -> tuple[bytes, dict[str, str]]:
    """A body and headers as Stripe signs them: HMAC-SHA256 of ``<t>.<body>``."""
    body = json.dumps(payload).encode()
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={at},v1={mac}"}


def test_a_stripe_webhook_runs_once_even_when_posted_twice(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    now = int(h.clock.now())
    payload = {"id": "evt_1Nabc", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}
    body, headers = _stripe_signed(payload, STRIPE_SECRET, now)
    first = _post(h, "/webhooks/stripe", raw=body, headers=headers)
    assert first.status == 200 and first.body["ids"] == ["stripe-evt_1Nabc"]
    again = _post(h, "/webhooks/stripe", raw=body, headers=headers)  # Stripe retries
    assert again.status == 200 and again.body["ids"] == first.body["ids"]
    assert _outputs(h, "paid") == ['"invoice.paid"']
    assert len(h.runs("paid")) == 1


def test_an_event_cannot_take_a_webhook_deliverys_id(make_harness: MakeHarness) -> None:
    """A key holder who posts ``stripe-evt_...`` first would make Stripe's delivery a
    duplicate; the id is the source's alone, so the post is refused and the delivery lands."""
    h = make_harness(_shop())
    key = h.create_key()
    squatter = _post(h, f"/e/{key}", {"name": "stripe/webhook", "id": "stripe-evt_7",
                                      "data": {"type": "forged"}})
    assert squatter.status == 400 and "event.id" in squatter.body["error"]
    assert "webhook source 'stripe'" in squatter.body["error"]
    body, headers = _stripe_signed({"id": "evt_7", "type": "invoice.paid"}, STRIPE_SECRET,
                                   int(h.clock.now()))
    assert _post(h, "/webhooks/stripe", raw=body, headers=headers).status == 200
    assert _outputs(h, "paid") == ['"invoice.paid"']


def test_a_webhook_that_does_not_verify_starts_nothing(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    now = int(h.clock.now())
    payload = {"id": "evt_2", "type": "invoice.paid"}
    body, headers = _stripe_signed(payload, "whsec_someone_else", now)
    forged = _post(h, "/webhooks/stripe", raw=body, headers=headers)
    assert forged.status == 401 and "stripe" in forged.body["error"]
    assert "whsec" not in forged.body["error"]
    body, headers = _stripe_signed(payload, STRIPE_SECRET, now - 3600)  # replayed an hour on
    stale = _post(h, "/webhooks/stripe", raw=body, headers=headers)
    assert stale.status == 401
    body, headers = _stripe_signed(payload, STRIPE_SECRET, now)
    tampered = _post(h, "/webhooks/stripe", raw=body.replace(b"evt_2", b"evt_3"), headers=headers)
    assert tampered.status == 401
    unsigned = _post(h, "/webhooks/stripe", payload)
    assert unsigned.status == 401
    assert _post(h, "/webhooks/nobody", payload).status == 404
    assert h.runs() == []


def test_a_github_delivery_becomes_its_named_event_once(make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    body = json.dumps({"ref": "refs/heads/main", "after": "abc"}).encode()
    mac = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    for _ in range(2):  # a redelivery from GitHub's settings page sends the same id
        answer = _post(h, "/webhooks/github", raw=body, headers=headers)
        assert answer.status == 200
        assert answer.body["ids"] == ["github-72d3162e-cc78-11e3-81ab-4c9367dc0958"]
    assert _outputs(h, "pushed") == ['"refs/heads/main"']
    assert len(h.runs("pushed")) == 1


def test_a_delivery_its_transform_makes_invalid_is_a_500_the_provider_retries(
        make_harness: MakeHarness) -> None:
    """The app's mapping, not the provider, is at fault: a 400 would drop the delivery."""
    h = make_harness(_shop())
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    mac = hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Delivery": "d-1",
               "X-GitHub-Event": "push event"}  # a name with a space: not an event name
    answer = _post(h, "/webhooks/github", raw=body, headers=headers)
    assert answer.status == 500 and "not valid" in answer.body["error"]
    assert h.runs("pushed") == []
    headers["X-GitHub-Event"] = "push"  # the same delivery, once the mapping is right
    assert _post(h, "/webhooks/github", raw=body, headers=headers).status == 200
    assert _outputs(h, "pushed") == ['"refs/heads/main"']


def test_a_publish_that_landed_and_then_failed_is_a_500_whose_ids_repost_once(
        make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The events reached the bus, but the call failed after (a reset connection): the
    client is told 500 with the ids it did not choose, and posting them again starts
    nothing twice."""
    h = make_harness(_shop())
    key = h.create_key()
    original, failed = Ingress._publish, []

    def landed_then_failed(self: Ingress, events: Any, what: str) -> Answer:
        if failed:
            return original(self, events, what)
        real = self.publish

        def publish(out: list[dict[str, Any]]) -> None:
            real(out)
            failed.append(len(out))
            raise ConnectionResetError("connection reset after the events were sent")

        self.publish = publish
        try:
            return original(self, events, what)
        finally:
            self.publish = real

    monkeypatch.setattr(Ingress, "_publish", landed_then_failed)
    events = [{"name": "shop/order.placed", "data": {"order": f"o{i}"}} for i in range(3)]
    first = h.post(f"/e/{key}", events)
    assert first.status == 500 and failed == [3], first
    ids = first.body["ids"]
    assert len(set(ids)) == 3
    again = h.post(f"/e/{key}", [dict(e, id=i) for e, i in zip(events, ids, strict=True)])
    assert (again.status, again.body["ids"]) == (200, ids)
    h.advance("1m")
    assert _outputs(h, "fulfil") == ['"o0"', '"o1"', '"o2"']
    assert len(h.runs("fulfil")) == 3


def test_a_key_for_other_names_cannot_make_an_event_a_duplicate_by_taking_its_id(
        make_harness: MakeHarness) -> None:
    """Ids are remembered for 24 h: one first sent under another name must not make the
    real event a duplicate, or its waiters (and cancel_on) would never see it."""
    app = App("shop")

    @app.function(id="await-payment", trigger=TriggerEvent("shop/order.placed"))
    def await_payment(ctx: Context) -> Any:
        paid = ctx.step.wait_for_event("paid", event="shop/payment.confirmed",
                                       match="data.order", timeout="1d")
        return paid.data["amount"] if paid else None

    h = make_harness(app)
    h.send("shop/order.placed", {"order": "o1"})
    audit = h.create_key(prefixes=["audit/"])  # may send audit/ names only
    taken = _post(h, f"/e/{audit}", {"name": "audit/note", "id": "pay-o1", "data": {}})
    assert taken.status == 200
    h.send([{"name": "shop/payment.confirmed", "id": "pay-o1",
             "data": {"order": "o1", "amount": 5}}])
    assert h.only_run("await-payment").output == 5
    # The same event again, under its own name, is still a duplicate.
    h.send([{"name": "shop/payment.confirmed", "id": "pay-o1",
             "data": {"order": "o1", "amount": 6}}])
    assert h.only_run("await-payment").output == 5


def test_pushback_from_the_bus_is_a_429_and_the_repost_lands_once(
        make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    key = h.create_key()
    h.pushback("bus", span="1m")
    event = {"name": "shop/order.placed", "data": {"order": "o9"}, "id": "evt-o9"}
    busy = h.post(f"/e/{key}", event)
    assert busy.status == 429 and busy.headers.get("retry-after") == "1"
    assert busy.body["ids"] == ["evt-o9"]  # what to post again with
    assert h.runs("fulfil") == []
    h.advance("2m")
    assert _post(h, f"/e/{key}", event).status == 200
    assert _outputs(h, "fulfil") == ['"o9"']


def test_pushback_on_the_key_read_is_a_429_and_the_repost_lands(
        make_harness: MakeHarness) -> None:
    h = make_harness(_shop())
    key = h.create_key()
    h.pushback("store", span="1m")
    event = {"name": "shop/order.placed", "data": {"order": "o8"}, "id": "evt-o8"}
    busy = h.post(f"/e/{key}", event, settle=False)
    assert busy.status == 429 and busy.headers.get("retry-after") == "1", busy
    assert "ids" not in busy.body  # refused at the key's read, before any event was taken
    h.advance("2m")
    assert _post(h, f"/e/{key}", event).status == 200
    assert _outputs(h, "fulfil") == ['"o8"']


def test_the_endpoint_logs_neither_key_nor_payload(make_harness: MakeHarness,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    h = make_harness(_shop())
    key = h.create_key()
    secret_data = f"card-{time.time_ns()}"
    with caplog.at_level("DEBUG"):
        _post(h, f"/e/{key}", {"name": "shop/order.placed", "data": {"order": secret_data},
                               "id": "evt-log"})
        _post(h, f"/e/{key[:-2]}zz", {"name": "audit/note", "data": {"x": secret_data}})
        # Refusals whose answers quote what was sent: a value its data= model refuses, and
        # a path holding the key.
        refused = _post(h, f"/e/{key}", {"name": "shop/refund", "data": {"amount": secret_data}})
        assert refused.status == 400 and secret_data in refused.body["error"]
        assert _post(h, f"/e/{key}/more", {"name": "audit/note"}).status == 404
    text = caplog.text
    ident = key.split("_")[1]
    assert key not in text and key[:-2] + "zz" not in text
    assert f"sk_{ident}_" in text  # named by its public id
    ingress_lines = [r.getMessage() for r in caplog.records if r.name == "stepkit.ingress"]
    assert ingress_lines and not any(secret_data in line for line in ingress_lines)
