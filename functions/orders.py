"""Order processing: parallel checks, backorder events, charge and ship; cancellable fulfilment."""

from __future__ import annotations

from typing import Any

from functions import app
from functions.fakes import authorize_payment, record, stock_level
from runtime import CancelOn, Context, TriggerEvent


# One run per order however many times its event is sent: it charges a card.
@app.function(id="process-order", trigger=TriggerEvent("order/created"),
              idempotency="event.data.order_id")
def process_order(ctx: Context) -> dict[str, Any]:
    """Check stock and payment in parallel, report a backorder, then charge and ship."""
    order = ctx.event.data
    stock, auth = ctx.step.parallel(
        [
            lambda: ctx.step.run("check-inventory", stock_level, order["sku"]),
            lambda: ctx.step.run(
                "check-payment", authorize_payment, order["order_id"], order["cents"]
            ),
        ]
    )
    if stock < order.get("quantity", 1):
        ctx.step.send_event(
            "report-backorder",
            {
                "name": "order/backordered",
                "data": {"order_id": order["order_id"], "sku": order["sku"]},
            },
        )
        return {"order_id": order["order_id"], "status": "backordered"}
    ctx.step.run("charge", record, "charge", auth_id=auth["auth_id"], cents=order["cents"])
    ctx.step.run("ship", record, "ship", order_id=order["order_id"])
    return {"order_id": order["order_id"], "status": "shipped"}


@app.function(id="notify-backorder", trigger=TriggerEvent("order/backordered"))
def notify_backorder(ctx: Context) -> None:
    """Tell the warehouse about a backorder."""
    ctx.step.run("notify-warehouse", record, "restock-request", sku=ctx.event.data["sku"])


@app.function(
    id="fulfil-order",
    trigger=TriggerEvent("order/paid"),
    cancel_on=CancelOn(event="order/cancelled", match="data.order_id", timeout="7d"),
)
def fulfil_order(ctx: Context) -> str:
    """Pack after a cooling-off hour, then ship; an `order/cancelled` event stops it."""
    order_id = ctx.event.data["order_id"]
    ctx.step.run("reserve-stock", record, "reserve", order_id=order_id)
    ctx.step.sleep("cooling-off", "1h")
    ctx.step.run("pack", record, "pack", order_id=order_id)
    ctx.step.run("ship", record, "ship", order_id=order_id)
    return "shipped"
