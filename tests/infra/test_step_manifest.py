"""Synth records the step manifest with the stack, and warns of the steps a deploy changes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra.app import warn_of_step_changes, write_manifest
from infra.stack import StackSettings, StepkitStack
from runtime import App, Context, TriggerEvent
from runtime.manifest import MANIFEST_FILE, METADATA_KEY, build_manifest, from_template

pytestmark = pytest.mark.xdist_group("cdk")


def _noop() -> None:
    return None


def checkout(ctx: Context) -> None:
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep("cool-down", "1h")
    ctx.step.run("charge-customer", _noop)


def _app() -> App:
    app = App("shop")
    app.function(id="checkout", trigger=TriggerEvent("shop/order.placed"))(checkout)
    return app


@pytest.fixture(scope="module")
def stack() -> StepkitStack:
    return StepkitStack(cdk.App(), "shop", app=_app(), settings=StackSettings(bundle=False))


def test_the_root_template_and_the_file_carry_the_apps_step_manifest(
    stack: StepkitStack, tmp_path: Path,
) -> None:
    template: dict[str, Any] = Template.from_stack(stack).to_json()
    assert template["Metadata"][METADATA_KEY] == build_manifest(_app()).to_json()
    assert from_template(json.dumps(template)) == stack.manifest
    path = write_manifest(stack, tmp_path)
    assert path == tmp_path / MANIFEST_FILE
    assert json.loads(path.read_text()) == stack.manifest.to_json()


def test_synth_warns_of_each_deployed_step_the_code_changes(
    stack: StepkitStack, tmp_path: Path,
) -> None:
    deployed = {"version": 1, "app": "shop", "functions": {"checkout": {"steps": [
        {"id": "reserve-stock", "kind": "run", "order": 0},
        {"id": "cool-down", "kind": "sleep", "order": 1},
        {"id": "charge-card", "kind": "run", "order": 2},
    ]}}}
    path = tmp_path / "deployed.json"
    path.write_text(json.dumps(deployed))
    warn_of_step_changes(stack, str(path))
    # Read from the stack's node: the module's stack was synthesized by the test before.
    texts = [str(m.data) for m in stack.node.metadata if m.type == "aws:cdk:warning"]
    assert any("function 'checkout': step 'charge-card' renamed to 'charge-customer'?" in t
               for t in texts), texts
