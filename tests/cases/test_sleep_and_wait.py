"""Sleeps with a skipping clock, and wait_for_event match, mismatch and timeout."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from runtime import App, CancelOn, Context, Event, InvalidEventError, Timeouts, TriggerEvent
from runtime.backends.aws.queue import SqsQueue
from runtime.backends.aws.store import DynamoStore
from runtime.backends.local.queue import SqliteQueue
from runtime.backends.local.store import SqliteStore
from runtime.events import validate_event
from runtime.orchestration import intake
from runtime.records import Commit, MessageKind, StepKind, StepStatus
from runtime.testing.chaos import InjectedError
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


# A write that landed but whose reply was lost (a timeout, a dropped connection): its
# writer sees an error and its message is redelivered. The redelivery must still do all
# that the first delivery would have done after the commit: the wait's lookback included.


class _LandsThenFails:
    """One chosen store or queue call lands, then raises once, as if its reply was lost.

    Args:
        monkeypatch: Patches the call on both backends' classes.
        method: ``"commit"``, ``"log_event"`` (stores) or ``"send"`` (queues).
        chosen: Whether a call (its arguments) is the one to make ambiguous.
        then: What happens after it landed, before its writer hears of the failure.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, method: str,
                 chosen: Callable[..., bool], then: Callable[[], None] | None = None) -> None:
        self.chosen = chosen
        self.then = then
        self.fired: list[str] = []
        self._lock = threading.Lock()
        classes = (SqliteQueue, SqsQueue) if method == "send" else (SqliteStore, DynamoStore)
        for cls in classes:
            monkeypatch.setattr(cls, method, self._wrap(getattr(cls, method)))

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(inner: Any, *args: Any, **kwargs: Any) -> Any:
            result = real(inner, *args, **kwargs)
            with self._lock:
                fire = not self.fired and result is not False and self.chosen(*args)
                if fire:
                    self.fired.append(real.__name__)
            if fire:
                if self.then is not None:
                    self.then()
                raise InjectedError(f"{real.__name__} landed, but its reply was lost")
            return result

        return call


def _commits_wait(*args: Any) -> bool:
    """Whether a store commit puts a wait (and its waiter) in place."""
    commit: Commit = args[1]
    return any(w.record.kind is StepKind.WAIT and w.record.status is StepStatus.WAITING
               for w in commit.steps)


def _reply(b: int = 0) -> dict[str, Any]:
    """The reply for branch ``b`` (0 without branches) of the run asking ``q`` 1."""
    return {"id": f"reply-{b}", "name": "chat/reply", "data": {"q": 1, "b": b, "a": f"yes-{b}"}}


def _send_surely(h: Any, event: dict[str, Any]) -> None:
    """Send ``event`` now, through chaos mode's injected failures (its id makes it once)."""
    for _ in range(20):
        try:
            h.send(event, settle=False)
            return
        except InjectedError:
            continue
    raise AssertionError("the event could not be sent")


def _routed_now(h: Any, event: dict[str, Any]) -> None:
    """Send ``event`` now and have it routed now, before the case moves the clock on.

    Locally a send routes the event in the sender's thread. On AWS it waits in the router's
    queue, and in chaos mode the router may take it only after the clock was moved past a
    wait's timeout, beside that timeout's WAKE: an event that reaches stepkit after the
    timeout was handled cannot answer the wait, whatever its ``ts`` (nothing knows of it).
    The router's own routing, done here, is what the bus's copy would have done; that copy
    is then a duplicate, ignored.
    """
    sent = {**event, "ts": int(h.clock.now() * 1000)}
    _send_surely(h, sent)
    router = getattr(h.backend, "router", None)
    if router is not None:
        router.orchestrator.route_event(validate_event(sent, now_ms=sent["ts"]).to_json())


def _wait_app(calls: list[str], *, first: bool = False, checkpointing: bool = False,
              branches: int = 0, timeout: str = "1h") -> App:
    """A run that waits for its ``chat/reply``: first, or after a step; or in each branch."""
    app = App("chat")

    @app.function(id="asker", trigger=TriggerEvent("chat/start"), checkpointing=checkpointing)
    def asker(ctx: Context) -> Any:
        def wait(b: int) -> Event | None:
            return ctx.step.wait_for_event(
                f"reply-{b}", event="chat/reply", timeout=timeout,
                if_=f"async.data.q == event.data.q && async.data.b == {b}")

        if not first:
            ctx.step.run("ask", lambda: calls.append("ask") or "asked")
        if branches:
            got = ctx.step.parallel([lambda b=b: wait(b) for b in range(branches)])
        else:
            got = (wait(0),)
        ctx.step.run("thank", lambda: calls.append("thank") or "thanked")
        return [g.data["a"] if g is not None else None for g in got]

    return app


def _assert_answered(h: Any, calls: list[str], *, first: bool, waits: int) -> None:
    """The run completed, each wait with its reply (none timed out), each step run once."""
    run = h.only_run("asker")
    assert run.status == "Completed", (run.status, run.error)
    assert run.output == [f"yes-{b}" for b in range(waits)]
    expected = ["thank"] if first else ["ask", "thank"]
    assert (calls if not h.chaos else h.once(calls)) == expected


SHAPES = {
    "first": {"first": True},  # the START's commit
    "after-a-step": {},  # a CONTINUE's
    "checkpointed": {"checkpointing": True},  # a chain's
    "in-branches": {"branches": 2},  # BRANCH messages'
}


@pytest.mark.parametrize("when", ["before", "between", "after"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_wait_whose_commit_landed_unreported_still_gets_its_event(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, shape: str, when: str
) -> None:
    # The wait's commit (its step, its waiter, its timeout) lands and its writer hears an
    # error: no timer sent, no lookback done. The event comes before the wait was committed
    # (only the lookback can find it), between the commit and its redelivery (the waiter
    # does), or after the redelivery. Either way the wait gets it; nothing runs twice.
    calls: list[str] = []
    options = SHAPES[shape]
    waits = int(options.get("branches", 1))
    replies = [_reply(b) for b in range(waits)]
    h = make_harness(_wait_app(calls, **options))

    def send_replies() -> None:
        for e in replies:
            _send_surely(h, e)

    ambiguous = _LandsThenFails(monkeypatch, "commit", _commits_wait,
                                send_replies if when == "between" else None)
    h.send("chat/start", {"q": 1}, settle=False)
    if when == "before":
        send_replies()
    h.advance("10m")  # (AWS: the failed record returns after its visibility timeout)
    assert ambiguous.fired == ["commit"]
    if when == "after":
        send_replies()
    h.advance("10m")
    _assert_answered(h, calls, first=bool(options.get("first")), waits=waits)


def _is_reply(*args: Any) -> bool:
    """Whether a timeline append is of a reply."""
    return bool(args[0]["name"] == "chat/reply")


def _sends_match(*args: Any) -> bool:
    """Whether a queue send carries a MATCH (from routing, or from a wait's lookback)."""
    return any(m.kind is MessageKind.MATCH for m in args[0])


ROUTER_CALLS = {"log_event": _is_reply, "send": _sends_match}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("call", list(ROUTER_CALLS))
def test_a_reply_whose_routing_landed_unreported_still_answers_the_wait(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, call: str, when: str
) -> None:
    # The reply's append to the timeline, or the MATCH it sends, lands and its writer hears
    # an error: the event is routed again. It arrives before the wait is committed (the
    # lookback finds it) or after (the waiter does).
    calls: list[str] = []
    h = make_harness(_wait_app(calls))
    ambiguous = _LandsThenFails(monkeypatch, call, ROUTER_CALLS[call])
    h.send("chat/start", {"q": 1}, settle=when == "after")

    def send_reply() -> None:
        try:
            h.send(_reply())
        except InjectedError:  # routed in-process (local): the sender sends it again
            h.send(_reply())

    send_reply()
    h.advance("10m")  # (AWS: the router's record returns after its visibility timeout)
    assert ambiguous.fired == [call]
    _assert_answered(h, calls, first=False, waits=1)


@pytest.mark.parametrize("when", ["before", "between"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_wait_whose_redelivery_comes_after_its_timeout_still_gets_its_event(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, shape: str, when: str
) -> None:
    # As above, but the redelivery comes after the wait's 2-minute timeout (a visibility
    # timeout is minutes): the timer it re-sends is due at once, beside its lookback's MATCH.
    # The reply came, and was routed, within the two minutes (:func:`_routed_now`), so the
    # wait has it whichever comes first.
    calls: list[str] = []
    options = SHAPES[shape]
    waits = int(options.get("branches", 1))
    h = make_harness(_wait_app(calls, timeout="2m", **options))

    def send_replies() -> None:
        for b in range(waits):
            _routed_now(h, _reply(b))

    def late() -> None:
        if when == "between":
            send_replies()
        h.clock.advance("3m")

    ambiguous = _LandsThenFails(monkeypatch, "commit", _commits_wait, late)
    h.send("chat/start", {"q": 1}, settle=False)
    if when == "before":
        send_replies()
    h.advance("10m")
    assert ambiguous.fired == ["commit"]
    _assert_answered(h, calls, first=bool(options.get("first")), waits=waits)


def test_an_event_the_router_matched_while_the_wait_timed_out_answers_it(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The router logs an event, then reads the waiters; a timeout reads the timeline, then
    # commits ``None``. The reply (sent a second before the timeout) is routed just after
    # the timeout's read: if the router still saw the waiter, its MATCH must not lose to
    # that ``None``. (If it did not, the event reached stepkit after the wait ended: ``None``.)
    calls: list[str] = []
    h = make_harness(_wait_app(calls, timeout="2m"))
    router = getattr(h.backend, "orchestrator", None) or h.backend.router.orchestrator
    timeout_at = h.clock.now() + 120
    reply = validate_event({**_reply(), "ts": int(timeout_at * 1000) - 1000},
                           now_ms=int(timeout_at * 1000)).to_json()
    matched: list[Any] = []
    routed: list[bool] = []
    real_matches = intake.match_messages

    def matches(ports: Any, event: dict[str, Any]) -> list[Any]:
        found = real_matches(ports, event)
        matched.extend(found)
        return found

    def routed_after_read(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(inner: Any, *args: Any, **kwargs: Any) -> Any:
            result = real(inner, *args, **kwargs)
            if h.clock.now() >= timeout_at and not routed:
                routed.append(True)
                router.route_event(reply)
            return result

        return call

    monkeypatch.setattr(intake, "match_messages", matches)
    for cls in (SqliteStore, DynamoStore):
        monkeypatch.setattr(cls, "events_since", routed_after_read(cls.events_since))
    h.send("chat/start", {"q": 1})
    h.advance("3m")
    assert routed == [True]
    run = h.only_run("asker")
    assert run.status == "Completed", (run.status, run.error)
    if matched or h.chaos is None:
        assert run.output == (["yes-0"] if matched else [None])
    else:  # a chaos fault made the timeout read the timeline again, after the event was
        assert run.output in (["yes-0"], [None])  # logged: then it did come in time


def test_a_reply_whose_routing_is_retried_after_the_timeout_still_answers_the_wait(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reply's append to the timeline lands unreported: its routing is retried minutes
    # later (the router's record after its visibility timeout; locally, the sender), after
    # the wait's 2-minute timeout. The reply was sent, and logged, within the two minutes.
    calls: list[str] = []
    h = make_harness(_wait_app(calls, timeout="2m"))
    h.send("chat/start", {"q": 1})
    ambiguous = _LandsThenFails(monkeypatch, "log_event", _is_reply)
    reply = {**_reply(), "ts": int(h.clock.now() * 1000)}
    try:
        h.send(reply)
    except InjectedError:  # routed in-process (local): the sender retries, but late
        h.advance("3m")
        h.send(reply)
    h.advance("10m")
    assert ambiguous.fired == ["log_event"]
    _assert_answered(h, calls, first=False, waits=1)


def test_a_cancel_sent_within_its_window_cancels_a_run_whose_start_is_redelivered_late(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cancel_on for 1 minute; the run's creation lands unreported and the START comes back
    # 3 minutes on. The cancel came within the minute, before the run existed: the
    # redelivered start's cancel lookback must still count it.
    app = App("shop")
    shipped: list[str] = []

    @app.function(id="fulfil", trigger=TriggerEvent("order/created"),
                  cancel_on=CancelOn("order/cancelled", match="data.order_id", timeout="1m"))
    def fulfil(ctx: Context) -> None:
        ctx.step.sleep("pack", "1h")
        ctx.step.run("ship", lambda: shipped.append("shipped"))

    h = make_harness(app)

    def cancel_then_late() -> None:
        _send_surely(h, {"id": "stop-1", "name": "order/cancelled",
                         "data": {"order_id": "o1"}})
        h.clock.advance("3m")

    ambiguous = _LandsThenFails(monkeypatch, "create_run", lambda *_: True, cancel_then_late)
    h.send("order/created", {"order_id": "o1"}, settle=False)
    h.advance("2h")
    assert ambiguous.fired == ["create_run"]
    run = h.only_run("fulfil")
    assert run.status == "Cancelled", (run.status, run.steps)
    assert shipped == []
