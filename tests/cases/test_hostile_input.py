"""Hostile and malformed input: one bad event never hurts another run (issue 23)."""

from __future__ import annotations

from typing import Any

from runtime import App, CancelOn, Context, TriggerEvent


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_a_waiter_planted_with_a_value_too_deep_to_evaluate_blocks_no_other_run(
    make_harness: Any,
) -> None:
    # A crafted order id nested 55 lists deep (events may nest 64) becomes the literal of its
    # run's cancel_on waiter; evaluating it exhausts the evaluator's recursion. Every other
    # run's cancel of that event name must still be routed: the bad waiter is no match.
    shipped: list[str] = []
    app = App("shop")

    @app.function(id="ship", trigger=TriggerEvent("order/placed"),
                  cancel_on=CancelOn(event="order/cancelled", match="data.order_id"))
    def ship(ctx: Context) -> None:
        ctx.step.sleep("pack", "1h")
        ctx.step.run("ship", lambda: shipped.append(str(ctx.event.data["order_id"])[:8]))

    h = make_harness(app)
    h.send("order/placed", {"order_id": _nested(55)})  # the poison
    h.send("order/placed", {"order_id": "o1"})
    h.send("order/cancelled", {"order_id": "o1"})  # an honest cancel, after the poison
    h.advance("2h")
    by_id = {str(r.state.run.events[0]["data"]["order_id"])[:8]: r for r in h.runs("ship")}
    assert by_id["o1"].status == "Cancelled"
    assert h.once(shipped) == ["[[[[[[[["]  # the crafted run itself carried on
    assert h.backend.dead_letters() == []
