"""Pausing a function (``stepkit pause``/``resume``), on every backend and mode.

While paused no run starts and no step runs; events, sleeps and waits are kept and go on
after the resume, each step once. Cron fires are skipped while paused.
"""

from __future__ import annotations

from typing import Any

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.orchestration.pausing import PAUSE_CACHE_SECONDS, PAUSED_RETRY, pause
from tests.conftest import MakeHarness

#: A resumed function's held messages are back within this (and the cached pause lapses).
BACK = f"{int(PAUSED_RETRY + PAUSE_CACHE_SECONDS) + 1}s"


def _orders(charged: list[str], shipped: list[str], paid: list[Any]) -> App:
    app = App("shop")

    @app.function(id="fulfil", trigger=TriggerEvent("order/created"))
    def fulfil(ctx: Context) -> str:
        order = ctx.event.data["order_id"]
        ctx.step.run("charge", lambda: charged.append(order))
        ctx.step.sleep("cool-off", "1h")
        payment = ctx.step.wait_for_event("paid", event="payment/confirmed",
                                          match="data.order_id", timeout="1d")
        paid.append(payment.data["amount"] if payment else None)
        ctx.step.run("ship", lambda: shipped.append(order))
        return order

    return app


def test_a_paused_function_runs_nothing_and_loses_nothing(make_harness: MakeHarness) -> None:
    charged: list[str] = []
    shipped: list[str] = []
    paid: list[Any] = []
    h = make_harness(_orders(charged, shipped, paid))
    h.send("order/created", {"order_id": "o1"})  # sleeping before the pause
    assert h.only_run("fulfil").step("cool-off").status == "Sleeping"

    h.pause("fulfil", "payments API down")
    h.send("order/created", {"order_id": "o2"})  # no run while paused
    h.advance("2h")  # o1's sleep ends: its next step waits for the resume
    h.send("payment/confirmed", {"order_id": "o1", "amount": 30})
    assert [r.id for r in h.runs("fulfil")] == [h.only_run("fulfil").id]
    assert h.only_run("fulfil").status == "Running"
    assert h.once(charged) == ["o1"]
    assert "paid" not in h.only_run("fulfil").steps

    assert h.resume("fulfil")
    h.advance(BACK)
    h.send("payment/confirmed", {"order_id": "o2", "amount": 40})
    h.advance("2h")
    h.send("payment/confirmed", {"order_id": "o2", "amount": 40})

    runs = {r.output: r for r in h.runs("fulfil")}
    assert set(runs) == {"o1", "o2"}
    assert all(r.status == "Completed" for r in runs.values())
    assert sorted(h.once(charged)) == ["o1", "o2"]
    assert sorted(h.once(shipped)) == ["o1", "o2"]
    if h.chaos is None:  # each step once (chaos mode repeats an unrecorded step)
        assert sorted(charged) == ["o1", "o2"] and sorted(shipped) == ["o1", "o2"]
    assert runs["o1"].step("paid").status == "Completed"


def test_cron_fires_are_skipped_while_paused(make_harness: MakeHarness) -> None:
    ticks: list[str] = []
    app = App("reports")

    @app.function(id="hourly", trigger=TriggerCron("0 * * * *"))
    def hourly(ctx: Context) -> None:
        ticks.append(ctx.event.id)

    h = make_harness(app)
    h.pause("hourly")
    h.advance("3h")
    assert h.runs("hourly") == []
    h.resume("hourly")
    h.advance("1h")
    assert len(h.runs("hourly")) == 1  # the next fire, none of the missed ones
    assert len(h.once(ticks)) == 1


def test_a_pause_during_a_checkpoint_chain_stops_before_the_next_step(
    make_harness: MakeHarness,
) -> None:
    done: list[str] = []
    holder: dict[str, Any] = {}
    app = App("etl")

    def extract() -> None:
        done.append("extract")
        h = holder["h"]
        if not holder.get("paused"):  # paused while the step runs, for longer than the bound
            holder["paused"] = True
            pause(h.backend.store, h.clock, "etl")
            h.clock.advance(PAUSE_CACHE_SECONDS)

    @app.function(id="etl", trigger=TriggerEvent("etl/go"), checkpointing=True)
    def etl(ctx: Context) -> str:
        ctx.step.run("extract", extract)
        ctx.step.run("transform", lambda: done.append("transform"))
        ctx.step.run("load", lambda: done.append("load"))
        return "ok"

    h = make_harness(app)
    holder["h"] = h
    h.send("etl/go", {})
    run = h.only_run("etl")
    assert run.status == "Running"
    if h.chaos is None:  # chaos may fail extract's commit: its retry is then held as well
        assert run.step("extract").status == "Completed"
    assert "transform" not in h.once(done)

    h.resume("etl")
    h.advance(BACK)
    assert h.only_run("etl").status == "Completed"
    assert h.once(done) == ["extract", "transform", "load"]


def test_held_copies_do_not_multiply_under_duplicate_delivery(
    make_harness: MakeHarness,
) -> None:
    ran: list[str] = []
    app = App("shop")

    @app.function(id="notify", trigger=TriggerEvent("user/signup"))
    def notify(ctx: Context) -> None:
        ctx.step.run("mail", lambda: ran.append(ctx.event.data["user"]))

    h = make_harness(app, duplicate_deliveries=True)
    h.pause("notify")
    h.send("user/signup", {"user": "u1"})
    handled = []
    for _ in range(8):  # eight rounds: a copy per round each would make 2**8 by now
        h.clock.advance(PAUSED_RETRY)
        handled.append(h.settle())
    if h.chaos is None:  # each round: the held copy and its duplicate, one re-sending
        assert max(handled) <= 2, handled
    else:
        # Chaos adds deliveries (a failed one is deferred and comes back in the round; a
        # dying copy may re-send before another marks the round): single rounds reach 12,
        # then fall back. Copies that multiplied would pass 48 by the fifth round.
        assert sum(handled[2:]) <= 8 * len(handled[2:]), handled
    assert ran == []

    h.resume("notify")
    h.advance(BACK)
    assert h.only_run("notify").status == "Completed"
    assert h.once(ran) == ["u1"]


def test_a_pause_racing_a_run_holds_its_next_steps_and_branches(
    make_harness: MakeHarness,
) -> None:
    done: list[str] = []
    holder: dict[str, Any] = {}
    app = App("shop")

    def reserve() -> None:
        done.append("reserve")
        h = holder["h"]
        if not holder.get("paused"):  # the run's own step pauses it: the race, made certain
            holder["paused"] = True
            pause(h.backend.store, h.clock, "checkout")
            h.clock.advance(PAUSE_CACHE_SECONDS)

    @app.function(id="checkout", trigger=TriggerEvent("cart/checkout"))
    def checkout(ctx: Context) -> list[str]:
        ctx.step.run("reserve", reserve)
        got = ctx.step.parallel([
            lambda: ctx.step.run("charge", lambda: done.append("charge") or "charged"),
            lambda: ctx.step.run("label", lambda: done.append("label") or "labelled"),
        ])
        ctx.step.run("notify", lambda: done.append("notify"))
        return list(got)

    h = make_harness(app)
    holder["h"] = h
    h.send("cart/checkout", {})
    h.advance("10m")
    assert h.only_run("checkout").status == "Running"
    assert h.once(done) == ["reserve"]

    h.resume("checkout")
    h.advance(BACK)
    h.advance(BACK)
    run = h.only_run("checkout")
    assert run.status == "Completed" and run.output == ["charged", "labelled"]
    assert sorted(h.once(done)) == ["charge", "label", "notify", "reserve"]
    if h.chaos is None:
        assert sorted(done) == ["charge", "label", "notify", "reserve"]
