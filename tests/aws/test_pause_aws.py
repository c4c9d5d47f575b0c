"""`stepkit pause/resume --aws`: the table's pause gate, honoured by the deployed workers."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from runtime import App, Context, TriggerEvent
from runtime.cli import cli
from runtime.orchestration.pausing import PAUSE_CACHE_SECONDS, PAUSED_RETRY
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli

pytestmark = pytest.mark.aws

# The app `--aws` reads as this project's functions/ (STEPKIT_FUNCTIONS names this module).
shop = App("pauseshop")
shipped: list[str] = []


@shop.function(id="ship", trigger=TriggerEvent("order/paid"))
def ship(ctx: Context) -> str:
    return ctx.step.run("ship", lambda: shipped.append(ctx.event.data["order"]) or "shipped")


def test_pause_aws_holds_the_deployed_function_and_resume_lets_it_go_on(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped.clear()
    h, _ = deploy_for_cli(shop, aws, monkeypatch, functions=__name__)
    runner = CliRunner()

    paused = runner.invoke(cli, ["pause", "ship", "--reason", "carrier outage", "--aws",
                                 "--json"])
    assert paused.exit_code == 0, paused.output
    assert json.loads(paused.output)["paused"]["reason"] == "carrier outage"
    listed = json.loads(runner.invoke(cli, ["functions", "--aws", "--json"]).output)
    assert [f["paused"]["reason"] for f in listed["functions"]] == ["carrier outage"]

    h.clock.advance(PAUSE_CACHE_SECONDS)
    h.send("order/paid", {"order": "o1"})
    h.advance("5m")
    assert h.runs("ship") == [] and shipped == []

    resumed = runner.invoke(cli, ["resume", "ship", "--aws"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.strip() == "ship resumed"
    listed = json.loads(runner.invoke(cli, ["functions", "--aws", "--json"]).output)
    assert [f["paused"] for f in listed["functions"]] == [None]
    h.advance(f"{PAUSED_RETRY + PAUSE_CACHE_SECONDS}s")
    assert h.only_run("ship").status == "Completed"
    assert shipped == ["o1"]
    unknown = runner.invoke(cli, ["pause", "nope", "--aws"])
    assert unknown.exit_code == 1 and "no function 'nope'" in unknown.output
    h.close()
