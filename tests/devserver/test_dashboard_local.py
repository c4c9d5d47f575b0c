"""`stepkit dashboard` without --aws: the dev dashboard over a local database, no workers."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.cli import cli
from runtime.cli.dashboard import local_dashboard
from runtime.devserver.background import serve_dashboard_in_background

shop = App("localdash")


@shop.function(id="greet", trigger=TriggerEvent("user/signup"))
def greet(ctx: Context) -> str:
    return ctx.step.run("hello", lambda: "hi")


def _workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("stepkit-")]


def test_dashboard_serves_a_local_database_and_starts_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "dev.sqlite3"
    with LocalBackend(shop, db) as backend:  # what a `stepkit dev` left in the file
        backend.send({"name": "user/signup", "data": {}})
        backend.run_until_idle()
    monkeypatch.setenv("STEPKIT_FUNCTIONS", __name__)
    with ExitStack() as stack:
        control, about = local_dashboard(db, None, stack)
        with serve_dashboard_in_background(control, about) as url, \
                httpx.Client(base_url=url) as http:
            shown = http.get("/api/about").json()
            [done] = http.get("/api/runs").json()["runs"]
            invoked = http.post("/api/functions/greet/invoke", json={"data": {}}).json()
            runs = {r["run_id"]: r["status"] for r in http.get("/api/runs").json()["runs"]}
            workers = _workers()
    assert shown["target"] == "local" and str(db) in shown["label"]
    assert shown["refresh_seconds"] == 2
    assert done["status"] == "Completed"
    # Queued in the file for a `stepkit dev` to run: nothing here started it...
    assert runs == {done["run_id"]: "Completed"} and workers == []
    with LocalBackend(shop, db) as backend:  # ...until a dev server works the file
        backend.run_until_idle()
        assert backend.get_run(invoked["run_id"]) is not None


def test_dashboard_without_a_database_says_where_to_point_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    result = CliRunner().invoke(cli, ["dashboard", "--db", str(missing)])
    assert result.exit_code == 1
    assert f"no database at {missing}" in result.output and "--aws" in result.output
