"""New code deployed over runs in flight (``Harness.redeploy``), on every backend and mode.

Each case builds v1 of an app, leaves runs sleeping or waiting, deploys v2 (same app id,
new code) over the same state, clock and emulators, and checks what v2 does with them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.control import NotAllowedError
from tests.conftest import START


def _checkout(charged: list[str], receipts: list[str] | None) -> App:
    """v1 charges then sleeps; v2 (``receipts`` given) adds a step after the sleep."""
    app = App("shop")

    @app.function(id="checkout", trigger=TriggerEvent("order/created"))
    def checkout(ctx: Context) -> str:
        order = ctx.event.data["order_id"]
        ctx.step.run("charge", lambda: charged.append(order))
        ctx.step.sleep("cool-off", "1h")
        if receipts is None:
            return "v1"
        ctx.step.run("receipt", lambda: receipts.append(order))
        return "v2"

    return app


def test_a_step_added_after_a_sleep_runs_once_and_recorded_steps_are_not_redone(
    make_harness: Any,
) -> None:
    charged: list[str] = []
    receipts: list[str] = []
    h = make_harness(_checkout(charged, None))
    h.send("order/created", {"order_id": "o1"})
    assert h.only_run("checkout").step("cool-off").status == "Sleeping"

    h = h.redeploy(_checkout(charged, receipts))
    h.advance("2h")

    run = h.only_run("checkout")
    assert run.status == "Completed"
    assert run.output == "v2"
    assert h.once(charged) == ["o1"]
    assert h.once(receipts) == ["o1"]
    assert run.step("receipt").status == "Completed"


def _payments(version: str) -> App:
    app = App("shop")

    @app.function(id="await-payment", trigger=TriggerEvent("order/created"))
    def await_payment(ctx: Context) -> Any:
        paid = ctx.step.wait_for_event(
            "wait-payment", event="payment/confirmed", match="data.order_id", timeout="1d"
        )
        return {"version": version, "amount": paid.data["amount"] if paid else None}

    return app


def test_a_run_waiting_for_an_event_resolves_under_the_new_code(make_harness: Any) -> None:
    h = make_harness(_payments("v1"))
    h.send("order/created", {"order_id": "o1"})
    assert h.only_run("await-payment").step("wait-payment").status == "Waiting"

    h = h.redeploy(_payments("v2"))
    h.advance("10m")
    h.send("payment/confirmed", {"order_id": "o1", "amount": 30})

    run = h.only_run("await-payment")
    assert run.status == "Completed"
    assert run.output == {"version": "v2", "amount": 30}


def _orders(shipped: list[str], *, with_mailer: bool) -> App:
    app = App("shop")

    @app.function(id="ship", trigger=TriggerEvent("order/created"))
    def ship(ctx: Context) -> None:
        ctx.step.run("ship", lambda: shipped.append(ctx.event.data["order_id"]))

    if with_mailer:

        @app.function(id="mail", trigger=TriggerEvent("order/created"))
        def mail(ctx: Context) -> str:
            return str(ctx.event.data["order_id"])

    return app


def test_a_function_added_by_a_deploy_is_triggered_by_later_events(make_harness: Any) -> None:
    shipped: list[str] = []
    h = make_harness(_orders(shipped, with_mailer=False))
    h.send("order/created", {"order_id": "o1"})

    h = h.redeploy(_orders(shipped, with_mailer=True))
    h.send("order/created", {"order_id": "o2"})

    assert h.once(shipped) == ["o1", "o2"]
    assert [r.output for r in h.runs("mail")] == ["o2"]  # o1 came before it existed
    assert h.only_run("mail").status == "Completed"


def _digest(cron: str) -> App:
    app = App("shop")

    @app.function(id="digest", trigger=TriggerCron(cron))
    def digest(ctx: Context) -> str:
        return str(ctx.event.data["cron"])

    return app


def _fired_at(run: Any) -> datetime:
    return datetime.fromtimestamp(run.state.run.events[0]["ts"] / 1000, UTC)


def test_a_cron_changed_by_a_deploy_fires_on_the_new_schedule_only(make_harness: Any) -> None:
    h = make_harness(_digest("0 9 * * *"))  # starts Monday 08:00 UTC
    h.advance("2h")
    assert [r.output for r in h.runs("digest")] == ["0 9 * * *"]

    h = h.redeploy(_digest("0 12 * * *"))
    h.advance("2d")  # to Wednesday 10:00: no more 09:00 fires, two at 12:00

    runs = sorted(h.runs("digest"), key=_fired_at)
    monday = START.replace(hour=0)
    assert [(_fired_at(r) - monday, r.output) for r in runs] == [
        (timedelta(hours=9), "0 9 * * *"),
        (timedelta(hours=12), "0 12 * * *"),
        (timedelta(days=1, hours=12), "0 12 * * *"),
    ]
    assert {r.status for r in runs} == {"Completed"}


def test_pushback_mode_carries_over_a_deploy(make_harness: Any) -> None:
    charged: list[str] = []
    receipts: list[str] = []
    h = make_harness(_checkout(charged, None))
    h.send("order/created", {"order_id": "o1"})
    # The sleep ends at 1h, inside the window: its wake-up cannot be recorded until 80m.
    pushback = h.pushback("store-writes", span="30m", after="50m")

    h = h.redeploy(_checkout(charged, receipts))
    h.advance("70m")
    assert pushback.refusals["store-writes"] > 0  # refused by the new deployment
    assert h.only_run("checkout").status == "Running"
    h.advance("3h")

    assert h.only_run("checkout").status == "Completed"
    assert h.once(receipts) == ["o1"]


def _nap(version: str, effects: list[str], **options: Any) -> App:
    """v1/v3: charge, sleep, ship. "v2" calls a step.run where the history has the sleep."""
    app = App("shop")

    @app.function(id="nap", trigger=TriggerEvent("order/created"), **options)
    def nap(ctx: Context) -> str:
        ctx.step.run("charge", lambda: effects.append(f"charge {version}"))
        if version == "v2":
            ctx.step.run("cool-off", lambda: effects.append("v2 ran"))  # was a sleep
        else:
            ctx.step.sleep("cool-off", "1h")
        ctx.step.run("ship", lambda: effects.append(f"ship {version}"))
        return version

    return app


def test_a_deploy_that_cannot_replay_a_run_blocks_it_until_a_fixing_deploy(
    make_harness: Any,
) -> None:
    effects: list[str] = []
    h = make_harness(_nap("v1", effects))
    h.send("order/created", {"order_id": "o1"})
    h = h.redeploy(_nap("v2", effects))
    h.advance("2h")  # the sleep ends: v2 cannot replay the run
    run = h.only_run("nap")
    assert run.status == "Blocked" and run.error is not None
    assert run.error.startswith("NondeterminismError: nondeterminism at step 'cool-off'")
    assert [r.id for r in h.runs(status="Blocked")] == [run.id]
    h.advance("1h")  # still blocked, and nothing burned: no attempt counted, no step redone
    assert h.only_run("nap").status == "Blocked" and h.only_run("nap").state.run.attempt == 0

    h = h.redeploy(_nap("v3", effects))
    h.advance("10m")  # the next try replays it with v3
    run = h.only_run("nap")
    assert run.status == "Completed" and run.output == "v3" and run.error is None
    assert h.once(effects) == ["charge v1", "ship v3"]
    assert h.backend.dead_letters() == []


def test_a_removed_function_loses_no_run_and_finishes_when_it_is_back(
    make_harness: Any,
) -> None:
    effects: list[str] = []
    h = make_harness(_nap("v1", effects))
    h.send("order/created", {"order_id": "o1"})
    # v2 removes the function. Locally its worker keeps its messages and blocks the run; on
    # AWS its queue is kept (retained, as `stepkit deploy-check` asks) and the messages wait
    # there, its Lambda gone, so the run stays Running until the function is back.
    h = h.redeploy(App("shop"), keep_queues=True)
    local = type(h.backend).__name__ == "LocalBackend"
    h.advance("2h")
    run = h.only_run("nap")
    if local:
        assert run.status == "Blocked" and run.error is not None
        assert "FunctionNotFoundError: function 'nap' is not in the deployed app" in run.error
    else:
        assert run.status == "Running"
    h.advance("1d")  # nothing is dead-lettered, nothing redone
    assert h.only_run("nap").status == ("Blocked" if local else "Running")
    assert h.backend.dead_letters() == []
    assert h.once(effects) == ["charge v1"]

    h = h.redeploy(_nap("v3", effects))
    h.advance("10m")
    run = h.only_run("nap")
    assert run.status == "Completed" and run.output == "v3"
    assert h.once(effects) == ["charge v1", "ship v3"]


def test_a_retired_function_starts_nothing_new_and_finishes_its_runs(
    make_harness: Any,
) -> None:
    effects: list[str] = []
    h = make_harness(_nap("v1", effects))
    h.send("order/created", {"order_id": "o1"})
    h = h.redeploy(_nap("v1", effects, retired=True))
    h.send("order/created", {"order_id": "o2"})  # starts nothing: draining
    if type(h.backend).__name__ == "LocalBackend":  # on AWS: tests/aws/test_retired_invoke_aws
        with pytest.raises(NotAllowedError, match="is retired"):
            h.control.invoke("nap")  # nor by hand
    h.advance("2h")
    (run,) = h.runs("nap")
    assert run.status == "Completed" and run.state.run.events[0]["data"] == {"order_id": "o1"}
    assert h.once(effects) == ["charge v1", "ship v1"]
