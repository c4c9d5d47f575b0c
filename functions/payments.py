"""Wait for a payment confirmation, with a timeout that sends a reminder instead."""

from __future__ import annotations

from typing import Any

from functions import app
from functions.fakes import record
from runtime import Context, TriggerEvent


@app.function(id="await-payment", trigger=TriggerEvent("invoice/created"),
              idempotency="event.data.invoice_id")
def await_payment(ctx: Context) -> dict[str, Any]:
    """Mark the invoice paid when `payment/confirmed` arrives for it, or remind after a day."""
    invoice_id = ctx.event.data["invoice_id"]
    paid = ctx.step.wait_for_event(
        "wait-payment", event="payment/confirmed", match="data.invoice_id", timeout="1d"
    )
    if paid is None:
        ctx.step.run("send-reminder", record, "payment-reminder", invoice_id=invoice_id)
        return {"invoice_id": invoice_id, "paid": False}
    ctx.step.run(
        "mark-paid", record, "mark-paid", invoice_id=invoice_id, amount=paid.data["amount"]
    )
    return {"invoice_id": invoice_id, "paid": True}
