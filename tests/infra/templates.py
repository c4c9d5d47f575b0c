"""The synthesized templates of a stepkit stack: each one as AWS receives it, or all in one.

The functions live in nested stacks (``infra/constructs/function_group.py``). The template
tests assert what a function may touch, wherever its resources live, so they read one flat
view: every nested stack's resources next to the root's, with each parameter replaced by
the value the root passes and each of the root's references to a nested output replaced by
that output's value, so a reference reads the same as within one template.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Template

from infra.stack import StepkitStack

NESTED_STACK = "AWS::CloudFormation::Stack"


def templates(stack: StepkitStack) -> dict[str, dict[str, Any]]:
    """Every template of the stack by its path: the root's first, then each group's."""
    out = {stack.node.path: Template.from_stack(stack).to_json()}
    for group in stack.groups.values():
        out[group.node.path] = Template.from_stack(group).to_json()
    return out


def _substitute(value: Any, refs: dict[str, Any], outputs: dict[tuple[str, str], Any]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in refs:
            return refs[value["Ref"]]
        if set(value) == {"Fn::GetAtt"} and tuple(value["Fn::GetAtt"]) in outputs:
            return outputs[tuple(value["Fn::GetAtt"])]
        return {k: _substitute(v, refs, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, refs, outputs) for v in value]
    return value


def flat(stack: StepkitStack) -> dict[str, Any]:
    """The root template with every nested stack's resources inlined (see the module doc).

    Raises:
        AssertionError: Two templates use the same logical id (the flat view would lose one).
    """
    root = Template.from_stack(stack).to_json()
    resources = {k: v for k, v in root["Resources"].items() if v["Type"] != NESTED_STACK}
    outputs: dict[tuple[str, str], Any] = {}
    nested: dict[str, Any] = {}
    for group in stack.groups.values():
        resource_id = stack.get_logical_id(group.nested_stack_resource)  # type: ignore[arg-type]
        template = Template.from_stack(group).to_json()
        passed = root["Resources"][resource_id]["Properties"].get("Parameters", {})
        body = _substitute(template["Resources"], passed, {})
        for name, output in template.get("Outputs", {}).items():
            outputs[(resource_id, f"Outputs.{name}")] = _substitute(output["Value"], passed, {})
        clash = (set(body) & set(resources)) | (set(body) & set(nested))
        assert not clash, f"logical ids in more than one template: {sorted(clash)}"
        nested.update(body)
    resources = _substitute(resources, {}, outputs)
    return {**root, "Resources": {**resources, **nested}}


def template_bytes(template: dict[str, Any]) -> int:
    """The template's size as the CDK CLI uploads it (JSON, compact)."""
    return len(json.dumps(template, separators=(",", ":")).encode())
