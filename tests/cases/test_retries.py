"""Retries with backoff, StepError on exhaustion, NonRetriableError, RetryAfterError."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runtime import App, Context, NonRetriableError, RetryAfterError, StepError, TriggerEvent


def flaky(fail_times: int, calls: list[int], result: Any = "ok") -> Any:
    def fn() -> Any:
        calls.append(len(calls))
        if len(calls) <= fail_times:
            raise ConnectionError(f"boom {len(calls)}")
        return result

    return fn


def test_step_retries_then_succeeds(make_harness: Any) -> None:
    app = App("shop")
    calls: list[int] = []
    attempts: list[int] = []

    @app.function(id="flaky", trigger=TriggerEvent("a/b"), retries=3)
    def handler(ctx: Context) -> Any:
        def step() -> Any:
            attempts.append(ctx.attempt)
            return flaky(2, calls)()

        return ctx.step.run("call-api", step)

    h = make_harness(app)
    h.send("a/b")
    assert len(h.once(attempts)) == 1  # the retry waits for its backoff
    h.advance("10m")
    run = h.only_run("flaky")
    assert run.status == "Completed" and run.output == "ok"
    step = run.step("call-api")
    if not h.chaos:
        assert attempts == [0, 1, 2]
        assert step.status == "Completed" and step.attempt == 2
    else:  # an attempt may run twice (at-least-once), and the fake fails by call count
        assert h.once(attempts) == list(range(step.attempt + 1)) and len(calls) >= 3


def test_backoff_is_exponential_with_jitter() -> None:
    from runtime.engine import backoff

    delays = [backoff(n, "run/step") for n in range(6)]
    for n, d in enumerate(delays):
        assert 2.0 * 2**n * 0.5 <= d <= 2.0 * 2**n
    assert backoff(3, "a") != backoff(3, "b")  # jitter spreads retries of different steps
    assert backoff(3, "a") == backoff(3, "a")  # and is stable for one step
    assert backoff(30, "a") <= 3600


def test_exhausted_step_raises_catchable_step_error(make_harness: Any) -> None:
    app = App("shop")
    calls: list[int] = []

    attempts: list[int] = []

    @app.function(id="fallback", trigger=TriggerEvent("a/b"), retries=2)
    def handler(ctx: Context) -> Any:
        def primary() -> Any:
            attempts.append(ctx.attempt)
            return flaky(99, calls)()

        try:
            return ctx.step.run("primary", primary)
        except StepError as err:
            note = f"fallback after {err.step_id}: {err.name}"
            return ctx.step.run("secondary", lambda: note)

    h = make_harness(app)
    h.send("a/b")
    h.advance("1h")
    run = h.only_run("fallback")
    assert h.once(attempts) == [0, 1, 2]  # 1 + 2 retries (chaos may repeat an attempt)
    assert run.status == "Completed"
    assert run.output == "fallback after primary: ConnectionError"
    primary = run.step("primary")
    assert primary.status == "Failed" and primary.error is not None
    assert primary.attempt == 2
    if not h.chaos:
        assert len(calls) == 3 and primary.error.message == "boom 3"
    else:  # the recorded error is one of the last attempt's
        assert primary.error.message.startswith("boom ") and len(calls) >= 3


def test_uncaught_step_error_fails_the_run_without_more_retries(make_harness: Any) -> None:
    app = App("shop")
    calls: list[int] = []

    @app.function(id="doomed", trigger=TriggerEvent("a/b"), retries=1)
    def handler(ctx: Context) -> Any:
        return ctx.step.run("primary", flaky(99, calls))

    h = make_harness(app)
    h.send("a/b")
    h.advance("1h")
    run = h.only_run("doomed")
    assert run.status == "Failed"
    assert run.step("primary").attempt == 1  # two attempts (retries=1) ...
    assert len(calls) == 2 or (h.chaos and len(calls) > 2)  # (chaos repeats some)
    assert run.state.run.attempt == 0  # the handler itself was not retried
    assert run.error == f"StepError: step 'primary' failed: ConnectionError: boom {len(calls)}" \
        or (h.chaos and run.error.startswith("StepError: step 'primary' failed: ConnectionError"))


def test_non_retriable_error_fails_step_and_run_at_once(make_harness: Any) -> None:
    app = App("shop")
    calls: list[int] = []

    def refuse() -> None:
        calls.append(1)
        raise NonRetriableError("card declined")

    @app.function(id="charge", trigger=TriggerEvent("a/b"), retries=4)
    def handler(ctx: Context) -> Any:
        return ctx.step.run("charge-card", refuse)

    h = make_harness(app)
    h.send("a/b")
    h.advance("1h")
    run = h.only_run("charge")
    assert h.once(calls) == [1]  # never retried (chaos may repeat the one attempt)
    assert run.status == "Failed"
    step = run.step("charge-card")
    assert step.status == "Failed" and step.attempt == 0
    assert step.error is not None and step.error.retriable is False


def test_retry_after_error_schedules_the_retry_at_the_given_time(make_harness: Any) -> None:
    app = App("shop")
    at: list[float] = []

    def limited() -> str:
        at.append(h.clock.now())
        if at[-1] < at[0] + 30 * 60:  # (chaos may run an attempt twice: decide by time)
            raise RetryAfterError("rate limited", timedelta(minutes=30))
        return "done"

    @app.function(id="limited", trigger=TriggerEvent("a/b"))
    def handler(ctx: Context) -> Any:
        return ctx.step.run("call", limited)

    h = make_harness(app)
    h.send("a/b")
    h.advance("29m")
    assert len(h.once(at)) == 1, "retried before the RetryAfterError time"
    h.advance("2m")
    attempts = h.once(at)
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 30 * 60
    assert h.only_run("limited").output == "done"


def test_handler_errors_outside_steps_retry_the_handler(make_harness: Any) -> None:
    app = App("shop")
    tries: list[int] = []

    @app.function(id="body-error", trigger=TriggerEvent("a/b"), retries=2)
    def handler(ctx: Context) -> Any:
        value = ctx.step.run("once", lambda: 41)
        tries.append(ctx.attempt)
        if ctx.attempt < 2:
            raise ValueError("not yet")
        return value + 1

    h = make_harness(app)
    h.send("a/b")
    h.advance("1h")
    run = h.only_run("body-error")
    assert run.status == "Completed" and run.output == 42
    assert run.error is None  # the earlier attempts' error does not outlive the success
    assert h.once(tries) == [0, 1, 2]
    assert run.step("once").attempt == 0


def test_retries_zero_means_one_attempt(make_harness: Any) -> None:
    app = App("shop")
    calls: list[int] = []

    attempts: list[int] = []

    @app.function(id="no-retry", trigger=TriggerEvent("a/b"), retries=0)
    def handler(ctx: Context) -> Any:
        def step() -> Any:
            attempts.append(ctx.attempt)
            return flaky(5, calls)()

        return ctx.step.run("x", step)

    h = make_harness(app)
    h.send("a/b")
    h.advance("1h")
    assert h.once(attempts) == [0]
    assert len(calls) == 1 or h.chaos
    assert h.only_run("no-retry").status == "Failed"
