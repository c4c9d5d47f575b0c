"""`stepkit dashboard --aws`: the dashboard over the deployed app, in Chromium, on the emulators.

The page is served over :class:`~runtime.control.aws.AwsControl` (as the command serves it) and
driven by chromedriver (:mod:`tests.devserver.test_dashboard_actions`'s small client); the
app's runs are started and worked by the AWS harness, the deployed stack's stand-in.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.resources import ENV_TABLE
from runtime.cli import cli
from runtime.cli.dashboard import aws_dashboard
from runtime.devserver.background import serve_dashboard_in_background
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli
from tests.devserver.test_dashboard_actions import Browser, browser

__all__ = ["browser"]  # the chromedriver session fixture, shared with the dev dashboard's tests
pytestmark = pytest.mark.aws

# The app the dashboard reads as this project's functions/ (STEPKIT_FUNCTIONS names this module).
shop = App("dashshop")


@shop.function(id="drip", trigger=TriggerEvent("user/signup"), retries=2)
def drip(ctx: Context) -> str:
    ctx.step.run("greet", lambda: "hi")
    ctx.step.sleep("wait-a-day", "1d")
    return str(ctx.event.data.get("user_id"))


@pytest.fixture
def deployed(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """``shop`` on the emulators, with the env ``--aws`` reads; the real clock (TTLs)."""
    h, _ = deploy_for_cli(shop, aws, monkeypatch, functions=__name__)
    yield h


@pytest.fixture
def dashboard(deployed: Harness) -> Iterator[str]:
    """The dashboard as `stepkit dashboard --aws` builds it, refreshing every second."""
    control, about = aws_dashboard()
    with serve_dashboard_in_background(control, {**about, "refresh_seconds": 1}) as url:
        yield url


def test_dashboard_aws_shows_a_deployed_run_its_steps_and_cancels_it(
    deployed: Harness, dashboard: str, browser: Browser
) -> None:
    deployed.send("user/signup", {"user_id": "ada"})
    [run] = deployed.runs("drip")
    assert run.status == "Running"  # asleep in "wait-a-day"
    table = deployed.backend.resources.table  # type: ignore[attr-defined]

    browser.get(f"{dashboard}/#run={run.id}")
    target = browser.wait_text("#target", f"table {table}")
    assert "AWS: app 'dashshop'" in target and "us-east-1" in target
    assert browser.text("#target-kind") == "AWS"
    browser.find(f'#runs tr[data-run-id="{run.id}"]')  # listed in the runs table
    browser.find('tr[data-step-key="greet"]')
    browser.find('tr[data-step-key="wait-a-day"]')
    assert browser.text('tr[data-step-key="greet"]').count("1 / 3") == 1  # retries known
    # Skipping a sleep is the dev server's: shown, disabled, saying why.
    why = browser.js('const b = document.querySelector(\'[data-skip="wait-a-day"]\');'
                     "return [b.disabled, b.title]")
    assert why[0] is True and "sleeps its time" in why[1]

    browser.click("#cancel-run")
    browser.wait_text("#run-message", "cancel sent to its function's queue")
    deployed.settle()  # the function's worker applies the cancel
    assert deployed.run(run.id).status == "Cancelled"
    browser.wait_text("#run-status", "Cancelled")  # seen by the next refresh


def test_dashboard_aws_event_detail_says_what_a_deployed_table_does_not_know(
    deployed: Harness, dashboard: str
) -> None:
    [event_id] = deployed.send("user/signup", {"user_id": "bob"})
    [run] = deployed.runs("drip")
    with httpx.Client(base_url=dashboard) as http:
        about = http.get("/api/about").json()
        detail = http.get(f"/api/events/{event_id}").json()
        listed = http.get("/api/events?summary=true").json()["events"]
        functions = http.get("/api/functions").json()
        refused = http.post(f"/api/runs/{run.id}/steps/wait-a-day/skip",
                            headers={"Origin": "http://evil.example"})
    assert about["target"] == "aws" and about["app_id"] == "dashshop"
    assert set(about["disabled"]) == {"skip_sleep", "event_waits", "event_runs"}
    assert detail["data"] == {"user_id": "bob"}
    assert [r["run_id"] for r in detail["runs"]] == [run.id] and detail["waits"] is None
    assert [e["id"] for e in listed] == [event_id]
    assert [f["id"] for f in functions["functions"]] == ["drip"]
    assert functions["functions"][0]["windows"] == []
    assert refused.status_code == 403  # the dev server's guards hold here too


def test_dashboard_aws_lists_a_dead_letter_and_redrives_it(
    deployed: Harness, dashboard: str, browser: Browser
) -> None:
    backend = deployed.backend
    assert isinstance(backend, AwsBackend)
    sqs = backend.clients["sqs"]
    fn = backend.resources.function("drip")
    dlq_url = sqs.get_queue_url(QueueName=fn.dlq)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody="not json")

    browser.get(dashboard)
    browser.wait_text("#dlq", "1 message in dead-letter queues")
    browser.click("#dlq-show")
    row = browser.wait_text("#dead-letters tr[data-dlq-id]", "unreadable")
    assert fn.dlq in row
    browser.click("#dead-letters [data-redrive]")
    browser.wait_text("#dlq-result", "redriven: 1 message")
    queue_url = sqs.get_queue_url(QueueName=fn.queue)["QueueUrl"]
    back = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages", [])
    assert [m["Body"] for m in back] == ["not json"]  # on its function's queue again


def test_dashboard_aws_names_a_missing_table_before_serving(
    deployed: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TABLE, "nope-state")
    result = CliRunner().invoke(cli, ["dashboard", "--aws", "--port", "0"])
    assert result.exit_code == 1
    assert "table nope-state not found in this account and region" in result.output
    assert "stepkit dashboard at" not in result.output  # nothing was served


def test_the_readmes_dashboard_command_prints_what_it_shows(deployed: Harness) -> None:
    """`stepkit dashboard --aws` as the README shows it, run for real against the emulators."""
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = re.search(r"```\n(\$ [^\n]*stepkit dashboard --aws\n.*?)```", readme, re.S)
    assert block is not None, "the README's dashboard transcript"
    transcript = block.group(1).splitlines()
    # The README's lines with its example values as the placeholders they stand for.
    shown = [re.escape(line) for line in transcript[1:]]
    shown[0] = shown[0].replace("8289", r"(\d+)")
    shown[1] = (shown[1].replace("'demo'", "'(?P<app>[^']+)'")
                .replace(r",\ stage\ 'prod'", r"(?:,\ stage\ '[^']+')?")
                .replace("eu\\-west\\-1", "(?P<region>[a-z0-9-]+)")
                .replace("demo\\-prod\\-state",  # a custom endpoint (the emulators') is named
                         r"(?P<table>[A-Za-z0-9._-]+)(?:\ at\ http://[^;]+)?"))
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "dashboard", "--aws", "--port", "0"], cwd=root,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert server.stdout is not None
        first, second = server.stdout.readline().rstrip(), server.stdout.readline().rstrip()
        found = re.fullmatch(shown[0], first)
        assert found, (first, shown[0])
        about = re.fullmatch(shown[1], second)
        assert about, (second, shown[1])
        r = deployed.backend.resources  # type: ignore[attr-defined]
        assert (about["app"], about["table"]) == (r.app_id, r.table)
        api = httpx.get(f"http://127.0.0.1:{found.group(1)}/api/about", timeout=10).json()
        assert api["target"] == "aws" and api["app_id"] == r.app_id
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
