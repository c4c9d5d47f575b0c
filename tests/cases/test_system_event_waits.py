"""Waiting on and cancelling by system events: they are kept for the lookback when named.

Its own module: the timeline keeps a system event name when a handler's module names it in a
``wait_for_event`` (runtime/orchestration/timeline.py), and this one does.
"""

from __future__ import annotations

from typing import Any

from runtime import App, CancelOn, Context, TriggerEvent


def test_a_wait_on_function_finished_sees_a_run_that_finished_before_the_wait(
    make_harness: Any,
) -> None:
    # The worker may finish (and its function.finished be routed) before the boss has
    # committed its wait: the wait's lookback finds it in the timeline, which keeps the name
    # because this module waits on it.
    app = App("jobs")

    @app.function(id="boss", trigger=TriggerEvent("job/start"))
    def boss(ctx: Context) -> Any:
        ctx.step.send_event("go", {"name": "job/go", "data": {"n": ctx.event.data["n"]}})
        done = ctx.step.wait_for_event("done", event="stepkit/function.finished",
                                       timeout="1h", if_="async.data.function_id == 'worker'")
        return done.data["status"] if done else None

    @app.function(id="worker", trigger=TriggerEvent("job/go"))
    def worker(ctx: Context) -> int:
        return int(ctx.event.data["n"]) + 1

    h = make_harness(app)
    h.send("job/start", {"n": 1})
    assert h.only_run("boss").output == "Completed"
    kept = h.backend.store.events_since("stepkit/function.finished", 0, now=h.clock.now())
    assert {e["data"]["function_id"] for e in kept} == {"worker", "boss"}


def test_cancel_on_a_system_event_cancels_however_the_deliveries_interleave(
    make_harness: Any,
) -> None:
    app = App("jobs")

    @app.function(id="worker", trigger=TriggerEvent("job/go"))
    def worker(ctx: Context) -> str:
        return "done"

    @app.function(id="watch", trigger=TriggerEvent("job/watch"),
                  cancel_on=CancelOn(event="stepkit/function.finished",
                                     if_="async.data.function_id == 'worker'"))
    def watch(ctx: Context) -> str:
        ctx.step.sleep("watching", "1h")
        return "watched"

    h = make_harness(app)
    h.send("job/watch", {}, settle=False)
    h.send("job/go", {}, settle=False)  # may finish before watch's run starts: the lookback
    h.advance("2h")
    assert h.only_run("watch").status == "Cancelled"
