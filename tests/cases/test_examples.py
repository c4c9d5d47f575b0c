"""The example functions in functions/ behave as their docstrings say."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from functions import fakes
from runtime import App
from runtime.discovery import load_app


@pytest.fixture
def examples() -> App:
    fakes.SENT.clear()
    return load_app("functions")


def test_discovery_finds_every_example(examples: App) -> None:
    assert set(examples.functions) == {
        "send-welcome-email",
        "process-order",
        "notify-backorder",
        "fulfil-order",
        "daily-digest",
        "send-user-digest",
        "agent-loop",
        "await-payment",
        "handle-webhook",
    }


def test_welcome_drip(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    h.send("user/signup", {"user_id": "ada"})
    to_ada = [e["template"] for e in fakes.SENT if e.get("to") == "ada@example.com"]
    # Steps are at-least-once: chaos mode's duplicated deliveries may repeat a side effect.
    assert to_ada == ["welcome"] if not h.chaos else set(to_ada) == {"welcome"}
    h.advance("3d1h")
    run = h.only_run("send-welcome-email")
    assert run.status == "Completed"
    to_ada = [e["template"] for e in fakes.SENT if e.get("to") == "ada@example.com"]
    # (the daily digest cron also emails ada while the clock skips three days)
    drip = [t for t in to_ada if t != "digest"]
    if not h.chaos:
        assert drip == ["welcome", run.output["follow_up"]]
        assert to_ada.count("digest") == 3
    else:
        assert list(dict.fromkeys(drip)) == ["welcome", run.output["follow_up"]]
        assert len(h.runs("daily-digest")) == 3 and to_ada.count("digest") >= 3


def test_order_shipped_and_backordered(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    h.send("order/created", {"order_id": "o1", "sku": "A1", "cents": 500})
    h.send("order/created", {"order_id": "o2", "sku": "BO-9", "cents": 500})
    outputs = sorted(r.output["status"] for r in h.runs("process-order"))
    assert outputs == ["backordered", "shipped"]
    assert h.only_run("notify-backorder").status == "Completed"
    actions = h.once(e["action"] for e in fakes.SENT)
    assert actions.count("charge") == 1 and actions.count("restock-request") == 1


def test_fulfilment_cancelled(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    h.send("order/paid", {"order_id": "o1"})
    h.send("order/cancelled", {"order_id": "o1"})
    h.advance("2h")
    assert h.only_run("fulfil-order").status == "Cancelled"
    assert h.once(e["action"] for e in fakes.SENT) == ["reserve"]


def test_daily_digest_fans_out(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    h.clock.set(datetime(2026, 3, 3, 7, 55, tzinfo=UTC))
    h.settle()
    h.advance("10m")
    assert h.only_run("daily-digest").output == 3
    assert sorted(r.output["user"] for r in h.runs("send-user-digest")) == ["ada", "grace", "linus"]


def test_agent_loop(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    h.send("agent/task", {"goal": "find a cafe"})
    run = h.only_run("agent-loop")
    assert run.output == {"answer": "find a cafe: done in 3 rounds", "rounds": 3}
    assert sorted(run.steps) == [
        "act-0",
        "act-1",
        "act-2",
        "think-0",
        "think-1",
        "think-2",
        "think-3",
    ]


def test_payment_wait(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    h.send("invoice/created", {"invoice_id": "i1"})
    h.send("invoice/created", {"invoice_id": "i2"})
    h.send("payment/confirmed", {"invoice_id": "i1", "amount": 10})
    h.advance("1d1h")
    by_id = {r.output["invoice_id"]: r.output["paid"] for r in h.runs("await-payment")}
    assert by_id == {"i1": True, "i2": False}


def test_a_stripe_signed_delivery_reaches_the_webhook_function_once(
        make_harness: Any, examples: App, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "whsec_example_test"
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", secret)  # locally a secret is its variable
    h = make_harness(examples)
    body = json.dumps({"id": "evt_9", "type": "invoice.paid", "object": "event"}).encode()
    at = int(h.clock.now())
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Stripe-Signature": f"t={at},v1={mac}"}
    answers = []
    for _ in range(2):  # Stripe retries a delivery it thinks failed
        answers.append(h.post("/webhooks/stripe", raw=body, headers=headers))
    assert [(a.status, a.body["ids"]) for a in answers] == [(200, ["stripe-evt_9"])] * 2
    assert [r.output for r in h.runs("handle-webhook")] == [{"applied": "evt_9"}]
    assert h.once(e["provider_id"] for e in fakes.SENT if e["action"] == "webhook") == ["evt_9"]
    forged = h.post("/webhooks/stripe", raw=body.replace(b"evt_9", b"evt_X"), headers=headers)
    assert forged.status == 401 and len(h.runs("handle-webhook")) == 1


def test_webhook_runs_once_per_provider_id(make_harness: Any, examples: App) -> None:
    h = make_harness(examples)
    for _ in range(2):  # the provider retries a delivery it thinks failed
        h.send("stripe/webhook", {"id": "evt_1", "type": "invoice.paid"})
    h.send("stripe/webhook", {"id": "evt_2", "type": "invoice.paid"})
    assert sorted(r.output["applied"] for r in h.runs("handle-webhook", "Completed")) == [
        "evt_1", "evt_2"]
    assert len(h.runs("handle-webhook", "Skipped")) == 1
    assert sorted(h.once(e["provider_id"] for e in fakes.SENT if e["action"] == "webhook")) == [
        "evt_1", "evt_2"]
