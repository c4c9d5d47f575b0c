"""Local background workers: a dead process's messages come back within seconds, and a long
step keeps its message (its lease is renewed while it runs)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend


def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_dead_workers_message_is_back_within_its_short_lease(tmp_path: Path) -> None:
    app = App("shop")

    @app.function(id="greet", trigger=TriggerEvent("user/signup"))
    def greet(ctx: Context) -> str:
        return str(ctx.step.run("hello", lambda: "hi"))

    path = tmp_path / "db.sqlite3"
    dead = LocalBackend(app, path, visibility_timeout=1.0)
    dead.send({"name": "user/signup", "data": {}})
    taken = dead.queue.receive(1)  # the process takes the start message, then dies
    assert len(taken) == 1
    started = time.monotonic()
    with LocalBackend(app, path, visibility_timeout=1.0, workers=2) as alive:
        alive.start()
        assert _wait_for(lambda: [r.status.value for r in alive.list_runs()] == ["Completed"])
    assert time.monotonic() - started < 5.0
    dead.close()


def test_a_step_longer_than_the_lease_keeps_its_message(tmp_path: Path) -> None:
    app = App("shop")
    calls: list[int] = []
    lock = threading.Lock()

    def slow() -> str:
        with lock:
            calls.append(1)
        time.sleep(2.5)  # two and a half leases
        return "done"

    @app.function(id="slow", trigger=TriggerEvent("job/go"))
    def job(ctx: Context) -> str:
        return str(ctx.step.run("slow", slow))

    with LocalBackend(app, tmp_path / "db.sqlite3", visibility_timeout=1.0, workers=3) as b:
        b.start()
        b.send({"name": "job/go", "data": {}})
        assert _wait_for(lambda: [r.status.value for r in b.list_runs()] == ["Completed"])
    assert calls == [1]  # no other worker took the message while the step ran
