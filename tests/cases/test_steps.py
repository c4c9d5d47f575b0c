"""Steps run once, replay returns memoized results, ids disambiguate, limits hold."""

from __future__ import annotations

import logging
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from runtime import (
    App,
    ConfigurationError,
    Context,
    InvalidEventError,
    Timeouts,
    TriggerEvent,
)


def test_memoized_steps_are_not_re_executed_on_replay(make_harness: Any) -> None:
    app = App("shop")
    calls: list[str] = []

    @app.function(id="three-steps", trigger=TriggerEvent("order/created"))
    def three_steps(ctx: Context) -> dict[str, Any]:
        a = ctx.step.run("a", lambda: calls.append("a") or 1)
        b = ctx.step.run("b", lambda x: calls.append("b") or x + 1, a)
        c = ctx.step.run("c", lambda x, y=0: calls.append("c") or x + y, b, y=10)
        return {"a": a, "b": b, "c": c}

    h = make_harness(app)
    h.send("order/created", {"order_id": "o1"})
    run = h.only_run("three-steps")
    assert run.status == "Completed"
    assert run.output == {"a": 1, "b": 2, "c": 12}
    # Exactly once per step in order; in chaos mode a step whose commit failed runs again
    # (at-least-once), so there the repeats are collapsed and the order still checked.
    assert calls == ["a", "b", "c"] if not h.chaos else h.once(calls) == ["a", "b", "c"]
    assert [run.step(k).status for k in "abc"] == ["Completed"] * 3


def test_reused_step_ids_get_occurrence_counters(make_harness: Any) -> None:
    app = App("agent")

    @app.function(id="loop", trigger=TriggerEvent("agent/start"))
    def loop(ctx: Context) -> list[int]:
        out = [ctx.step.run("fetch-data", lambda i=i: i * 10) for i in range(3)]
        for i in range(2):
            out.append(ctx.step.run(f"think-{i}", lambda i=i: i))
        return out

    h = make_harness(app)
    h.send("agent/start")
    run = h.only_run("loop")
    assert run.output == [0, 10, 20, 0, 1]
    assert sorted(run.steps) == ["fetch-data", "fetch-data:1", "fetch-data:2", "think-0", "think-1"]
    assert run.step("fetch-data:2").id == "fetch-data"


def test_trigger_if_expression_filters_events(make_harness: Any) -> None:
    app = App("shop")

    @app.function(
        id="big-orders",
        trigger=[
            TriggerEvent("order/created", if_="event.data.amount > 100"),
            TriggerEvent("order/imported"),
        ],
    )
    def big(ctx: Context) -> str:
        return ctx.event.name

    h = make_harness(app)
    h.send("order/created", {"amount": 50})
    assert h.runs("big-orders") == []
    h.send("order/created", {"amount": 150.5})
    h.send("order/imported", {"amount": 1})
    assert sorted(r.output for r in h.runs("big-orders")) == ["order/created", "order/imported"]


def test_event_with_same_id_starts_nothing_the_second_time(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="f", trigger=TriggerEvent("user/signup"))
    def f(ctx: Context) -> str:
        return ctx.event.id

    h = make_harness(app)
    assert h.send("user/signup", {"n": 1}, id="evt-1") == ["evt-1"]
    h.send("user/signup", {"n": 2}, id="evt-1")
    h.advance("23h")
    h.send("user/signup", {"n": 3}, id="evt-1")
    runs = h.runs("f")
    assert len(runs) == 1
    assert runs[0].state.run.events[0]["data"] == {"n": 1}


def test_event_validation_names_field_and_position(make_harness: Any) -> None:
    app = App("shop")
    h = make_harness(app)
    with pytest.raises(InvalidEventError, match=r"event\.name"):
        h.send({"name": "has spaces", "data": {}})
    with pytest.raises(InvalidEventError, match=r"event\[1\]\.data"):
        h.send([{"name": "ok/one"}, {"name": "ok/two", "data": [1, 2]}])
    with pytest.raises(InvalidEventError, match="reserved"):
        h.send("stepkit/function.failed", {})
    with pytest.raises(InvalidEventError, match="over the 4194304-byte event limit"):
        h.send("big/event", {"blob": "x" * (4 * 1024 * 1024)})


def test_registration_errors_are_clear() -> None:
    app = App("shop")

    @app.function(id="dup", trigger=TriggerEvent("a/b"))
    def one(ctx: Context) -> None:
        return None

    with pytest.raises(ConfigurationError, match="'dup' is already registered"):
        app.function(id="dup", trigger=TriggerEvent("a/b"))(one.handler)
    with pytest.raises(ConfigurationError, match="11 triggers; the maximum is 10"):
        app.function(id="many", trigger=[TriggerEvent(f"e/{i}") for i in range(11)])(one.handler)
    with pytest.raises(ConfigurationError, match="retries must be an integer 0-20"):
        app.function(id="r", trigger=TriggerEvent("a/b"), retries=21)(one.handler)
    with pytest.raises(ConfigurationError, match="if"):
        app.function(id="bad-if", trigger=TriggerEvent("a/b", if_="event.data.x >"))(one.handler)


def test_step_output_must_be_json(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="bad-output", trigger=TriggerEvent("a/b"))
    def bad(ctx: Context) -> Any:
        return ctx.step.run("make-set", lambda: {"tags": {1, 2}})

    h = make_harness(app)
    h.send("a/b")
    run = h.only_run("bad-output")
    assert run.status == "Failed"
    step = run.step("make-set")
    assert step.status == "Failed" and step.attempt == 0
    assert step.error is not None
    assert "step 'make-set'" in step.error.message
    assert "output.tags: is a set, which is not a JSON value" in step.error.message


MiB = 1024 * 1024


def test_a_4_mib_step_output_round_trips_and_one_byte_more_fails_naming_the_step(
    make_harness: Any,
) -> None:
    app = App("docs")
    size = {"n": 4 * MiB - 2}  # a JSON string of exactly 4 MiB, quotes included

    @app.function(id="render", trigger=TriggerEvent("doc/render"), retries=0)
    def render(ctx: Context) -> Any:
        page = ctx.step.run("render-page", lambda: "x" * size["n"])
        return {"length": len(page), "same": page == "x" * size["n"]}

    h = make_harness(app)
    h.send("doc/render")
    run = h.only_run("render")
    assert run.status == "Completed"
    assert run.output == {"length": 4 * MiB - 2, "same": True}
    assert run.step("render-page").output == "x" * (4 * MiB - 2)

    size["n"] += 1  # 4 MiB + 1 byte
    h.send("doc/render")
    failed = h.runs("render", status="Failed")
    assert len(failed) == 1
    err = failed[0].step("render-page").error
    assert err is not None and err.name == "StepLimitError"
    assert err.message.startswith(f"step 'render-page' output is {4 * MiB + 1} bytes of JSON, "
                                  f"over the {4 * MiB}-byte limit of one output")


def test_a_runs_outputs_are_capped_in_total(make_harness: Any) -> None:
    from runtime.engine import Limits

    app = App("docs")

    @app.function(id="pages", trigger=TriggerEvent("doc/pages"), retries=0)
    def pages(ctx: Context) -> Any:
        return [len(ctx.step.run(f"page-{i}", lambda: "x" * 3000)) for i in range(4)]

    # Each page is 3002 bytes of JSON: three fit in 10 000, the fourth does not.
    h = make_harness(app, limits=Limits(max_output_bytes=4000, max_run_bytes=10_000))
    h.send("doc/pages")
    run = h.only_run("pages")
    assert run.status == "Failed"
    assert [run.step(f"page-{i}").status for i in range(4)] == ["Completed"] * 3 + ["Failed"]
    err = run.step("page-3").error
    assert err is not None and "the run's outputs would then weigh 12008 bytes, over the " \
        "10000-byte limit of one run" in err.message


def test_max_steps_per_run(make_harness: Any) -> None:
    from runtime.engine import Limits

    app = App("shop")

    @app.function(id="many-steps", trigger=TriggerEvent("a/b"))
    def many(ctx: Context) -> int:
        for i in range(10):
            ctx.step.run(f"s{i}", lambda: None)
        return 10

    h = make_harness(app, limits=Limits(max_steps=5))
    h.send("a/b")
    run = h.only_run("many-steps")
    assert run.status == "Failed"
    assert run.error is not None
    assert "maximum of 5 steps at step 's5'" in run.error
    assert len(run.steps) == 5


def test_nondeterminism_blocks_the_run_until_a_deploy_replays_it(make_harness: Any) -> None:
    app = App("shop")
    version = {"v": 1}
    effects: list[str] = []
    failures: list[str] = []

    @app.function(id="changing", trigger=TriggerEvent("a/b"), retries=0)
    def changing(ctx: Context) -> str:
        if version["v"] == 2:
            ctx.step.sleep("first", "1m")  # same id, different kind: a deploy changed the code
            return "v2"
        ctx.step.run("first", lambda: effects.append("first") or 1)
        ctx.step.sleep("nap", "1h")
        ctx.step.run("after", lambda: effects.append("after") or 2)
        return f"v{version['v']}"

    @app.function(id="alarm", trigger=TriggerEvent("stepkit/function.failed"))
    def alarm(ctx: Context) -> None:
        failures.append(ctx.event.data["run_id"])

    h = make_harness(app)
    h.send("a/b")
    version["v"] = 2  # a deploy that cannot replay the run
    h.advance("2h")
    run = h.only_run("changing")
    assert run.status == "Blocked"  # held, in flight: nothing burned, no on_failure
    assert run.error is not None and run.error.startswith("NondeterminismError")
    assert "step 'first'" in run.error and "recorded a run step" in run.error
    assert [r.id for r in h.runs(status="Blocked")] == [run.id]
    assert h.runs("alarm") == [] and failures == []
    version["v"] = 3  # a fixing deploy: the run goes on within BLOCKED_RETRY, nothing redone
    h.advance("15m")
    run = h.only_run("changing")
    assert run.status == "Completed" and run.output == "v3" and run.error is None
    assert h.once(effects) == ["first", "after"]


def test_a_blocked_run_can_be_cancelled(make_harness: Any) -> None:
    app = App("shop")
    version = {"v": 1}

    @app.function(id="changing", trigger=TriggerEvent("a/b"))
    def changing(ctx: Context) -> None:
        if version["v"] == 1:
            ctx.step.sleep("nap", "1h")
        else:
            ctx.step.run("nap", lambda: None)

    h = make_harness(app)
    h.send("a/b")
    version["v"] = 2
    h.advance("2h")
    run = h.only_run("changing")
    assert run.status == "Blocked"
    assert h.cancel(run.id)
    assert h.only_run("changing").status == "Cancelled"
    h.advance("1h")  # its retries find it finished: nothing happens
    assert h.only_run("changing").status == "Cancelled"


def test_context_helpers_are_deterministic_and_logs_not_repeated(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App("shop")
    seen: dict[str, list[Any]] = {"now": [], "uuid": []}

    @app.function(id="helpers", trigger=TriggerEvent("a/b"))
    def helpers(ctx: Context) -> dict[str, Any]:
        ctx.logger.info("starting run")
        seen["now"].append(ctx.now().isoformat())
        seen["uuid"].append(str(ctx.uuid()))
        ctx.step.run("one", lambda: 1)
        ctx.logger.info("after one")
        ctx.step.sleep("nap", "1h")
        ctx.logger.info("after nap")
        return {"attempt": ctx.attempt, "run_id": ctx.run_id, "events": len(ctx.events)}

    h = make_harness(app)
    with caplog.at_level(logging.INFO):
        h.send("a/b")
        h.advance("2h")
    run = h.only_run("helpers")
    assert run.status == "Completed"
    assert run.output == {"attempt": 0, "run_id": run.id, "events": 1}
    assert len(seen["now"]) >= 3  # replayed several times ...
    assert len(set(seen["now"])) == 1  # ... always the same value
    assert len(set(seen["uuid"])) == 1
    messages = [r.getMessage() for r in caplog.records]
    for line in ("starting run", "after one", "after nap"):
        # Replays never repeat a line; in chaos mode a re-executed invocation (its commit
        # failed, or a duplicate ran it) logs its live lines again, so there: at least once.
        seen = messages.count(line)
        assert seen == 1 if not h.chaos else seen >= 1, (line, messages)


def test_circular_step_output_fails_the_step_clearly(make_harness: Any) -> None:
    app = App("shop")

    def loop() -> Any:
        node: dict[str, Any] = {"name": "a"}
        node["self"] = node
        return node

    @app.function(id="circular", trigger=TriggerEvent("a/b"))
    def circular(ctx: Context) -> Any:
        return ctx.step.run("make-loop", loop)

    h = make_harness(app)
    h.send("a/b")
    run = h.only_run("circular")
    assert run.status == "Failed"
    err = run.step("make-loop").error
    assert err is not None and err.retriable is False
    assert "step 'make-loop'" in err.message
    assert "output.self: is a circular reference" in err.message


def test_async_handlers_are_refused_at_registration_and_async_steps_fail_saying_why(
    make_harness: Any,
) -> None:
    app = App("shop")

    async def handler(ctx: Context) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"function 'async-fn': the handler is an "
                                                 r"async function; .* asyncio\.run"):
        app.function(id="async-fn", trigger=TriggerEvent("a/b"))(handler)

    async def fetch() -> int:
        return 1

    @app.function(id="async-step", trigger=TriggerEvent("a/b"))
    def uses_async_step(ctx: Context) -> Any:
        return ctx.step.run("fetch", fetch)

    @app.function(id="async-inside", trigger=TriggerEvent("a/b"))
    def returns_coroutine(ctx: Context) -> Any:
        return fetch()

    h = make_harness(app)
    h.send("a/b")
    step = h.only_run("async-step").step("fetch")
    assert step.status == "Failed" and step.error is not None
    assert "step 'fetch' returned a coroutine" in step.error.message
    assert "asyncio.run" in step.error.message
    run = h.only_run("async-inside")
    assert run.status == "Failed" and run.error is not None
    assert "the handler returned a coroutine" in run.error


def test_bare_numbers_for_durations_are_refused_showing_both_readings(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="nap", trigger=TriggerEvent("a/b"))
    def nap(ctx: Context) -> None:
        ctx.step.sleep("nap", 5000)  # type: ignore[arg-type]  # what an Inngest user writes

    with pytest.raises(ConfigurationError, match=r"timeouts.finish: 60 is a bare number"):
        app.function(id="slow", trigger=TriggerEvent("a/b"),
                     timeouts=Timeouts(finish=60))(nap)  # type: ignore[arg-type]
    h = make_harness(app)
    h.send("a/b")
    run = h.only_run("nap")
    assert run.status == "Failed" and run.error is not None
    assert ("step.sleep 'nap': 5000 is a bare number, which reads as seconds in Python and as "
            "milliseconds in Inngest; write the unit: '5000s' (1h23m20s) or '5000ms' (5s)"
            ) in run.error


class Signup(BaseModel):
    user_id: str
    plan: Literal["free", "pro"] = "free"


def test_typed_events_are_validated_at_send_and_given_to_the_handler_typed(
    make_harness: Any,
) -> None:
    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup", data=Signup))
    def welcome(ctx: Context) -> str:
        signup: Signup = ctx.data
        return ctx.step.run("greet", lambda: f"{signup.user_id} on {signup.plan}")

    h = make_harness(app)
    h.send("user/signup", {"user_id": "ada", "plan": "pro"})
    assert h.only_run("welcome").output == "ada on pro"
    with pytest.raises(InvalidEventError, match=r"event\.data: 'user/signup' does not match "
                                                r"Signup \(declared by function 'welcome'\)"
                                                r"[\s\S]*plan"):
        h.send("user/signup", {"user_id": "bob", "plan": "gold"})
    assert len(h.runs("welcome")) == 1  # nothing sent
    with pytest.raises(ConfigurationError, match=r"data= must be a pydantic model class"):
        app.function(id="bad", trigger=TriggerEvent("a/b", data=dict))(welcome)


def test_typed_data_that_bypassed_send_fails_the_run_saying_why() -> None:
    from runtime.engine import execute
    from runtime.engine.decisions import RunFailed
    from runtime.records import RunRecord, RunState

    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup", data=Signup))
    def welcome(ctx: Context) -> str:
        return str(ctx.data.user_id)

    event = {"id": "e1", "name": "user/signup", "data": {"plan": "pro"}, "user": {}, "ts": 1}
    state = RunState(RunRecord(run_id="r1", function_id="welcome", events=(event,)), {})
    decision = execute(app.get("welcome"), state, now=1.0)  # e.g. a plain PutEvents on AWS
    assert isinstance(decision, RunFailed) and not decision.error.retriable
    assert "event 'user/signup' (e1): its data does not match Signup" in decision.error.message
