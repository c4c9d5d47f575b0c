"""A 200-function app synthesizes within every CloudFormation, SQS, IAM and EventBridge limit.

150 event-triggered functions (some with flow control and their own permissions) and 50 cron
functions, synthesized once; every template (the root and each nested stack) is checked
against every limit of ``runtime.deploy_limits``, and a failure names the limit, the
template and the resource. Policy sizes are counted as AWS counts them once CloudFormation
has resolved the template: each ``Ref``/``Fn::GetAtt`` of an ARN or name is replaced by the
longest value it can take.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from infra.stack import StackSettings, StepkitStack
from runtime import App, AwsOptions, TriggerCron, TriggerEvent
from runtime.deploy_limits import (
    MAX_DASHBOARD_WIDGETS,
    MAX_MANAGED_POLICIES_PER_ROLE,
    MAX_MANAGED_POLICY_BYTES,
    MAX_MAPPINGS,
    MAX_OUTPUTS,
    MAX_PARAMETERS,
    MAX_QUEUE_POLICY_BYTES,
    MAX_QUEUE_POLICY_STATEMENTS,
    MAX_RESOURCES,
    MAX_ROLE_INLINE_POLICY_BYTES,
    MAX_RULES_PER_BUS,
    MAX_TARGETS_PER_RULE,
    MAX_TEMPLATE_BYTES,
    RESOURCES_PER_GROUP,
    FunctionShape,
    function_group,
)
from runtime.manifest import METADATA_BUDGET_BYTES, METADATA_KEY
from tests.infra.templates import flat, template_bytes, templates

pytestmark = pytest.mark.xdist_group("cdk")

EVENT_FUNCTIONS, CRON_FUNCTIONS = 150, 50
#: What a pseudo parameter stands for at worst: the longest partition (aws-us-gov), region
#: (ap-southeast-2) and an account id.
PSEUDO_MAX = {"AWS::Partition": 10, "AWS::Region": 14, "AWS::AccountId": 12,
              "AWS::URLSuffix": 16}
#: What another reference stands for at worst once resolved: an ARN in the longest
#: partition and region with an 80-character resource name.
RESOLVED_MAX = 140


def _noop(ctx: Any) -> None:
    return None


def big_app() -> App:
    """150 event-triggered and 50 cron functions, ids as long as real ones tend to be."""
    app = App("bigshop")
    for i in range(EVENT_FUNCTIONS):
        flow: dict[str, Any] = {}
        if i % 5 == 0:
            flow["aws"] = AwsOptions(max_concurrency=10, sqs_batch_size=5, policies=[
                {"actions": ["ses:SendEmail"], "resources": ["*"]}])
        app.function(id=f"handle-order-event-number-{i:03d}",
                     trigger=TriggerEvent(f"shop/order.step-{i:03d}"), **flow)(_noop)
    for i in range(CRON_FUNCTIONS):
        app.function(id=f"nightly-report-job-{i:03d}",
                     trigger=TriggerCron(f"{i % 60} 3 * * *"))(_noop)
    return app


@pytest.fixture(scope="module")
def synthesized() -> tuple[StepkitStack, dict[str, dict[str, Any]], float]:
    started = time.monotonic()
    stack = StepkitStack(cdk.App(), "big", app=big_app(), settings=StackSettings(bundle=False))
    found = templates(stack)
    return stack, found, time.monotonic() - started


def _resolve(value: Any) -> Any:
    """The value as CloudFormation resolves it, each reference as long as it can be."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return "x" * PSEUDO_MAX.get(value["Ref"], RESOLVED_MAX)
        if set(value) == {"Fn::GetAtt"}:
            return "x" * RESOLVED_MAX
        if set(value) == {"Fn::Join"}:
            separator, parts = value["Fn::Join"]
            return separator.join(str(_resolve(p)) for p in parts)
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


def _resolved_size(document: Any) -> int:
    """A policy document's size as IAM and SQS count it: no whitespace, tokens resolved."""
    return len(json.dumps(_resolve(document), separators=(",", ":")))


def _over(limit: str, used: int, maximum: int, where: str) -> str | None:
    return f"{limit}: {used} > {maximum} in {where}" if used > maximum else None


def _template_findings(path: str, template: dict[str, Any]) -> list[str | None]:
    res = template["Resources"]
    found = [
        _over("CloudFormation resources per template", len(res), MAX_RESOURCES, path),
        _over("CloudFormation template size (S3), bytes", template_bytes(template),
              MAX_TEMPLATE_BYTES, path),
        _over("CloudFormation outputs per template", len(template.get("Outputs", {})),
              MAX_OUTPUTS, path),
        _over("CloudFormation parameters per template", len(template.get("Parameters", {})),
              MAX_PARAMETERS, path),
        _over("CloudFormation mappings per template", len(template.get("Mappings", {})),
              MAX_MAPPINGS, path),
    ]
    for rid, r in res.items():
        p = r.get("Properties", {})
        where = f"{path}/{rid}"
        if r["Type"] == "AWS::SQS::QueuePolicy":
            found.append(_over("SQS statements per queue policy",
                               len(p["PolicyDocument"]["Statement"]),
                               MAX_QUEUE_POLICY_STATEMENTS, where))
            found.append(_over("SQS queue policy size, bytes",
                               _resolved_size(p["PolicyDocument"]), MAX_QUEUE_POLICY_BYTES,
                               where))
        if r["Type"] == "AWS::IAM::ManagedPolicy":
            found.append(_over("IAM managed policy size, characters",
                               _resolved_size(p["PolicyDocument"]), MAX_MANAGED_POLICY_BYTES,
                               where))
        if r["Type"] == "AWS::IAM::Role":
            found.append(_over("IAM managed policies per role",
                               len(p.get("ManagedPolicyArns", [])),
                               MAX_MANAGED_POLICIES_PER_ROLE, where))
        if r["Type"] == "AWS::Events::Rule":
            found.append(_over("EventBridge targets per rule", len(p.get("Targets", [])),
                               MAX_TARGETS_PER_RULE, where))
        if r["Type"] == "AWS::CloudWatch::Dashboard":
            body = json.dumps(p["DashboardBody"])
            found.append(_over("CloudWatch widgets per dashboard", body.count('\\"type\\"'),
                               MAX_DASHBOARD_WIDGETS, where))
    return found


def test_every_template_is_within_every_cloudformation_sqs_and_eventbridge_limit(
    synthesized: tuple[StepkitStack, dict[str, dict[str, Any]], float],
) -> None:
    stack, found, _ = synthesized
    assert len(stack.workers) == EVENT_FUNCTIONS + CRON_FUNCTIONS
    assert len(found) > 1  # the functions are in nested stacks
    findings = [f for path, t in found.items() for f in _template_findings(path, t) if f]
    rules = [r for t in found.values() for r in t["Resources"].values()
             if r["Type"] == "AWS::Events::Rule"]
    assert len(rules) == EVENT_FUNCTIONS + 1  # one per event-triggered function, the router
    findings.append(_over("EventBridge rules per event bus", len(rules), MAX_RULES_PER_BUS,
                          "the app's bus"))
    assert [f for f in findings if f] == []


def test_every_roles_inline_policies_together_are_within_iams_limit(
    synthesized: tuple[StepkitStack, dict[str, dict[str, Any]], float],
) -> None:
    stack, _, _ = synthesized
    resources = flat(stack)["Resources"]
    roles = [k for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"]
    assert len(roles) > EVENT_FUNCTIONS + CRON_FUNCTIONS
    findings = []
    for role in roles:
        inline = [v["Properties"]["PolicyDocument"] for v in resources.values()
                  if v["Type"] == "AWS::IAM::Policy"
                  and {"Ref": role} in v["Properties"]["Roles"]]
        inline += [p["PolicyDocument"] for p in
                   resources[role]["Properties"].get("Policies", [])]
        findings.append(_over("IAM inline policy size per role (aggregate), characters",
                              sum(_resolved_size(d) for d in inline),
                              MAX_ROLE_INLINE_POLICY_BYTES, role))
    assert [f for f in findings if f] == []


def test_the_delivery_dlq_has_one_statement_for_every_rule_of_the_apps_bus(
    synthesized: tuple[StepkitStack, dict[str, dict[str, Any]], float],
) -> None:
    stack, found, elapsed = synthesized
    root = found[stack.node.path]["Resources"]
    delivery = stack.get_logical_id(
        stack.delivery.queue.node.default_child)  # type: ignore[arg-type]
    (policy,) = [v["Properties"] for v in root.values() if v["Type"] == "AWS::SQS::QueuePolicy"
                 and {"Ref": delivery} in v["Properties"]["Queues"]]
    events = [s for s in policy["PolicyDocument"]["Statement"]
              if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert len(events) == 1
    (condition,) = events[0]["Condition"]["ArnLike"].values()
    assert condition["Fn::Join"][1][-1] == f":rule/{stack.resources.bus}/*"
    print(f"200-function synth and templates: {elapsed:.1f} s")


def test_the_resource_count_stepkit_check_estimates_is_what_each_group_holds(
    synthesized: tuple[StepkitStack, dict[str, dict[str, Any]], float],
) -> None:
    stack, found, _ = synthesized
    res = stack.resources
    for index, group in stack.groups.items():
        shapes = [FunctionShape(
            id=f.function_id, event_triggers=int(f.trigger_pattern(res.app_id) is not None),
            cron_triggers=len(f.schedules), managed_policies=0, queue_name=f.queue)
            for f in res.functions if function_group(f.function_id) == index]
        assert len(found[group.node.path]["Resources"]) == \
            RESOURCES_PER_GROUP + sum(s.resources() for s in shapes), group.node.path


def test_the_root_template_carries_the_step_manifest_of_every_function_within_its_budget(
    synthesized: tuple[StepkitStack, dict[str, dict[str, Any]], float],
) -> None:
    stack, found, _ = synthesized
    root = found[stack.node.path]
    manifest = root["Metadata"][METADATA_KEY]
    assert len(manifest["functions"]) == EVENT_FUNCTIONS + CRON_FUNCTIONS
    size = len(json.dumps(manifest, separators=(",", ":")))
    assert size <= METADATA_BUDGET_BYTES
    assert template_bytes(root) <= MAX_TEMPLATE_BYTES
    print(f"200-function step manifest: {size} bytes; root template {template_bytes(root)}")
