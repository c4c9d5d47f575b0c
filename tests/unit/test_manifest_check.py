"""``stepkit check --deployed-manifest`` / ``--aws``: step changes since the deploy, as warnings."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from runtime.cli import cli
from runtime.manifest import METADATA_KEY

CHANGED = '''
from runtime import App, Context, TriggerEvent

app = App("shop")


@app.function(id="checkout", trigger=TriggerEvent("shop/order.placed"), retries=2,
              idempotency="event.data.order_id")
def checkout(ctx: Context) -> None:
    ctx.step.run("reserve-stock", lambda: None)
    ctx.step.run("cool-down", lambda: None)
    ctx.step.run("charge-customer", lambda: None)
'''
DEPLOYED = {"version": 1, "app": "shop", "functions": {
    "checkout": {"steps": [
        {"id": "reserve-stock", "kind": "run", "order": 0},
        {"id": "cool-down", "kind": "sleep", "order": 1},
        {"id": "charge-card", "kind": "run", "order": 2},
    ]},
    "refund": {"steps": []},
}}


def _ours(name: str) -> bool:
    return name == "functions" or name.startswith("functions.")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "functions"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "shop.py").write_text(textwrap.dedent(CHANGED))
    (tmp_path / "deployed.json").write_text(json.dumps(DEPLOYED))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    saved = {m: sys.modules.pop(m) for m in [m for m in sys.modules if _ours(m)]}
    yield tmp_path
    for m in [m for m in sys.modules if _ours(m)]:
        del sys.modules[m]
    sys.modules.update(saved)


EXPECTED = [
    ("warning", "function-removed", "functions", 0, "refund"),
    ("warning", "step-kind", "functions/shop.py", 11, "checkout"),
    ("warning", "step-renamed", "functions/shop.py", 12, "checkout"),
]


def test_step_changes_since_the_deployed_manifest_are_warnings_naming_function_and_step(
    project: Path,
) -> None:
    result = CliRunner().invoke(cli, ["check", "--json", "--deployed-manifest",
                                      "deployed.json"])
    assert result.exit_code == 0, result.output  # warnings do not fail the check
    found = [(f["severity"], f["rule"], f["file"], f["line"], f["function"])
             for f in json.loads(result.output)]
    assert found == EXPECTED
    text = CliRunner().invoke(cli, ["check", "--deployed-manifest", "deployed.json"]).output
    assert ("functions/shop.py:12: warning [step-renamed] function 'checkout': step "
            "'charge-card' renamed to 'charge-customer'?") in text
    assert "functions/shop.py:11: warning [step-kind] function 'checkout': step 'cool-down' " \
        "changed kind from sleep to run" in text


def test_without_a_deployed_manifest_nothing_is_compared(project: Path) -> None:
    result = CliRunner().invoke(cli, ["check", "--json"])
    assert [f for f in json.loads(result.output) if f["rule"].startswith("step-")] == []


def test_with_aws_the_deployed_stacks_manifest_is_compared(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("STEPKIT_STAGE", raising=False)
    template = {"Metadata": {METADATA_KEY: DEPLOYED},
                "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
    with mock_aws():
        first = CliRunner().invoke(cli, ["check", "--json", "--aws"])
        assert [f["rule"] for f in json.loads(first.output)
                if f["rule"] == "deployed-manifest"] == ["deployed-manifest"]  # none yet
        boto3.client("cloudformation").create_stack(
            StackName="stepkit-shop", TemplateBody=json.dumps(template))
        result = CliRunner().invoke(cli, ["check", "--json", "--aws"])
    assert result.exit_code == 0, result.output
    found = [(f["severity"], f["rule"], f["file"], f["line"], f["function"])
             for f in json.loads(result.output)]
    assert found == EXPECTED
