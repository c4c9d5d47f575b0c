"""The pause gate: what pause and resume write, and how long a worker trusts what it read."""

from __future__ import annotations

from pathlib import Path

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.pausing import PAUSE_CACHE_SECONDS, pause, paused, resume

app = App("gates")


@app.function(id="f", trigger=TriggerEvent("x/y"))
def f(ctx: Context) -> None:
    return None


def test_pause_is_idempotent_keeps_its_since_and_takes_a_new_reason(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    with LocalBackend(app, tmp_path / "db.sqlite3", clock=clock) as b:
        first = pause(b.store, clock, "f", "outage")
        clock.advance(60)
        assert pause(b.store, clock, "f", "outage") == first  # nothing written
        again = pause(b.store, clock, "f", "still down")
        assert (again.since, again.reason) == (1_000.0, "still down")
        assert again.epoch == first.epoch + 1
        assert resume(b.store, clock, "f") is True
        assert paused(b.store, "f") is None
        assert resume(b.store, clock, "f") is False
        assert pause(b.store, clock, "f").since == 1_060.0  # a new pause, a new since


def test_a_worker_trusts_the_pause_it_read_for_the_cache_seconds(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    with LocalBackend(app, tmp_path / "db.sqlite3", clock=clock) as b:
        pauses = b.orchestrator.pauses
        assert not pauses.is_paused("f")
        pause(b.store, clock, "f")
        clock.advance(PAUSE_CACHE_SECONDS - 0.5)
        assert not pauses.is_paused("f")  # stale, within the bound
        clock.advance(0.5)
        assert pauses.is_paused("f")
        resume(b.store, clock, "f")
        assert pauses.is_paused("f")
        clock.advance(PAUSE_CACHE_SECONDS)
        assert not pauses.is_paused("f")
