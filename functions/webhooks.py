"""A payment-provider webhook: providers retry deliveries, so each of their ids runs once."""

from __future__ import annotations

from typing import Any

from functions import app
from functions.fakes import record
from runtime import Context, TriggerEvent


@app.function(
    id="handle-webhook",
    trigger=TriggerEvent("stripe/webhook"),
    # The provider re-sends a webhook it thinks we missed: one run per its event id (24 h);
    # the copies are recorded as Skipped runs.
    idempotency="event.data.id",
)
def handle_webhook(ctx: Context) -> dict[str, Any]:
    """Apply one provider event (e.g. mark an invoice paid)."""
    data = ctx.event.data
    ctx.step.run("apply", record, "webhook", type=data["type"], provider_id=data["id"])
    return {"applied": data["id"]}
