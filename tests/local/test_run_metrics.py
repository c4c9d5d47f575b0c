"""Run metrics: reported once per change that landed, never for a duplicate delivery."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from runtime import App, Context, TriggerEvent
from runtime.orchestration.protocols import Metrics
from runtime.records import RunStatus
from runtime.testing import Harness

T0 = 1_780_000_000.0


class Recorder:
    """A :class:`Metrics` fake counting what it is told, per function."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.durations: list[tuple[str, float, bool]] = []

    def run_started(self, function_id: str) -> None:
        self.counts[function_id, "started"] += 1

    def run_finished(self, function_id: str, status: RunStatus) -> None:
        self.counts[function_id, status.value.lower()] += 1

    def step_ended(self, function_id: str, duration_s: float, *, failed: bool) -> None:
        self.durations.append((function_id, duration_s, failed))

    def step_retried(self, function_id: str) -> None:
        self.counts[function_id, "retried"] += 1

    def pushback(self, function_id: str) -> None:
        self.counts[function_id, "pushback"] += 1

    def run_blocked(self, function_id: str) -> None:
        self.counts[function_id, "blocked"] += 1


def build_app() -> App:
    app = App("metered")
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionError("try again")
        return "ok"

    @app.function(id="flaky", trigger=TriggerEvent("go/flaky"), retries=3)
    def flaky_fn(ctx: Context) -> Any:
        return ctx.step.run("call", flaky)

    @app.function(id="doomed", trigger=TriggerEvent("go/doomed"), retries=0)
    def doomed(ctx: Context) -> Any:
        def fail() -> None:
            raise ValueError("never works")

        return ctx.step.run("fail", fail)

    @app.function(id="sleepy", trigger=TriggerEvent("go/sleepy"))
    def sleepy(ctx: Context) -> Any:
        ctx.step.sleep("nap", "1h")

    return app


def test_each_run_and_step_change_is_reported_once_even_with_every_delivery_doubled(
    tmp_path: Path,
) -> None:
    h = Harness.local(build_app(), path=tmp_path / "db.sqlite3", start=T0)
    recorder = Recorder()
    metrics: Metrics = recorder
    h.backend.orchestrator.metrics = metrics  # type: ignore[attr-defined]
    h.duplicate_deliveries()
    try:
        h.send("go/flaky")
        h.send("go/doomed")
        h.send("go/sleepy")
        h.advance("10m")
        h.cancel(h.only_run("sleepy").id)
    finally:
        h.close()
    assert recorder.counts == Counter({
        ("flaky", "started"): 1, ("flaky", "retried"): 2, ("flaky", "completed"): 1,
        ("doomed", "started"): 1, ("doomed", "failed"): 1,
        ("sleepy", "started"): 1, ("sleepy", "cancelled"): 1,
    })
    ended = {(fn, failed): duration for fn, duration, failed in recorder.durations}
    assert set(ended) == {("flaky", False), ("doomed", True)}
    # From the first attempt to the result: the two retries' back-off (2 s, then 4 s,
    # with jitter) lies in between, on the fake clock.
    assert 3.0 <= ended["flaky", False] <= 6.0
    assert ended["doomed", True] == 0.0
