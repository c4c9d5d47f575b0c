"""The platform's promise, scenario by scenario (issue 7): no run lost or left hanging, every
result under its own key, every wait sees its event, every cancel lands.

Each case runs on every backend, in normal and in chaos mode (see ``tests/conftest.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime import (
    App,
    CancelOn,
    Context,
    NonRetriableError,
    RetryAfterError,
    Timeouts,
    TriggerEvent,
)
from runtime.backends.aws.store import DynamoStore
from runtime.backends.local.store import SqliteStore
from runtime.errors import ConfigurationError, InvalidEventError
from runtime.events import FUNCTION_FAILED
from runtime.orchestration.intake import Intake
from runtime.orchestration.ports import Ports
from runtime.orchestration.resolving import Resolver
from runtime.records import EventOut, StepStatus
from runtime.testing.chaos import Chaos, SimulatedCrash
from tests.cases.test_lifecycle import _order_app


def test_send_then_wait_sees_a_reply_sent_before_the_wait_exists(make_harness: Any) -> None:
    # The responder answers `ask` at once: its reply may be routed before the asking run has
    # committed its wait. The wait's lookback finds it in the event timeline.
    app = App("chat")

    @app.function(id="asker", trigger=TriggerEvent("chat/start"))
    def asker(ctx: Context) -> Any:
        ctx.step.send_event("ask", {"name": "chat/ask", "data": {"q": ctx.event.data["q"]}})
        reply = ctx.step.wait_for_event(
            "reply", event="chat/reply", timeout="1h", match="data.q"
        )
        return reply.data["a"] if reply else None

    @app.function(id="responder", trigger=TriggerEvent("chat/ask"))
    def responder(ctx: Context) -> None:
        q = ctx.event.data["q"]
        ctx.step.send_event("answer", {"name": "chat/reply", "data": {"q": q, "a": q * 2}})

    h = make_harness(app)
    h.send("chat/start", {"q": 21})
    run = h.only_run("asker")
    assert run.status == "Completed" and run.output == 42


def test_a_cancel_that_arrives_before_the_run_starts_still_cancels_it(make_harness: Any) -> None:
    shipped: list[str] = []
    app = _order_app(shipped)  # fulfil: sleep 1h, then ship; cancel_on order/cancelled

    h = make_harness(app)
    h.send("order/created", {"order_id": "o1"}, settle=False)
    h.send("order/cancelled", {"order_id": "o1"}, settle=False)  # before any start is handled
    h.send("order/cancelled", {"order_id": "o-other"}, settle=False)
    h.send("order/created", {"order_id": "o2"}, settle=False)
    h.advance("2h")
    by_order = {r.state.run.events[0]["data"]["order_id"]: r for r in h.runs("fulfil")}
    assert by_order["o1"].status == "Cancelled"
    assert by_order["o2"].status == "Completed"
    assert h.once(shipped) == ["o2"]


def test_a_wide_fan_out_finishes_and_every_result_lands_under_its_own_key(
    make_harness: Any,
) -> None:
    app = App("fan")
    width = 70  # wider than one commit's slice of 50

    @app.function(id="fan", trigger=TriggerEvent("fan/go"))
    def fan(ctx: Context) -> int:
        results = ctx.step.parallel(
            [lambda i=i: ctx.step.run(f"part-{i}", lambda i=i: i * i) for i in range(width)]
        )
        return sum(results)

    h = make_harness(app)
    h.send("fan/go")
    run = h.only_run("fan")
    assert run.status == "Completed"
    assert run.output == sum(i * i for i in range(width))
    assert all(run.step(f"part-{i}").output == i * i for i in range(width))


def test_parallel_waits_wider_than_a_slice_all_start_at_once(make_harness: Any) -> None:
    app = App("fan")
    width = 55  # the last five in a second slice

    @app.function(id="waits", trigger=TriggerEvent("fan/go"))
    def waits(ctx: Context) -> list[Any]:
        got = ctx.step.parallel([
            lambda i=i: ctx.step.wait_for_event(
                f"w{i}", event="fan/tick", timeout="1h", if_=f"async.data.i == {i}"
            )
            for i in range(width)
        ])
        return [e.data["i"] if e else None for e in got]

    h = make_harness(app)
    h.send("fan/go")
    run = h.only_run("waits")
    assert sum(r.status is StepStatus.WAITING for r in run.steps.values()) == width
    h.send("fan/tick", {"i": width - 1})  # for a wait in the second slice
    h.advance("1h1m")  # every wait times out within its hour, none two hours later
    run = h.only_run("waits")
    assert run.status == "Completed"
    assert run.output == [None] * (width - 1) + [width - 1]


def test_repeated_step_ids_in_branches_keep_their_own_results(make_harness: Any) -> None:
    app = App("fan")

    @app.function(id="pairs", trigger=TriggerEvent("fan/go"))
    def pairs(ctx: Context) -> list[int]:
        def branch(i: int) -> int:
            fetched = ctx.step.run("fetch", lambda: i)
            return int(ctx.step.run("save", lambda: fetched * 10))

        return list(ctx.step.parallel([lambda i=i: branch(i) for i in range(6)]))

    h = make_harness(app)
    h.send("fan/go")
    run = h.only_run("pairs")
    assert run.status == "Completed" and run.output == [0, 10, 20, 30, 40, 50]


def test_retry_after_takes_a_duration_string(make_harness: Any) -> None:
    app = App("api")
    tries: list[float] = []

    @app.function(id="polite", trigger=TriggerEvent("api/go"), retries=2)
    def polite(ctx: Context) -> str:
        def call() -> str:
            tries.append(h.clock.now())
            if len(h.once(tries)) == 1:
                raise RetryAfterError("rate limited", "10m")
            return "ok"

        return str(ctx.step.run("call", call))

    h = make_harness(app)
    h.send("api/go")
    assert h.only_run("polite").step("call").status == "Retrying"
    h.advance("9m")
    assert h.only_run("polite").status == "Running"
    h.advance("2m")
    run = h.only_run("polite")
    assert run.status == "Completed"
    assert h.once(tries)[1] - tries[0] >= 600


def test_an_invalid_retry_after_fails_the_step_naming_it(make_harness: Any) -> None:
    app = App("api")

    @app.function(id="bad", trigger=TriggerEvent("api/go"), retries=3)
    def bad(ctx: Context) -> None:
        def call() -> None:
            raise RetryAfterError("rate limited", "soon")

        ctx.step.run("call", call)

    h = make_harness(app)
    h.send("api/go")
    run = h.only_run("bad")
    assert run.status == "Failed"
    err = run.step("call").error
    assert err is not None and "step 'call'" in err.message and "'soon'" in err.message


def test_a_re_sent_event_id_runs_no_step_again(make_harness: Any) -> None:
    app = App("shop")
    calls: list[str] = []

    @app.function(id="once", trigger=TriggerEvent("shop/go"))
    def once(ctx: Context) -> int:
        for i in range(5):
            ctx.step.run(f"s{i}", lambda i=i: calls.append(f"s{i}"))
        return 5

    h = make_harness(app)
    h.send({"id": "evt-1", "name": "shop/go", "data": {}}, settle=False)
    h.send({"id": "evt-1", "name": "shop/go", "data": {}}, settle=False)
    h.settle()
    h.send({"id": "evt-1", "name": "shop/go", "data": {}})
    run = h.only_run("once")
    assert run.status == "Completed"
    assert h.once(calls) == [f"s{i}" for i in range(5)]
    if not h.chaos:
        assert len(calls) == 5


def test_duplicates_are_absorbed_not_multiplied(make_harness: Any) -> None:
    def app_(name: str) -> App:
        app = App(name)  # one table per app on AWS

        @app.function(id="eight", trigger=TriggerEvent("shop/go"))
        def eight(ctx: Context) -> int:
            for i in range(8):
                ctx.step.run(f"s{i}", lambda i=i: i)
            return 8

        return app

    plain = make_harness(app_("plain"))
    plain.send("shop/go", settle=False)
    normal = plain.settle()
    doubled = make_harness(app_("doubled"), duplicate_deliveries=True)
    doubled.send("shop/go", settle=False)
    handled = doubled.settle()
    assert doubled.only_run("eight").status == "Completed"
    # Every message is sent twice; a copy that finds its work done sends nothing. (Chaos
    # mode adds redeliveries of its own to both counts: the bound is looser, still linear.)
    assert handled <= (2 * normal + 2 if not doubled.chaos else 4 * normal + 10)


def test_a_cancel_lands_on_a_run_waiting_in_many_places(make_harness: Any) -> None:
    app = App("fan")

    @app.function(
        id="many",
        trigger=TriggerEvent("fan/go"),
        cancel_on=CancelOn(event="fan/stop", match="data.k"),
    )
    def many(ctx: Context) -> None:
        ctx.step.parallel([
            lambda i=i: ctx.step.wait_for_event(f"w{i}", event=f"fan/e{i % 3}", timeout="1d")
            for i in range(100)  # more waiters than one transaction can remove
        ])

    h = make_harness(app)
    h.send("fan/go", {"k": 1})
    h.send("fan/stop", {"k": 1})
    run = h.only_run("many")
    assert run.status == "Cancelled"
    h.send("fan/e0", {})  # the waiters left behind match nothing any more
    assert h.only_run("many").status == "Cancelled"


def test_a_step_that_kills_its_worker_fails_the_run_with_on_failure(make_harness: Any) -> None:
    # Each delivery dies inside the step (a Lambda timeout, an out-of-memory kill): the
    # queue's receive count is what the platform still knows, and each death is recorded as
    # a failed attempt of the step, until its retries are spent.
    app = App("shop")
    failures: list[str] = []

    def notify(ctx: Context) -> None:
        failures.append(ctx.event.data["error"]["name"])

    @app.function(id="doomed", trigger=TriggerEvent("shop/go"), on_failure=notify)
    def doomed(ctx: Context) -> None:
        ctx.step.run("hog", _die)

    h = make_harness(app)
    if not h.chaos:  # the chaos driver is what plays a killed worker (its lease expires)
        h.enable_chaos(Chaos(workers=1, duplicate=0, crash=0, errors=0, max_receives=5))
    h.send("shop/go")
    h.advance("1h")  # each death is a failed attempt, retried after the step's backoff
    run = h.only_run("doomed")
    assert run.status == "Failed"
    assert run.error is not None and run.error.startswith("StepError: ")
    assert run.step("hog").error is not None
    assert run.step("hog").error.name == "WorkerLostError"
    assert run.step("hog").attempt == 4  # its retries (4) and no more
    assert h.once(failures) == ["StepError"]
    assert h.backend.dead_letters() == []


def _die() -> None:
    raise SimulatedCrash("killed inside the step")


def test_large_payloads_fail_clearly_or_travel_by_reference(make_harness: Any) -> None:
    app = App("big")
    blob = "x" * 200_000  # under one event's 256 KB, but trigger + output would be over
    # (and invoke data may be 4 MiB: past that, the invoke fails the run saying why)

    @app.function(id="child", trigger=TriggerEvent("big/never"))
    def child(ctx: Context) -> str:
        return str(ctx.event.data["blob"])

    @app.function(id="parent", trigger=TriggerEvent("big/go"))
    def parent(ctx: Context) -> int:
        got = ctx.step.invoke("call", function="child", data={"blob": blob})
        return len(got)

    @app.function(id="too-big", trigger=TriggerEvent("big/go"))
    def too_big(ctx: Context) -> None:
        ctx.step.invoke("call", function="child", data={"blob": "x" * (4 * 1024 * 1024)})

    @app.function(id="loud", trigger=TriggerEvent("big/go"))
    def loud(ctx: Context) -> None:
        def fail() -> None:
            raise NonRetriableError("e" * 500_000)

        ctx.step.run("fail", fail)

    h = make_harness(app)
    h.send("big/go")
    assert h.only_run("parent").status == "Completed"
    assert h.only_run("parent").output == len(blob)
    big = h.only_run("too-big")
    assert big.status == "Failed"
    assert big.error is not None and "step.invoke 'call'" in big.error and "bytes" in big.error
    loud_run = h.only_run("loud")
    assert loud_run.status == "Failed"
    err = loud_run.step("fail").error
    assert err is not None and len(err.message) < 9000 and "cut" in err.message


def test_a_batch_with_one_bad_event_is_refused_whole_and_says_why(make_harness: Any) -> None:
    app = App("shop")

    @app.function(id="greet", trigger=TriggerEvent("user/signup"))
    def greet(ctx: Context) -> str:
        return "hi"

    h = make_harness(app)
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10_000):
        node["a"] = {}
        node = node["a"]
    bad = [
        ({"name": "user/signup", "data": {"score": float("nan")}}, "contains nan"),
        ({"name": "user/signup", "data": {"score": float("inf")}}, "contains inf"),
        ({"name": "user/signup", "data": {"s": "\ud800"}}, "lone surrogate"),
        ({"name": "user/signup", "data": deep}, "nested deeper than 64"),
        ({"name": "user/signup", "ts": -5}, "event[1].ts"),
        ({"name": "user/signup", "ts": 1e20}, "event[1].ts"),
    ]
    for event, why in bad:
        try:
            h.send([{"name": "user/signup", "data": {}}, event])
        except InvalidEventError as exc:
            assert why in str(exc) and "event[1]" in str(exc)
        else:
            raise AssertionError(f"accepted {why}")
    assert h.runs("greet") == []  # the good first event of each batch was not accepted either


def test_registration_refuses_what_could_never_fire() -> None:
    app = App("shop")

    def handler(ctx: Context) -> None:
        return None

    bad: list[tuple[dict[str, Any], str]] = [
        ({"trigger": TriggerEvent("bad name!")}, "invalid event name 'bad name!'"),
        ({"trigger": TriggerEvent("")}, "invalid event name ''"),
        ({"trigger": TriggerEvent(123)}, "invalid event name 123"),  # type: ignore[arg-type]
        ({"trigger": TriggerEvent("a/b", if_="evnt.data.x == 1")}, "unknown name 'evnt'"),
        ({"trigger": TriggerEvent("a/b"), "cancel_on": CancelOn(event="a/c", if_="asyn.x")},
         "unknown name 'asyn'"),
        ({"trigger": TriggerEvent("a/b"), "timeouts": Timeouts(finish="400d")}, "one-year"),
        ({"trigger": TriggerEvent("a/b"), "timeouts": Timeouts(start="99999999999d")},
         "too large"),
    ]
    for i, (options, why) in enumerate(bad):
        try:
            app.function(id=f"f{i}", **options)(handler)
        except ConfigurationError as exc:
            assert why in str(exc) and f"function 'f{i}'" in str(exc), str(exc)
        else:
            raise AssertionError(f"registered {options}")


def test_an_event_whose_routing_failed_half_way_is_routed_again_in_full(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App("chat")

    @app.function(id="waiter", trigger=TriggerEvent("chat/start"))
    def waiter(ctx: Context) -> Any:
        got = ctx.step.wait_for_event("reply", event="chat/reply", timeout="1h", match="data.q")
        return got.data["a"] if got else None

    h = make_harness(app)
    h.send("chat/start", {"q": 1})
    failed: list[str] = []
    real = Intake.match_messages

    def throttled_once(self: Intake, event: dict[str, Any]) -> list[Any]:
        if event["name"] == "chat/reply" and not failed:
            failed.append(event["id"])  # logged and remembered nothing yet: routing failed
            raise ConnectionError("throttled while reading waiters")
        return real(self, event)

    monkeypatch.setattr(Intake, "match_messages", throttled_once)
    reply = {"id": "reply-1", "name": "chat/reply", "data": {"q": 1, "a": "yes"}}
    try:
        h.send(reply)
    except ConnectionError:  # routed in-process (local): the sender retries the same id
        h.send(reply)
    h.advance("6m")  # (AWS: the router's record returns after its visibility timeout)
    assert failed == ["reply-1"]
    run = h.only_run("waiter")
    assert run.status == "Completed" and run.output == "yes"


def test_an_event_reads_only_the_waiters_its_value_could_match(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 30 open orders, each waiting for its payment and cancellable by its own cancel: a
    # payment or a cancel for one order reads that order's waiter, not all 30.
    app = App("shop")

    @app.function(
        id="checkout",
        trigger=TriggerEvent("order/created"),
        cancel_on=CancelOn("order/cancelled", match="data.order_id"),
    )
    def checkout(ctx: Context) -> Any:
        paid = ctx.step.wait_for_event(
            "paid", event="order/paid", timeout="1d", match="data.order_id"
        )
        return paid.data["amount"] if paid else None

    read: dict[str, list[int]] = {}
    for cls in (SqliteStore, DynamoStore):
        def counted(self: Any, event: dict[str, Any], _real: Any = cls.waiters_for) -> Any:
            found = _real(self, event)
            read.setdefault(event["name"], []).append(len(found))
            return found

        monkeypatch.setattr(cls, "waiters_for", counted)
    h = make_harness(app)
    for i in range(30):
        h.send("order/created", {"order_id": f"o{i}"}, settle=False)
    h.settle()
    h.send("order/paid", {"order_id": "o5", "amount": 12})
    h.send("order/cancelled", {"order_id": "o7"})
    h.send("order/paid", {"order_id": "o-unknown", "amount": 1})
    by_order = {r.state.run.events[0]["data"]["order_id"]: r for r in h.runs("checkout")}
    assert by_order["o5"].status == "Completed" and by_order["o5"].output == 12
    assert by_order["o7"].status == "Cancelled"
    assert {r.status for o, r in by_order.items() if o not in ("o5", "o7")} == {"Running"}
    assert max(read["order/paid"]) == 1 and min(read["order/paid"]) == 0
    assert read["order/cancelled"] and max(read["order/cancelled"]) == 1


def test_a_message_that_can_never_be_done_fails_its_run_with_the_reason(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sleep's wake message fails on every delivery (the platform kept failing): on its
    # last deliveries the run is failed with the reason, not left sleeping for ever with
    # its only message in the dead-letter queue.
    app = App("shop")
    failures: list[str] = []

    def notify(ctx: Context) -> None:
        failures.append(ctx.event.data["error"]["name"])

    @app.function(id="napper", trigger=TriggerEvent("shop/go"), on_failure=notify)
    def napper(ctx: Context) -> None:
        ctx.step.sleep("nap", "1h")

    def unreachable(*_: Any) -> bool:
        raise ConnectionError("the state table is unreachable")

    monkeypatch.setattr(Resolver, "on_wake", unreachable)
    h = make_harness(app)
    h.send("shop/go")
    h.advance("5h")  # the sleep, then each failure back after its backoff (1 min ... 15 min)
    run = h.only_run("napper")
    assert run.status == "Failed"
    assert run.error is not None and run.error.startswith("DeliveryFailedError: "), run.error
    assert "wake message for step 'nap'" in run.error
    # The last error seen: ours, or (chaos) an injected one on that last try.
    assert "unreachable" in run.error or (h.chaos and "InjectedError" in run.error), run.error
    assert h.once(failures) == ["DeliveryFailedError"]
    assert h.backend.dead_letters() == []


def test_a_crash_after_a_death_fails_the_run_still_sends_its_failure(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker is killed in a step that has no retries; the redelivery records the death
    # as the step's one failed attempt, which fails the run, and then the worker dies before
    # sending function.failed. The next delivery finds the commit done and sends what it
    # had to: on_failure still runs.
    app = App("shop")
    failures: list[str] = []

    def notify(ctx: Context) -> None:
        failures.append(ctx.event.data["error"]["name"])

    @app.function(id="doomed", trigger=TriggerEvent("shop/go"), on_failure=notify, retries=0)
    def doomed(ctx: Context) -> None:
        ctx.step.run("first", lambda: 1)  # so the kills happen in a continue, not the start
        ctx.step.run("hog", _die)

    crashed: list[str] = []
    real = Ports.send

    def crash_once(self: Ports, outbox: Any) -> None:
        failing = any(isinstance(o, EventOut) and o.event["name"] == FUNCTION_FAILED
                      for o in outbox)
        if failing and not crashed:
            crashed.append("after the commit, before its sends")
            raise SimulatedCrash("killed before sending the failure")
        real(self, outbox)

    monkeypatch.setattr(Ports, "send", crash_once)
    h = make_harness(app)
    if not h.chaos:
        h.enable_chaos(Chaos(workers=1, duplicate=0, crash=0, errors=0, max_receives=5))
    h.send("shop/go")
    run = h.only_run("doomed")
    assert crashed and run.status == "Failed"
    assert run.step("hog").error is not None
    assert run.step("hog").error.name == "WorkerLostError"
    assert h.once(failures) == ["StepError"]
    assert h.backend.dead_letters() == []


def test_event_names_past_eventbridge_s_128_characters_are_refused_where_they_enter(
    make_harness: Any,
) -> None:
    # EventBridge carries an event's name as its DetailType, which takes 128 characters: a
    # longer name is refused at send, at registration and in a step, on every backend, and
    # never becomes an outbox no PutEvents could deliver.
    longest, too_long = "n/" + "x" * 126, "n/" + "x" * 127
    app = App("shop")

    @app.function(id="long-name", trigger=TriggerEvent(longest))
    def long_name(ctx: Context) -> str:
        return ctx.event.name

    @app.function(id="sender", trigger=TriggerEvent("shop/send"), retries=0)
    def sender(ctx: Context) -> Any:
        return ctx.step.send_event("announce", {"name": too_long, "data": {}})

    @app.function(id="waiter", trigger=TriggerEvent("shop/wait"), retries=0)
    def waiter(ctx: Context) -> Any:
        return ctx.step.wait_for_event("reply", event=too_long, timeout="1h")

    h = make_harness(app)
    try:
        h.send(too_long)
    except InvalidEventError as exc:
        assert "129 characters, over the 128" in str(exc) and "DetailType" in str(exc), exc
    else:
        raise AssertionError("a 129-character event name was accepted")
    h.send(longest)
    assert h.only_run("long-name").output == longest
    h.send("shop/send")
    sent = h.only_run("sender")
    assert sent.status == "Failed"
    assert sent.error is not None and "over the 128" in sent.error, sent.error
    h.send("shop/wait")
    waited = h.only_run("waiter")
    assert waited.status == "Failed"
    assert waited.error is not None and "over the 128" in waited.error, waited.error
    try:
        app.function(id="later", trigger=TriggerEvent(too_long))(long_name)
    except ConfigurationError as exc:
        assert "function 'later'" in str(exc) and "over the 128" in str(exc), exc
    else:
        raise AssertionError("a trigger on a 129-character name was registered")
