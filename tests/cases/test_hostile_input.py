"""Hostile and malformed input: one bad event never hurts another run (issue 23)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import App, CancelOn, Context, NonRetriableError, TriggerEvent
from runtime.errors import InvalidEventError


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
    h.send("order/placed", {"order_id": "x" * 450_000})  # a waiter item over 400 KB
    h.send("order/placed", {"order_id": "o1"})
    h.send("order/cancelled", {"order_id": "o1"})  # an honest cancel, after the poison
    h.advance("2h")
    by_id = {str(r.state.run.events[0]["data"]["order_id"])[:8]: r for r in h.runs("ship")}
    assert by_id["o1"].status == "Cancelled"
    # The crafted runs never start: their cancel_on could not be honoured, and they say why.
    for crafted, why in (("[[[[[[[[", "nested deeper than 8"), ("xxxxxxxx", "450002 bytes")):
        run = by_id[crafted]
        assert run.status == "Failed" and run.error is not None
        assert "cancel_on[0] ('order/cancelled')" in run.error and why in run.error, run.error
        assert "event.data.order_id" in run.error
    assert shipped == []
    assert h.backend.dead_letters() == []


def test_a_wait_for_a_value_no_waiter_can_compare_fails_its_own_run_only(
    make_harness: Any,
) -> None:
    app = App("pay")

    @app.function(id="await-payment", trigger=TriggerEvent("order/placed"))
    def await_payment(ctx: Context) -> str:
        paid = ctx.step.wait_for_event("paid", event="payment/confirmed", timeout="1h",
                                       match="data.order_id")
        return "paid" if paid else "timed out"

    h = make_harness(app)
    h.send("order/placed", {"order_id": _nested(55)})
    h.send("order/placed", {"order_id": "o1"})
    h.send("payment/confirmed", {"order_id": "o1"})
    h.send("payment/confirmed", {"order_id": _nested(55)})
    by_id = {str(r.state.run.events[0]["data"]["order_id"])[:8]: r
             for r in h.runs("await-payment")}
    assert by_id["o1"].status == "Completed" and by_id["o1"].output == "paid"
    crafted = by_id["[[[[[[[["]
    assert crafted.status == "Failed" and crafted.error is not None
    assert "step.wait_for_event 'paid'" in crafted.error, crafted.error
    assert "nested deeper than 8" in crafted.error
    assert h.backend.dead_letters() == []


def test_values_that_cannot_be_stored_or_compared_exactly_are_refused_at_send(
    make_harness: Any,
) -> None:
    app = App("shop")

    @app.function(id="greet", trigger=TriggerEvent("user/signup"))
    def greet(ctx: Context) -> str:
        return "hi"

    h = make_harness(app)
    now_ms = int(h.clock.now() * 1000)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"data": {"n": 10**400}}, "event.data.n: an integer of about 401 digits"),
        ({"data": {"n": [2**70]}}, "event.data.n[0]: 1180591620717411303424 is outside"),
        ({"data": {"n": -(2**63) - 1}}, "is outside -2**63..2**63-1"),
        ({"data": {"a b": {"\udc80": 1}}}, "event.data['a b']: has a key with a lone"),
        ({"id": "\ud800"}, "event.id: contains a lone surrogate"),
        ({"data": {"when": object()}}, "event.data.when: is an object"),
        ({"ts": now_ms + 3_600_000}, "event.ts: "),
    ]
    for fields, why in bad:
        with pytest.raises(InvalidEventError) as refused:
            h.send({"name": "user/signup", **fields})
        assert why in str(refused.value), str(refused.value)
    h.send({"name": "user/signup", "data": {"n": 2**63 - 1, "m": -(2**63)},
            "ts": now_ms + 60_000})  # the edges, and a minute of clock skew, are fine
    assert [r.status for r in h.runs("greet")] == ["Completed"]


@pytest.mark.parametrize("retries", [0, 3])
def test_an_output_that_cannot_be_stored_fails_its_step_once_naming_step_and_path(
    make_harness: Any, retries: int,
) -> None:
    calls: list[str] = []
    app = App("files")
    deep = _nested(5_000)
    outputs: dict[str, Any] = {
        "surrogate": {"names": ["ok", "caf\udce9.txt"]},  # os.listdir of undecodable names
        "int-keys": {1: "a", "1": "b"},
        "deep": deep,
        "huge-int": {"n": 10**400},
    }
    for name, value in outputs.items():
        def make(name: str = name, value: Any = value) -> Any:
            def body(ctx: Context) -> Any:
                return ctx.step.run("list", lambda: calls.append(name) or value)
            return body
        app.function(id=name, trigger=TriggerEvent(f"t/{name}"), retries=retries)(make())

    h = make_harness(app)
    for name in outputs:
        h.send(f"t/{name}", {})
    h.advance("2h")
    assert sorted(h.once(calls)) == sorted(outputs)  # each body ran exactly once
    paths = {"surrogate": "output.names[1]: contains a lone surrogate",
             "int-keys": "output: has the int key 1", "deep": "nested deeper than 64",
             "huge-int": "output.n: an integer of about 401 digits"}
    for name, path in paths.items():
        run = h.only_run(name)
        assert run.status == "Failed", (name, run.status)
        err = run.step("list").error
        assert err is not None and err.name == "StepLimitError", (name, err)
        assert "step 'list'" in err.message and path in err.message, err.message
    assert h.backend.dead_letters() == []


def test_an_error_message_with_a_lone_surrogate_is_recorded_escaped_after_one_call(
    make_harness: Any,
) -> None:
    calls: list[int] = []
    app = App("files")

    @app.function(id="copy", trigger=TriggerEvent("t/copy"), retries=0)
    def copy(ctx: Context) -> None:
        def fail() -> None:
            calls.append(1)
            raise NonRetriableError("cannot open caf\udce9.txt")
        ctx.step.run("open", fail)

    h = make_harness(app)
    h.send("t/copy", {})
    h.advance("1h")
    assert len(h.once(calls)) == 1
    run = h.only_run("copy")
    assert run.status == "Failed"
    err = run.step("open").error
    assert err is not None and err.message == "cannot open caf\\udce9.txt"


def test_step_ids_never_reach_each_others_keys(make_harness: Any) -> None:
    app = App("ids")

    @app.function(id="ids", trigger=TriggerEvent("t/ids"))
    def ids(ctx: Context) -> list[Any]:
        first = ctx.step.run("fetch", lambda: "first fetch")
        explicit = ctx.step.run("fetch:1", lambda: "explicit fetch:1")
        second = ctx.step.run("fetch", lambda: "second fetch")
        top = ctx.step.run("a@0", lambda: "top-level a@0")
        branch = ctx.step.parallel([lambda: ctx.step.run("a", lambda: "branch a"),
                                    lambda: ctx.step.run("b%40", lambda: "branch b%40")])
        return [first, explicit, second, top, *branch]

    h = make_harness(app)
    h.send("t/ids", {})
    run = h.only_run("ids")
    assert run.output == ["first fetch", "explicit fetch:1", "second fetch", "top-level a@0",
                          "branch a", "branch b%40"], run.error
    assert run.step("fetch%3A1").id == "fetch:1" and run.step("fetch:1").id == "fetch"


def test_a_step_id_too_long_for_the_stores_keys_fails_the_same_on_every_backend(
    make_harness: Any,
) -> None:
    app = App("ids")

    @app.function(id="long", trigger=TriggerEvent("t/long"), retries=0)
    def long(ctx: Context) -> None:
        ctx.step.wait_for_event("w" * 1_100, event="t/never", timeout="1h")

    h = make_harness(app)
    h.send("t/long", {})
    run = h.only_run("long")
    assert run.status == "Failed" and run.error is not None
    assert "1100 bytes, over the 256" in run.error, run.error
    assert h.backend.dead_letters() == []
