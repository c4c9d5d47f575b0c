"""`stepkit ... --aws` and `runtime.send` against the emulated deployment."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import runtime
from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_TABLE, AppResources
from runtime.cli import cli
from runtime.durations import format_instant
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli

pytestmark = pytest.mark.aws

# The app `stepkit fire --aws` reads as this project's functions/ (STEPKIT_FUNCTIONS names
# this module): the schedule input and queue come from it, as the CDK app derives them.
crons = App("cronshop")


@crons.function(id="new-year", trigger=TriggerCron("TZ=Europe/Paris 0 0 1 1 *"))
def new_year(ctx: Context) -> dict[str, object]:
    return ctx.step.run("greet", lambda: {"cron": ctx.event.data["cron"], "ts": ctx.event.ts})


@crons.function(id="on-demand", trigger=TriggerEvent("job/requested"))
def on_demand(ctx: Context) -> str:
    return "ok"


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


def _deployed_crons(aws: AwsEmulators,
                    monkeypatch: pytest.MonkeyPatch) -> tuple[Harness, AppResources]:
    """``crons`` on the emulators, with the env the CLI's --aws reads (its functions/ too)."""
    h, backend = deploy_for_cli(crons, aws, monkeypatch, functions=__name__)
    return h, backend.resources


def test_fire_aws_sends_what_the_schedule_sends_and_the_run_completes(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, r = _deployed_crons(aws, monkeypatch)
    runner = CliRunner()
    sqs = h.backend.clients["sqs"]
    queue_url = sqs.get_queue_url(QueueName=r.function("new-year").queue)["QueueUrl"]
    (schedule,) = r.function("new-year").schedules
    deployed = h.backend.clients["scheduler"].get_schedule(Name=schedule.name)["Target"]

    before = int(time.time())
    fired = runner.invoke(cli, ["fire", "new-year", "--aws"])
    assert fired.exit_code == 0, fired.output
    run_id = fired.output.strip()
    # On the queue: the schedule's input as deployed, with the fire's time filled in.
    (record,) = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0)["Messages"]
    body = json.loads(record["Body"])
    at = datetime.fromisoformat(body["scheduled_time"].replace("Z", "+00:00"))
    assert before <= at.timestamp() <= time.time()
    assert record["Body"] == deployed["Input"].replace(
        "<aws.scheduler.scheduled-time>", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert deployed["Input"] == AppResources.for_app(crons).function("new-year").schedules[0].input

    h.settle()
    view = h.run(run_id)
    assert view.status == "Completed"
    assert view.output == {"cron": "TZ=Europe/Paris 0 0 1 1 *", "ts": int(at.timestamp()) * 1000}
    assert view.state.run.events[0]["name"] == "stepkit/scheduled.timer"

    as_json = runner.invoke(cli, ["fire", "new-year", "--aws", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert set(json.loads(as_json.output)) == {"run_id"}
    h.settle()

    no_cron = runner.invoke(cli, ["fire", "on-demand", "--aws"])
    assert no_cron.exit_code == 1
    assert "Error: function 'on-demand' has no cron trigger to fire" in no_cron.output
    unknown = runner.invoke(cli, ["fire", "nope", "--aws"])
    assert unknown.exit_code == 1
    assert "no function 'nope' in app 'cronshop' (registered: new-year, on-demand)" in (
        unknown.output)


def test_event_aws_shows_the_logged_event_and_the_runs_it_started(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, _ = _deployed_crons(aws, monkeypatch)  # the real clock: the CLI reads today's log
    runner = CliRunner()
    sent = runner.invoke(cli, ["send", "job/requested", "--data", '{"job": 7}', "--aws"])
    assert sent.exit_code == 0, sent.output
    event_id = sent.output.strip()
    h.settle()
    (run,) = h.runs("on-demand")

    shown = runner.invoke(cli, ["event", event_id, "--aws", "--json"])
    assert shown.exit_code == 0, shown.output
    found = json.loads(shown.output)
    assert (found["id"], found["name"], found["data"]) == (event_id, "job/requested", {"job": 7})
    assert [(x["run_id"], x["status"]) for x in found["runs"]] == [(run.id, "Completed")]
    assert found["waits"] is None  # not indexed by event in the table: said, not guessed
    text = runner.invoke(cli, ["event", event_id, "--aws"]).output
    assert "Name      job/requested" in text and run.id in text
    missing = runner.invoke(cli, ["event", "nope", "--aws"])
    assert missing.exit_code == 1 and "no event 'nope' in the event log" in missing.output
