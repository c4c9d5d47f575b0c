"""A worker that dies mid-step: the step runs again, its result is recorded once.

A death is the attempt's outcome: the step is charged a failed attempt (``WorkerLostError``)
and retried by its own ``retries``, so a step that kills its worker every time fails its run
after ``retries + 1`` attempts, never more. A redelivery cannot tell a death from Lambda
throttling the delivery before it ran, so it marks itself before it runs user code: a death
is known, and charged, from the next redelivery that finds the mark; the first delivery of a
message writes nothing. So each attempt of such a step runs at most twice.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime import App, Context, TriggerEvent


class WorkerDied(BaseException):
    """Stands in for the process dying: not an error the engine may catch and record."""


def test_worker_killed_mid_step_resumes_without_losing_or_double_recording(
    make_harness: Any,
) -> None:
    app = App("shop")
    calls: dict[str, int] = {"before": 0, "charge": 0, "after": 0}

    def step(name: str) -> str:
        calls[name] += 1
        if name == "charge" and calls[name] == 1:
            raise WorkerDied  # after the side effect, before the result is recorded
        return f"{name}-done"

    @app.function(id="checkout", trigger=TriggerEvent("cart/checkout"))
    def checkout(ctx: Context) -> list[str]:
        return [ctx.step.run(n, step, n) for n in ("before", "charge", "after")]

    h = make_harness(app)
    h.send("cart/checkout", settle=False)
    with pytest.raises(WorkerDied):
        h.settle()
    run = h.only_run("checkout")
    if not h.chaos:  # (in chaos mode a duplicated delivery may already have done the step)
        assert run.status == "Running"
        assert "charge" not in run.steps
    h.advance("10m")  # the dead worker's lease (visibility timeout) runs out: redelivered
    run = h.only_run("checkout")  # (the lost attempt's retry is due after its backoff)
    assert run.status == "Completed"
    assert run.output == ["before-done", "charge-done", "after-done"]
    if not h.chaos:
        assert calls == {"before": 1, "charge": 2, "after": 1}  # at least once per attempt
    else:
        assert calls["before"] >= 1 and calls["charge"] >= 2 and calls["after"] >= 1
    assert run.step("charge").attempt == 0  # one death, unmarked: not charged


@pytest.mark.parametrize("retries", [0, 2])
def test_a_step_that_kills_its_worker_every_time_fails_after_its_retries(
    make_harness: Any, retries: int,
) -> None:
    app = App("shop")
    charged: list[int] = []

    def charge() -> str:
        charged.append(1)
        raise WorkerDied  # out of memory, every time

    @app.function(id="checkout", trigger=TriggerEvent("cart/checkout"), retries=retries)
    def checkout(ctx: Context) -> str:
        return str(ctx.step.run("charge", charge))

    h = make_harness(app)
    h.send("cart/checkout", settle=False)
    for _ in range(10 * (retries + 1)):  # each death is a redelivery after its visibility timeout
        try:
            h.advance("2h")
        except WorkerDied:
            continue
        if h.only_run("checkout").status != "Running":
            break
    run = h.only_run("checkout")
    assert run.status == "Failed"
    assert run.step("charge").error is not None
    assert run.step("charge").error.name == "WorkerLostError"
    assert run.step("charge").attempt == retries  # charged retries + 1 attempts
    if not h.chaos:  # twice per attempt (the first death is known from the second), not 8
        assert len(charged) == 2 * (retries + 1)
    else:  # a duplicated delivery may perform an attempt beside another
        assert 2 * (retries + 1) <= len(charged) <= 4 * (retries + 1)


def test_duplicate_delivery_of_every_message_changes_nothing(make_harness: Any) -> None:
    app = App("shop")
    calls: list[str] = []

    @app.function(id="dup", trigger=TriggerEvent("dup/go"))
    def dup(ctx: Context) -> int:
        a = ctx.step.run("a", lambda: calls.append("a") or 1)
        ctx.step.sleep("nap", "1m")
        b = ctx.step.parallel([lambda: ctx.step.run("b1", lambda: calls.append("b1") or 2),
                               lambda: ctx.step.run("b2", lambda: calls.append("b2") or 3)])
        return a + sum(b)

    h = make_harness(app, duplicate_deliveries=True)
    h.send("dup/go")
    h.advance("5m")
    run = h.only_run("dup")
    assert run.status == "Completed" and run.output == 6
    if not h.chaos:
        assert sorted(calls) == ["a", "b1", "b2"]
    else:  # at-least-once: chaos adds duplicates of its own that may both run a step
        assert set(calls) == {"a", "b1", "b2"}
