"""`stepkit send|runs|run --aws` and `runtime.send` against the emulated deployment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import runtime
from runtime import App, Context, TriggerEvent
from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_TABLE
from runtime.cli import cli
from runtime.durations import format_instant
from runtime.testing import Harness
from runtime.testing.aws import AwsBackend
from runtime.testing.emulators import AwsEmulators

pytestmark = pytest.mark.aws


def test_cli_sends_and_inspects_runs_of_the_deployed_app(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup"))
    def welcome(ctx: Context) -> str:
        ctx.step.run("greet", lambda: "hi")
        return ctx.event.data["user_id"]

    # The CLI reads with the real clock, so the runs must be recent (not past their TTL).
    h = Harness.aws(app, aws)
    assert isinstance(h.backend, AwsBackend)
    r = h.backend.resources
    monkeypatch.setenv(ENV_APP, r.app_id)
    monkeypatch.setenv(ENV_BUS, r.bus)
    monkeypatch.setenv(ENV_TABLE, r.table)
    runner = CliRunner()

    sent = runner.invoke(cli, ["send", "user/signup", "--data", '{"user_id": "ada"}', "--aws"])
    assert sent.exit_code == 0, sent.output
    event_id = sent.output.strip()
    ids = runtime.send({"name": "user/signup", "data": {"user_id": "bob"}})
    assert len(ids) == 1
    h.settle()

    listed = runner.invoke(cli, ["runs", "--aws", "--json"])
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    assert {r["status"] for r in runs} == {"Completed"}
    assert len(runs) == 2
    shown = runner.invoke(cli, ["run", runs[0]["run_id"], "--aws"])
    assert shown.exit_code == 0, shown.output
    assert "greet" in shown.output and "Completed" in shown.output
    detail = runner.invoke(cli, ["run", runs[0]["run_id"], "--aws", "--json"])
    events = [json.loads(detail.output)["events"][0]["id"]]
    assert events[0] in {event_id, ids[0]}
    missing = runner.invoke(cli, ["run", "nope", "--aws"])
    assert missing.exit_code == 1 and "no run 'nope'" in missing.output

    recent = runner.invoke(cli, ["runs", "--aws", "--since", "1h", "--json"])
    assert recent.exit_code == 0, recent.output
    assert [r["run_id"] for r in json.loads(recent.output)] == [r["run_id"] for r in runs]
    later = format_instant(time.time() + 3600)
    none = runner.invoke(cli, ["runs", "--aws", "--since", later])
    assert none.exit_code == 0, none.output
    assert none.output.strip() == "no runs"
    bad = runner.invoke(cli, ["runs", "--aws", "--since", "lately"])
    assert bad.exit_code == 2 and "Invalid value for '--since'" in bad.output


def test_runs_aws_say_which_runs_flow_control_holds_back(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App("shop")

    @app.function(id="paced", trigger=TriggerEvent("job/paced"),
                  throttle={"limit": 1, "period": "1h"}, rate_limit={"limit": 2, "period": "1h"})
    def paced(ctx: Context) -> str:
        return "ok"

    h = Harness.aws(app, aws)  # the real clock: the CLI reads with it
    assert isinstance(h.backend, AwsBackend)
    r = h.backend.resources
    monkeypatch.setenv(ENV_APP, r.app_id)
    monkeypatch.setenv(ENV_BUS, r.bus)
    monkeypatch.setenv(ENV_TABLE, r.table)
    for _ in range(3):
        h.send("job/paced", {})
    listed = CliRunner().invoke(cli, ["runs", "--aws", "--json"])
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    kinds = sorted((r["status"], (r["waiting"] or {}).get("kind")) for r in runs)
    assert kinds == [("Completed", None), ("Running", "throttled"), ("Skipped", "skipped")]
    table = CliRunner().invoke(cli, ["runs", "--aws"])
    assert "throttled until" in table.output and "rate limit of 2 per 1:00:00" in table.output


def test_cli_cancels_reruns_invokes_and_lists_events_of_the_deployed_app(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App("shop")

    @app.function(id="drip", trigger=TriggerEvent("user/signup"))
    def drip(ctx: Context) -> str:
        ctx.step.sleep("wait-a-day", "1d")
        return str(ctx.event.data.get("user_id"))

    h = Harness.aws(app, aws)  # the real clock: the CLI reads with it
    assert isinstance(h.backend, AwsBackend)
    r = h.backend.resources
    for name, value in ((ENV_APP, r.app_id), (ENV_BUS, r.bus), (ENV_TABLE, r.table)):
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    h.send("user/signup", {"user_id": "ada"})
    [run] = h.runs("drip")
    listed = json.loads(runner.invoke(cli, ["events", "--aws", "--json"]).output)
    assert [e["name"] for e in listed] == ["user/signup"]

    again = runner.invoke(cli, ["rerun", run.id, "--aws"])
    assert again.exit_code == 0, again.output
    invoked = runner.invoke(cli, ["invoke", "drip", "--data", '{"user_id": "bob"}', "--aws"])
    assert invoked.exit_code == 0, invoked.output
    stopped = runner.invoke(cli, ["cancel", run.id, "--aws"])
    assert stopped.exit_code == 0, stopped.output
    assert "cancel sent to its function's queue" in stopped.output
    h.settle()
    assert h.run(run.id).status == "Cancelled"
    others = {v.id: v for v in h.runs("drip") if v.id != run.id}
    assert set(others) == {again.output.strip(), invoked.output.strip()}
    assert all(v.status == "Running" for v in others.values())  # asleep, as the first was
    assert others[invoked.output.strip()].state.run.events[0]["data"] == {"user_id": "bob"}
    unknown = runner.invoke(cli, ["invoke", "nope", "--aws"])
    assert unknown.exit_code == 1 and "no queue" in unknown.output


def test_functions_aws_lists_the_projects_functions(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the example app's project
    result = CliRunner().invoke(cli, ["functions", "--aws", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["app_id"] == "demo"
    assert "process-order" in [f["id"] for f in found["functions"]]
