"""Sleeps with a skipping clock, and wait_for_event match, mismatch and timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from runtime import App, Context, InvalidEventError, Timeouts, TriggerEvent
from tests.conftest import START


def test_sleep_three_days_with_the_skipping_clock(make_harness: Any) -> None:
    app = App("shop")
    sent: list[float] = []

    @app.function(id="drip", trigger=TriggerEvent("user/signup"))
    def drip(ctx: Context) -> str:
        ctx.step.run("welcome", lambda: sent.append(h.clock.now()))
        ctx.step.sleep("wait-3-days", "3d")
        ctx.step.run("follow-up", lambda: sent.append(h.clock.now()))
        return "done"

    h = make_harness(app)
    h.send("user/signup", {"user_id": "u1"})
    assert len(h.once(sent)) == 1
    run = h.only_run("drip")
    nap = run.step("wait-3-days")
    assert nap.status == "Sleeping"
    assert nap.wake_at == START.timestamp() + 3 * 86400
    h.advance("2d")
    assert len(h.once(sent)) == 1
    h.advance("1d1h")
    assert len(h.once(sent)) == 2
    assert h.once(sent)[1] - sent[0] >= 3 * 86400
    run = h.only_run("drip")
    assert run.status == "Completed"
    assert run.step("wait-3-days").status == "Completed"


def test_sleep_until_and_timedelta(make_harness: Any) -> None:
    app = App("shop")
    wake = START + timedelta(hours=5)

    @app.function(id="until", trigger=TriggerEvent("a/b"))
    def until(ctx: Context) -> str:
        ctx.step.sleep_until("until", wake.isoformat())
        ctx.step.sleep("td", timedelta(minutes=90))
        return ctx.now().isoformat()

    h = make_harness(app)
    h.send("a/b")
    h.advance("4h")
    assert h.only_run("until").step("until").status == "Sleeping"
    h.advance("3h")
    run = h.only_run("until")
    assert run.status == "Completed"
    assert run.output >= (wake + timedelta(minutes=90)).isoformat()


def test_sleep_argument_errors_fail_clearly(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="bad-sleep", trigger=TriggerEvent("a/b"))
    def bad(ctx: Context) -> None:
        ctx.step.sleep("too-long", "400d")

    @app.function(id="bad-unit", trigger=TriggerEvent("a/c"))
    def bad_unit(ctx: Context) -> None:
        ctx.step.sleep("typo", "3 days")

    h = make_harness(app)
    h.send("a/b")
    h.send("a/c")
    long_run = h.only_run("bad-sleep")
    assert long_run.status == "Failed"
    assert long_run.error is not None and "one-year limit" in long_run.error
    typo = h.only_run("bad-unit")
    assert typo.error is not None and "invalid duration '3 days'" in typo.error


def _payment_app() -> App:
    app = App("shop")

    @app.function(id="await-payment", trigger=TriggerEvent("order/created"))
    def await_payment(ctx: Context) -> Any:
        paid = ctx.step.wait_for_event(
            "wait-payment", event="payment/confirmed", match="data.order_id", timeout="1h"
        )
        if paid is None:
            return {"paid": False}
        return {"paid": True, "amount": paid.data["amount"]}

    return app


def test_wait_for_event_match(make_harness: Any) -> None:
    h = make_harness(_payment_app())
    h.send("order/created", {"order_id": "o1"})
    run = h.only_run("await-payment")
    assert run.step("wait-payment").status == "Waiting"
    h.send("payment/confirmed", {"order_id": "o1", "amount": 30})
    run = h.only_run("await-payment")
    assert run.status == "Completed"
    assert run.output == {"paid": True, "amount": 30}


def test_wait_for_event_mismatch_then_timeout(make_harness: Any) -> None:
    h = make_harness(_payment_app())
    h.send("order/created", {"order_id": "o1"})
    h.send("payment/confirmed", {"order_id": "other", "amount": 30})
    assert h.only_run("await-payment").status == "Running"
    h.advance("59m")
    assert h.only_run("await-payment").status == "Running"
    h.advance("2m")
    run = h.only_run("await-payment")
    assert run.status == "Completed"
    assert run.output == {"paid": False}
    # An event after the timeout changes nothing.
    h.send("payment/confirmed", {"order_id": "o1", "amount": 30})
    assert h.only_run("await-payment").output == {"paid": False}


def test_wait_for_event_with_if_expression(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="big-payment", trigger=TriggerEvent("order/created"))
    def big(ctx: Context) -> Any:
        got = ctx.step.wait_for_event(
            "wait",
            event="payment/confirmed",
            if_="async.data.order_id == event.data.order_id && async.data.amount >= 100",
            timeout="1d",
        )
        return got.id if got else None

    h = make_harness(app)
    h.send("order/created", {"order_id": "o'1"})
    h.send("payment/confirmed", {"order_id": "o'1", "amount": 99})
    assert h.only_run("big-payment").status == "Running"
    ids = h.send("payment/confirmed", {"order_id": "o'1", "amount": 100})
    run = h.only_run("big-payment")
    assert run.status == "Completed" and run.output == ids[0]


def test_events_up_to_4_mib_trigger_runs_filter_and_resolve_waits(make_harness: Any) -> None:
    app = App("media")
    mib = 1024 * 1024

    @app.function(id="transcode", trigger=TriggerEvent("video/uploaded",
                                                       if_="event.data.kind == 'mp4'"))
    def transcode(ctx: Context) -> dict[str, Any]:
        frames = ctx.event.data["frames"]
        got = ctx.step.wait_for_event("approved", event="video/approved", timeout="1h",
                                      match="data.video")
        return {"frames": len(frames), "notes": len(got.data["notes"]) if got else None}

    h = make_harness(app)
    h.send("video/uploaded", {"kind": "mp4", "video": "v1", "frames": "f" * (3 * mib)})
    h.send("video/uploaded", {"kind": "avi", "video": "v2", "frames": "f" * (3 * mib)})
    h.send("video/approved", {"video": "v1", "notes": "n" * (2 * mib)})
    run = h.only_run("transcode")  # the avi was filtered out by the trigger's `if`
    assert run.status == "Completed"
    assert run.output == {"frames": 3 * mib, "notes": 2 * mib}
    with pytest.raises(InvalidEventError, match="over the 4194304-byte event limit"):
        h.send("video/uploaded", {"frames": "f" * (4 * mib)})


def test_timers_made_moot_are_deleted_and_none_outlives_its_runs(make_harness: Any) -> None:
    # Waits answered within a minute, an invoke that returned at once, and finish timeouts of
    # a week: once every run has ended, no timer of theirs is left to fire (on AWS each would
    # hold one of the account's 10 M schedules until then, and wake a Lambda for nothing).
    app = App("shop")

    @app.function(id="child", trigger=TriggerEvent("never/sent"))
    def child(ctx: Context) -> int:
        return 7

    @app.function(id="order", trigger=TriggerEvent("order/created"),
                  timeouts=Timeouts(finish="7d"))
    def order(ctx: Context) -> Any:
        paid = ctx.step.wait_for_event("paid", event="order/paid", match="data.id",
                                       timeout="1h")
        got = ctx.step.invoke("child", function="child", timeout="2h")
        return [paid is not None, got]

    h = make_harness(app)
    for i in range(3):
        h.send("order/created", {"id": f"o{i}"})
    assert h.pending_timers(), "the waits' and the finish timeouts' timers are set"
    h.advance("30s")
    for i in range(3):
        h.send("order/paid", {"id": f"o{i}"})
    assert [r.output for r in h.runs("order")] == [[True, 7]] * 3
    assert h.pending_timers() == []
