"""A retired function refuses a by-hand start on AWS as in the dev server: `stepkit invoke`
says why and queues nothing (it used to queue a START the worker then silently dropped)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from runtime import App, Context, TriggerEvent
from runtime.cli import cli
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli

pytestmark = pytest.mark.aws

# The app `--aws` reads as this project's functions/ (STEPKIT_FUNCTIONS names this module).
drained = App("drained")


@drained.function(id="old", trigger=TriggerEvent("order/created"), retired=True)
def old(ctx: Context) -> str:
    return "ran"


@drained.function(id="new", trigger=TriggerEvent("order/created"))
def new(ctx: Context) -> str:
    return "ran"


def test_invoking_a_retired_function_is_refused_and_queues_nothing(
        aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> None:
    h, _ = deploy_for_cli(drained, aws, monkeypatch, functions=__name__)
    runner = CliRunner()
    refused = runner.invoke(cli, ["invoke", "old", "--aws"])
    assert refused.exit_code == 1 and "is retired" in refused.output, refused.output
    started = runner.invoke(cli, ["invoke", "new", "--aws"])
    assert started.exit_code == 0, started.output
    h.settle()
    assert h.runs("old") == [] and [x.output for x in h.runs("new")] == ["ran"]
    h.close()
