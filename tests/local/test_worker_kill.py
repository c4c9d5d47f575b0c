"""A real worker process killed with SIGKILL mid-step; another process resumes the run."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.orchestration.clock import FakeClock

T0 = 1_780_000_000.0


def build_app(marker_dir: Path) -> App:
    app = App("crash")

    def charge() -> str:
        marker = marker_dir / f"charge-{os.getpid()}"
        marker.write_text("started")
        if os.environ.get("STEPKIT_TEST_HANG") == "1":
            time.sleep(60)  # killed here: after the side effect began, before any record
        return "charged"

    @app.function(id="pay", trigger=TriggerEvent("pay/go"))
    def pay(ctx: Context) -> list[str]:
        first = ctx.step.run("reserve", lambda: "reserved")
        second = ctx.step.run("charge", charge)
        return [first, second]

    return app


def _worker(db: str, marker_dir: str) -> None:
    os.environ["STEPKIT_TEST_HANG"] = "1"
    backend = LocalBackend(build_app(Path(marker_dir)), db, clock=FakeClock(T0))
    backend.run_until_idle()


def test_sigkilled_worker_process_resumes_elsewhere(tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    markers = tmp_path / "markers"
    markers.mkdir()
    first = LocalBackend(build_app(markers), db, clock=FakeClock(T0))
    first.send({"name": "pay/go", "id": "evt-1"})  # queued; nothing has run yet
    first.close()

    proc = multiprocessing.get_context("fork").Process(target=_worker, args=(db, str(markers)))
    proc.start()
    deadline = time.monotonic() + 30
    while not any(markers.iterdir()):
        assert time.monotonic() < deadline, "worker never reached the charge step"
        assert proc.is_alive(), f"worker exited early with {proc.exitcode}"
        time.sleep(0.02)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL

    # A new worker on the same file, after the dead one's lease (300 s) has run out.
    resumed = LocalBackend(build_app(markers), db, clock=FakeClock(T0 + 400))
    resumed.run_until_idle()
    state = resumed.get_run(resumed.list_runs()[0].run_id)
    assert state is not None
    assert state.run.status == "Completed"
    assert state.run.output == ["reserved", "charged"]
    assert sorted(state.steps) == ["charge", "reserve"]
    assert state.steps["charge"].attempt == 0  # one death, unmarked: not charged
    assert len(list(markers.iterdir())) == 2  # the charge ran in both processes
    assert resumed.dead_letters() == []
    resumed.close()
