"""The schedule census in the synthesized template: its Lambda, hourly schedule, least-privilege
roles and the alarm before the schedules quota, all in the root stack."""

from __future__ import annotations

import importlib
from typing import Any

import aws_cdk as cdk
import pytest

from infra.constructs.schedule_census import HANDLER, SCHEDULE_NAME
from infra.stack import StepkitStack
from runtime import App, TriggerEvent
from runtime.backends.aws.census import CAP
from tests.infra.test_stack import (
    Resources,
    actions,
    arn,
    as_list,
    census_id,
    of_type,
    props,
    queue_id,
    role_statements,
    synth,
)

# One worker synthesizes every stack (scripts/test.sh: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("cdk")

app = App("censushop")


@app.function(id="one", trigger=TriggerEvent("a/b"))
def one(ctx: Any) -> None:
    return None


@pytest.fixture(scope="module")
def synthesized() -> tuple[StepkitStack, Resources]:
    stack, resources, _ = synth(app)
    return stack, resources


@pytest.fixture(scope="module")
def resources(synthesized: tuple[StepkitStack, Resources]) -> Resources:
    return synthesized[1]


def group_id(resources: Resources) -> str:
    ((found, _),) = of_type(resources, "AWS::Scheduler::ScheduleGroup").items()
    return found


def granted(resources: Resources, role_arn: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in role_statements(resources, role_arn):
        assert s["Effect"] == "Allow" and "Condition" not in s
        for a in actions(s):
            out.setdefault(a, []).extend(as_list(s["Resource"]))
    return out


def test_the_census_lambda_counts_the_apps_group_in_the_root_stack(
    synthesized: tuple[StepkitStack, Resources],
) -> None:
    stack, resources = synthesized
    assert cdk.Stack.of(stack.census.function) is stack  # not in a nested stack of functions
    p = props(resources[census_id(resources)])
    assert p["Handler"] == HANDLER
    env = p["Environment"]["Variables"]
    assert (env["STEPKIT_APP"], env["STEPKIT_SCHEDULE_GROUP"]) == \
        ("censushop", {"Ref": group_id(resources)})
    assert p["Timeout"] == 900  # 10,000 paced calls at the cap fit in Lambda's longest
    (config,) = [props(c) for c in of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
                 if props(c)["FunctionName"] == {"Ref": census_id(resources)}]
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (0, 3600)


def test_the_census_may_only_list_schedules_and_write_its_logs(resources: Resources) -> None:
    p = props(resources[census_id(resources)])
    found = granted(resources, p["Role"])
    # ListSchedules has no resource type in IAM: "*" or nothing (the call names the group).
    assert found.pop("scheduler:ListSchedules") == ["*"]
    log_group = arn(p["LoggingConfig"]["LogGroup"]["Ref"])
    assert {a.split(":")[0] for a in found} == {"logs"}
    assert all(r == log_group for rs in found.values() for r in rs)


def test_an_hourly_schedule_in_the_apps_group_invokes_it_with_an_invoke_only_role(
    resources: Resources,
) -> None:
    (schedule,) = [props(s) for s in of_type(resources, "AWS::Scheduler::Schedule").values()
                   if props(s)["Name"] == SCHEDULE_NAME]
    assert (schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == \
        ("cron(0 * * * ? *)", "UTC")
    assert schedule["GroupName"] == {"Ref": group_id(resources)}
    assert schedule["Target"]["Arn"] == arn(census_id(resources))
    role = schedule["Target"]["RoleArn"]
    trust = props(resources[role["Fn::GetAtt"][0]])["AssumeRolePolicyDocument"]["Statement"]
    assert [(s["Principal"], s["Condition"]) for s in trust] == [
        ({"Service": "scheduler.amazonaws.com"},
         {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}})]
    dlq = arn(queue_id(resources, "censushop-delivery-dlq"))
    assert schedule["Target"]["DeadLetterConfig"] == {"Arn": dlq}
    assert granted(resources, role) == {"lambda:InvokeFunction": [arn(census_id(resources))],
                                        "sqs:SendMessage": [dlq]}


def test_the_alarm_fires_at_the_cap_and_notifies_when_the_census_is_blind(
    resources: Resources,
) -> None:
    ((topic, _),) = of_type(resources, "AWS::SNS::Topic").items()
    (alarm,) = [props(a) for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
                if props(a).get("MetricName") == "Schedules"]
    assert (alarm["Namespace"], alarm["Dimensions"], alarm["Statistic"], alarm["Period"]) == \
        ("stepkit", [{"Name": "service", "Value": "censushop"}], "Maximum", 3600)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == \
        (CAP, "GreaterThanOrEqualToThreshold")
    assert CAP == 1_000_000  # a tenth of the account's 10,000,000 (shared by every app)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (1, 1)
    # A census that failed publishes nothing: that must not read as OK (notBreaching), and
    # breaching would page every new stack before its first run.
    assert alarm["TreatMissingData"] == "missing"
    assert alarm["AlarmActions"] == [{"Ref": topic}]
    assert alarm["InsufficientDataActions"] == [{"Ref": topic}]


def test_the_handler_the_template_names_exists() -> None:
    module, name = HANDLER.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
