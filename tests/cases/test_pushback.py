"""Pushback is not death: AWS refusing calls for half an hour delays runs, never ends them.

Pushback mode (``runtime.testing.pushback``) refuses the calls of chosen services for a
window of harness time, below the project's code (on AWS as botocore's own throttling
errors). Each case runs on both backends, in normal and chaos mode.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.errors import PushbackError
from runtime.orchestration.gates import FlowGates


def _shop(effects: list[tuple[str, str]]) -> App:
    app = App("shop")

    @app.function(id="order", trigger=TriggerEvent("order/placed"), retries=0)
    def order(ctx: Context) -> str:
        oid = ctx.event.data["id"]
        ctx.step.run("reserve", lambda: effects.append(("reserve", oid)))
        ctx.step.sleep("cool-off", "2h")  # past SQS's 900 s: a Scheduler timer on AWS
        ctx.step.send_event("ready", {"name": "order/ready", "data": {"id": oid}})
        paid = ctx.step.wait_for_event("paid", event="order/paid", match="data.id",
                                       timeout="6h")
        ctx.step.run("ship", lambda: effects.append(("ship", oid)))
        return "shipped" if paid is not None else "unpaid"

    @app.function(id="billing", trigger=TriggerEvent("order/ready"), retries=0)
    def billing(ctx: Context) -> None:
        oid = ctx.event.data["id"]
        ctx.step.run("charge", lambda: effects.append(("charge", oid)))
        ctx.step.send_event("paid", {"name": "order/paid", "data": {"id": oid}})

    return app


def test_half_an_hour_of_throttling_delays_runs_and_fails_none(make_harness: Any) -> None:
    effects: list[tuple[str, str]] = []
    h = make_harness(_shop(effects))
    orders = [f"o{i}" for i in range(4)]
    for oid in orders:
        h.send("order/placed", {"id": oid}, settle=False)
    # Refused after the SDK's own retries, each for 30 minutes: CreateSchedule at once (the
    # sleeps' timers, from commits that landed), DynamoDB writes around the sleeps' end at
    # 2h (it cannot be recorded), then PutEvents (the send_event steps commit, and their
    # events cannot go out).
    h.pushback("timers", span="30m")
    h.pushback("store-writes", span="30m", after="115m")
    pushback = h.pushback("bus", span="30m", after="140m")
    h.advance("160m")
    assert [r.status for r in h.runs("order")] == ["Running"] * 4  # delayed, not failed
    h.advance("6h")
    refused = pushback.refusals
    assert refused["store-writes"] > 0 and refused["bus"] > 0 and refused["timers"] > 0
    runs = h.runs("order")
    assert [(r.status, r.output) for r in runs] == [("Completed", "shipped")] * 4
    assert [r.status for r in h.runs("billing")] == ["Completed"] * 4
    for run in runs:  # each step recorded once, none charged an attempt
        assert [s.attempt for s in run.steps.values()] == [0] * len(run.steps)
    expected = {(what, oid) for oid in orders for what in ("reserve", "charge", "ship")}
    assert set(h.once(effects)) == expected
    if not h.chaos:
        assert sorted(effects) == sorted(expected)  # each side effect ran once
    assert h.backend.dead_letters() == []


def test_a_throttled_lambda_never_ran_the_step_so_it_is_not_charged(make_harness: Any) -> None:
    calls: list[str] = []
    app = App("shop")

    @app.function(id="charge", trigger=TriggerEvent("cart/checkout"), retries=0)
    def charge(ctx: Context) -> str:
        ctx.step.run("card", lambda: calls.append("card"))
        return "charged"

    h = make_harness(app)
    # Lambda refuses every invocation for 20 minutes: each delivery comes back after its
    # visibility timeout with its receive count raised, as if its worker had died in it.
    h.pushback("lambda", span="20m")
    h.send("cart/checkout", settle=False)
    h.advance("20m")
    assert calls == []
    h.advance("2h")
    run = h.only_run("charge")
    assert run.status == "Completed"  # retries=0, and yet no delivery counted as a death
    assert run.step("card").attempt == 0
    assert h.once(calls) == ["card"]


def test_events_sent_while_writes_are_refused_are_routed_when_they_come_back(
    make_harness: Any,
) -> None:
    seen: list[str] = []
    app = App("relay")

    @app.function(id="ping", trigger=TriggerEvent("relay/ping"))
    def ping(ctx: Context) -> None:
        ctx.step.send_event("pong", {"name": "relay/pong", "data": ctx.event.data})

    @app.function(id="pong", trigger=TriggerEvent("relay/pong"))
    def pong(ctx: Context) -> None:
        ctx.step.run("seen", lambda: seen.append(ctx.event.data["n"]))

    h = make_harness(app)
    for n in range(3):
        h.send("relay/ping", {"n": n})  # (sent and routed before the pushback)
    h.pushback("store-writes", span="30m")
    try:  # AWS: the bus accepts it, and the router's writes are refused
        h.send("relay/ping", {"n": 3}, settle=False)
        accepted = True
    except PushbackError:  # the local backend routes as it accepts: it refuses the send
        accepted = False
    h.advance("20m")
    assert sorted(h.once(seen)) == [0, 1, 2]
    h.advance("20m")
    if not accepted:
        h.send("relay/ping", {"n": 3})  # its sender sends it again
    h.advance("2h")
    assert sorted(h.once(seen)) == [0, 1, 2, 3]
    assert [r.status for r in h.runs()] == ["Completed"] * 8


def test_a_start_whose_gates_keep_moving_under_a_burst_is_read_again_never_failed(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = App("burst")

    @app.function(id="sync", trigger=TriggerEvent("crm/changed"),
                  idempotency="event.data.id", throttle={"limit": 100, "period": "1m"})
    def sync(ctx: Context) -> str:
        return str(ctx.event.data["id"])

    # Every gate write of the first 200 tries finds its gate moved by another start (a burst
    # on one key): six deliveries of 32 tries, each pushed back (2 s, 4 s...; a failure would
    # wait 60 s, 120 s...).
    moved = {"left": 200}
    real = FlowGates._plan

    def racing(self: FlowGates, fn: Any, run: Any) -> Any:
        planned, writes = real(self, fn, run)
        if moved["left"] > 0:
            moved["left"] -= 1
            writes = [replace(w, expect_version=w.expect_version + 1000) for w in writes]
        return planned, writes

    monkeypatch.setattr(FlowGates, "_plan", racing)
    h = make_harness(app)
    h.send("crm/changed", {"id": "c1"})
    h.advance("10m")
    assert moved["left"] == 0
    run = h.only_run("sync")
    assert (run.status, run.output) == ("Completed", "c1")
