"""A payment-provider webhook: providers retry deliveries, so each of their ids runs once."""

from __future__ import annotations

from typing import Any

from functions import app
from functions.fakes import record
from runtime import Context, TriggerEvent
from runtime.webhooks import Stripe

# POST /webhooks/stripe (deployed with -c stepkit:eventApi=true; locally on the dev server):
# a request whose Stripe-Signature verifies becomes the event "stripe/webhook" with Stripe's
# event as its data and "stripe-<Stripe's event id>" as its id, so a retried delivery starts
# nothing new. Locally the secret is the environment variable STRIPE_WEBHOOK_SECRET (what
# `stripe listen` prints); on AWS it is read from Secrets Manager.
app.webhook("stripe", verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"),
            secrets={"STRIPE_WEBHOOK_SECRET": "secretsmanager:stepkit-example/stripe-webhook"})


@app.function(
    id="handle-webhook",
    trigger=TriggerEvent("stripe/webhook"),
    # The provider re-sends a webhook it thinks we missed: the endpoint gives every copy the
    # same event id (one run), and this key also catches a copy sent another way (24 h);
    # such copies are recorded as Skipped runs.
    idempotency="event.data.id",
)
def handle_webhook(ctx: Context) -> dict[str, Any]:
    """Apply one provider event (e.g. mark an invoice paid)."""
    data = ctx.event.data
    ctx.step.run("apply", record, "webhook", type=data["type"], provider_id=data["id"])
    return {"applied": data["id"]}
