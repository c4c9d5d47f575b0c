"""cancel_on, cancel and rerun, start/finish timeouts, on_failure and system events, cron."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runtime import App, CancelOn, Context, Timeouts, TriggerCron, TriggerEvent
from runtime.records import RerunOf


def _order_app(fulfilled: list[str]) -> App:
    app = App("shop")

    @app.function(
        id="fulfil",
        trigger=TriggerEvent("order/created"),
        cancel_on=CancelOn(event="order/cancelled", match="data.order_id"),
    )
    def fulfil(ctx: Context) -> str:
        ctx.step.sleep("cooling-off", "1h")
        ctx.step.run("ship", lambda: fulfilled.append(ctx.event.data["order_id"]))
        return "shipped"

    return app


def test_cancel_on_matching_event(make_harness: Any) -> None:
    fulfilled: list[str] = []
    h = make_harness(_order_app(fulfilled))
    h.send("order/created", {"order_id": "o1"})
    h.send("order/created", {"order_id": "o2"})
    h.send("order/cancelled", {"order_id": "o1"})
    h.advance("2h")
    by_order = {r.state.run.events[0]["data"]["order_id"]: r for r in h.runs("fulfil")}
    assert by_order["o1"].status == "Cancelled"
    assert by_order["o1"].error is not None and "order/cancelled" in by_order["o1"].error
    assert by_order["o2"].status == "Completed"
    assert h.once(fulfilled) == ["o2"]


def test_cancel_and_rerun_from_the_api(make_harness: Any) -> None:
    fulfilled: list[str] = []
    h = make_harness(_order_app(fulfilled))
    h.send("order/created", {"order_id": "o1"})
    run = h.only_run("fulfil")
    assert h.cancel(run.id) is True
    assert h.cancel(run.id) is False  # already finished
    h.advance("2h")
    assert h.run(run.id).status == "Cancelled"
    assert fulfilled == []
    new_id = h.rerun(run.id)
    h.advance("2h")
    assert new_id != run.id
    assert h.run(new_id).status == "Completed"
    assert h.once(fulfilled) == ["o1"]
    # The rerun says where it came from; the original is left as it was.
    assert h.run(new_id).state.run.rerun_of == RerunOf(run.id, None)
    assert h.run(run.id).state.run.rerun_of is None


def test_start_and_finish_timeouts(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="late", trigger=TriggerEvent("late/go"), timeouts=Timeouts(start="10s"))
    def late(ctx: Context) -> str:
        return "ran"

    @app.function(id="slow", trigger=TriggerEvent("slow/go"), timeouts=Timeouts(finish="1h"))
    def slow(ctx: Context) -> str:
        ctx.step.sleep("long", "1d")
        return "finished"

    h = make_harness(app)
    # An event stamped 60 s ago has waited longer than the start timeout allows.
    h.send({"name": "late/go", "ts": int((h.clock.now() - 60) * 1000)})
    h.send("late/go")
    statuses = sorted(r.status.value for r in h.runs("late"))
    assert statuses == ["Cancelled", "Completed"]
    h.send("slow/go")
    h.advance("2h")
    slow_run = h.only_run("slow")
    assert slow_run.status == "Cancelled"
    assert slow_run.error is not None and "not finished within 1:00:00" in slow_run.error


def test_on_failure_handler_and_system_events(make_harness: Any) -> None:
    app = App("shop")
    failures: list[dict[str, Any]] = []
    finished: list[str] = []

    def on_failure(ctx: Context) -> None:
        failures.append(ctx.event.data)

    @app.function(id="breaks", trigger=TriggerEvent("a/b"), retries=0, on_failure=on_failure)
    def breaks(ctx: Context) -> None:
        ctx.step.run("explode", lambda: 1 / 0)

    @app.function(id="audit", trigger=TriggerEvent("stepkit/function.finished"))
    def audit(ctx: Context) -> None:
        finished.append(f"{ctx.event.data['function_id']}:{ctx.event.data['status']}")

    h = make_harness(app)
    h.send("a/b", {"order": 7})
    h.settle()
    # Handler code outside steps may rerun in chaos mode (a duplicated delivery): at least once.
    assert len(failures) == 1 if not h.chaos else len(failures) >= 1
    assert failures[0]["function_id"] == "breaks"
    assert failures[0]["error"]["name"] == "StepError"
    assert failures[0]["event"]["data"] == {"order": 7}
    assert h.only_run("breaks-failure").status == "Completed"
    # audit hears about both runs but never about its own runs (no feedback loop).
    assert sorted(h.once(finished)) == ["breaks-failure:Completed", "breaks:Failed"]


def test_cron_fires_every_quarter_hour(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="quarter-hour", trigger=TriggerCron("*/15 * * * *"))
    def quarter(ctx: Context) -> str:
        return ctx.event.name

    h = make_harness(app)
    h.advance("6h")
    runs = h.runs("quarter-hour")
    assert len(runs) == 6 * 4
    assert {r.output for r in runs} == {"stepkit/scheduled.timer"}


def test_cron_time_zone_follows_daylight_saving(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="digest", trigger=TriggerCron("TZ=America/New_York 0 9 * * *"))
    def digest(ctx: Context) -> float:
        return ctx.now().timestamp()

    h = make_harness(app)  # starts Monday 2026-03-02 08:00 UTC = 03:00 in New York (EST)
    h.advance("5h50m")  # 13:50 UTC: not yet 09:00 EST (14:00 UTC)
    assert h.runs("digest") == []
    h.advance("20m")
    runs = h.runs("digest")
    assert len(runs) == 1
    created = datetime.fromtimestamp(runs[0].state.run.created_at, UTC)
    assert (
        datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
        <= created
        < datetime(2026, 3, 2, 14, 11, tzinfo=UTC)
    )
    # After the US switch to daylight time (8 March), 09:00 New York is 13:00 UTC.
    h.advance("6d22h")  # Monday 9 March, 12:10 UTC
    assert len(h.runs("digest")) == 7
    h.advance("1h")  # 13:10 UTC
    assert len(h.runs("digest")) == 8


def test_rerun_from_a_step_reuses_the_results_recorded_before_it(make_harness: Any) -> None:
    app = App("docs")
    calls: list[str] = []

    def work(name: str) -> str:
        calls.append(name)
        return f"{name}-{calls.count(name)}"

    @app.function(id="pipeline", trigger=TriggerEvent("doc/new"))
    def pipeline(ctx: Context) -> list[str]:
        return [ctx.step.run(n, work, n) for n in ("extract", "transform", "load")]

    h = make_harness(app)
    h.send("doc/new")
    first = h.only_run("pipeline")
    if not h.chaos:
        assert first.output == ["extract-1", "transform-1", "load-1"]
    else:  # at-least-once: a step whose commit failed ran again, and its last call counts
        assert [r.rsplit("-", 1)[0] for r in first.output] == ["extract", "transform", "load"]
    fork = h.rerun(first.id, "transform")
    h.settle()
    forked = h.run(fork)
    assert forked.status == "Completed"
    # extract's recorded result is reused; transform and what follows run again.
    if not h.chaos:
        assert forked.output == ["extract-1", "transform-2", "load-2"]
    else:  # at-least-once: a step whose result was lost ran again, and its last call counts
        assert forked.output[0] == first.output[0]  # reused, not run again
        assert [r.rsplit("-", 1)[0] for r in forked.output[1:]] == ["transform", "load"]
        assert all(not r.endswith("-1") for r in forked.output[1:])  # new calls, not reused
    assert forked.state.run.rerun_of == RerunOf(first.id, "transform")
    assert h.once(calls) == ["extract", "transform", "load"] if h.chaos else calls == [
        "extract", "transform", "load", "transform", "load"]
    with pytest.raises(LookupError, match="has no step 'nope'"):
        h.rerun(first.id, "nope")
