"""Pausing through the dev server: the API's routes, the functions listing, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runtime import App, Context, TriggerEvent
from runtime.cli import cli
from runtime.devserver.background import serve_in_background
from runtime.orchestration.pausing import PAUSE_CACHE_SECONDS, PAUSED_RETRY
from tests.devserver.test_api import Env

app = App("pausetest")
mailed: list[str] = []


@app.function(id="mailer", trigger=TriggerEvent("user/signup"))
def mailer(ctx: Context) -> str:
    return ctx.step.run("mail", lambda: mailed.append(ctx.event.data["user"]) or "sent")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    mailed.clear()
    e = Env(tmp_path, app)
    yield e
    e.client.close()
    e.backend.close()


def _functions(env: Env) -> dict[str, Any]:
    resp = env.client.get("/api/functions")
    assert resp.status_code == 200, resp.text
    return {f["id"]: f for f in resp.json()["functions"]}


def test_pause_holds_new_work_and_resume_lets_it_run(env: Env) -> None:
    assert _functions(env)["mailer"]["paused"] is None
    resp = env.client.post("/api/functions/mailer/pause", json={"reason": "SMTP down"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"function_id": "mailer",
                           "paused": {"reason": "SMTP down", "since": "2026-03-02T08:00:00.000Z"}}
    assert _functions(env)["mailer"]["paused"] == resp.json()["paused"]

    env.advance(f"{PAUSE_CACHE_SECONDS}s")
    env.send("user/signup", {"user": "ada"})
    env.advance("10m")
    assert env.runs() == [] and mailed == []

    resp = env.client.post("/api/functions/mailer/resume")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"function_id": "mailer", "paused": None, "resumed": True}
    assert _functions(env)["mailer"]["paused"] is None
    env.advance(f"{PAUSED_RETRY + PAUSE_CACHE_SECONDS}s")
    assert [r["status"] for r in env.runs()] == ["Completed"]
    assert mailed == ["ada"]
    assert env.client.post("/api/functions/mailer/resume").json()["resumed"] is False


def test_pause_without_a_body_and_bad_requests(env: Env) -> None:
    resp = env.client.post("/api/functions/mailer/pause")
    assert resp.status_code == 200, resp.text
    assert resp.json()["paused"]["reason"] is None
    bad = env.client.post("/api/functions/mailer/pause", json={"reason": 3})
    assert bad.status_code == 400
    unknown = env.client.post("/api/functions/nope/pause")
    assert unknown.status_code == 404, unknown.text


def test_cli_pause_functions_and_resume(env: Env) -> None:
    runner = CliRunner()
    with serve_in_background(env.backend) as url:
        paused = runner.invoke(cli, ["pause", "mailer", "--reason", "SMTP down", "--url", url])
        assert paused.exit_code == 0, paused.output
        assert paused.output.strip() == "mailer paused since 2026-03-02T08:00:00.000Z: SMTP down"
        listed = runner.invoke(cli, ["functions", "--url", url])
        assert listed.exit_code == 0, listed.output
        assert "paused: mailer since 2026-03-02T08:00:00.000Z: SMTP down" in listed.output
        resumed = runner.invoke(cli, ["resume", "mailer", "--url", url, "--json"])
        assert resumed.exit_code == 0, resumed.output
        assert '"resumed": true' in resumed.output
        again = runner.invoke(cli, ["resume", "mailer", "--url", url])
        assert again.output.strip() == "mailer was not paused"
        unknown = runner.invoke(cli, ["pause", "nope", "--url", url])
        assert unknown.exit_code == 1
