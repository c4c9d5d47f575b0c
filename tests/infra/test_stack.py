"""The synthesized template: exactly the resources AppResources describes, least privilege.

One synth per module (jsii start-up is slow), with the source-only asset
(``stepkit:bundle=false``); the real bundling is covered in test_lint.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.bundling import PROJECT_ROOT
from infra.constructs.event_router import ROUTER_MAX_CONCURRENCY
from infra.constructs.payloads import PAYLOAD_ACTIONS, RUN_MARGIN_DAYS
from infra.constructs.run_reaper import BATCH_SIZE as REAPER_BATCH
from infra.constructs.run_reaper import HANDLER as REAPER_HANDLER
from infra.constructs.schedule_census import HANDLER as CENSUS_HANDLER
from infra.constructs.schedule_census import SCHEDULE_NAME as CENSUS_SCHEDULE
from infra.constructs.state_table import STATE_ACTIONS
from infra.stack import StackSettings, StepkitStack
from runtime import App, AwsOptions, TriggerCron, TriggerEvent
from runtime.app import FunctionDef
from runtime.backends.aws.resources import (
    DEFAULT_RETENTION_DAYS,
    ENV_PAYLOAD_BUCKET,
    MAX_RECEIVES,
    AppResources,
)
from runtime.backends.aws.table import table_spec, ttl_spec
from runtime.deploy import MIN_MEMORY_MB
from runtime.deploy_limits import function_group
from runtime.discovery import load_app
from tests.infra.templates import flat

# One worker synthesizes every stack (scripts/test.sh: --dist loadgroup): aws-cdk-lib and
# its jsii Node process load once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("cdk")

Resources = dict[str, dict[str, Any]]


def synth(app: App | None = None, **settings: Any) -> tuple[StepkitStack, Resources, dict]:
    cdk_app = cdk.App()
    stack = StepkitStack(cdk_app, "test", app=app,
                         settings=StackSettings(bundle=False, **settings))
    template = flat(stack)
    return stack, template["Resources"], template


def of_type(resources: Resources, kind: str) -> Resources:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def props(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties", {})


def arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


@pytest.fixture(scope="module")
def synthesized() -> tuple[App, StepkitStack, Resources, dict]:
    app = load_app(root=PROJECT_ROOT)
    stack, resources, template = synth(app)
    return app, stack, resources, template


@pytest.fixture(scope="module")
def app(synthesized: tuple) -> App:
    return synthesized[0]


@pytest.fixture(scope="module")
def res(synthesized: tuple) -> AppResources:
    return synthesized[1].resources


@pytest.fixture(scope="module")
def resources(synthesized: tuple) -> Resources:
    return synthesized[2]


def queue_id(resources: Resources, name: str) -> str:
    (found,) = [k for k, v in of_type(resources, "AWS::SQS::Queue").items()
                if props(v).get("QueueName") == name]
    return found


def auto_delete_ids(resources: Resources) -> list[str]:
    """The logical id of CDK's Lambda that empties the payload bucket on deletion, if any."""
    return [props(c)["ServiceToken"]["Fn::GetAtt"][0]
            for c in of_type(resources, "Custom::S3AutoDeleteObjects").values()]


def stepkit_lambdas(resources: Resources) -> Resources:
    """Every Lambda of the stack that runs stepkit code (not CDK's auto-delete provider)."""
    return {k: v for k, v in of_type(resources, "AWS::Lambda::Function").items()
            if k not in auto_delete_ids(resources)}


def payload_bucket(resources: Resources) -> str:
    (found,) = of_type(resources, "AWS::S3::Bucket")
    return found


def lambda_of(resources: Resources, function_id: str | None) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, props(v)) for k, v in stepkit_lambdas(resources).items()
                if props(v)["Handler"] not in (REAPER_HANDLER, CENSUS_HANDLER)
                and props(v)["Environment"]["Variables"].get("STEPKIT_FUNCTION") == function_id]
    return found


def reaper_ids(resources: Resources) -> tuple[str, str]:
    """The logical ids of the run reaper's failure queue and Lambda."""
    (mapping,) = [props(m) for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
                  if "DestinationConfig" in props(m)]
    failed = mapping["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    return failed, mapping["FunctionName"]["Ref"]


def census_id(resources: Resources) -> str:
    """The logical id of the schedule census's Lambda."""
    (found,) = [k for k, v in stepkit_lambdas(resources).items()
                if props(v)["Handler"] == CENSUS_HANDLER]
    return found


def role_statements(resources: Resources, role_arn: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of the role's inline policies and of the managed policies it has."""
    role = role_arn["Fn::GetAtt"][0]
    managed = [m["Ref"] for m in props(resources[role]).get("ManagedPolicyArns", [])
               if isinstance(m, dict) and "Ref" in m]
    return [*(s for p in of_type(resources, "AWS::IAM::Policy").values()
              if {"Ref": role} in props(p)["Roles"]
              for s in props(p)["PolicyDocument"]["Statement"]),
            *(s for m in managed for s in props(resources[m])["PolicyDocument"]["Statement"])]


def bus_id(resources: Resources) -> str:
    (found,) = of_type(resources, "AWS::Events::EventBus")
    return found


def queue_name(resources: Resources, ref: Any) -> str:
    """The name of the queue an ARN in a policy stands for (by logical id or by name)."""
    if "Fn::GetAtt" in ref:
        return str(props(resources[ref["Fn::GetAtt"][0]])["QueueName"])
    *_, last = ref["Fn::Join"][1]
    assert last.startswith(":"), ref
    return str(last[1:])


def actions(statement: dict[str, Any]) -> list[str]:
    a = statement["Action"]
    return [a] if isinstance(a, str) else list(a)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def timer_role(resources: Resources) -> str:
    """The logical id of the role Scheduler delivers long timers with."""
    (found,) = [k for k, v in of_type(resources, "AWS::IAM::Role").items()
                if "long timers" in props(v).get("Description", "")]
    return found


def timer_schedules(res: AppResources) -> dict[str, Any]:
    """The ARN pattern of the schedules in the app's group (as synthesized)."""
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":scheduler:",
                              {"Ref": "AWS::Region"}, ":", {"Ref": "AWS::AccountId"},
                              f":schedule/{res.schedule_group}/*"]]}


# -- per-function runtime -------------------------------------------------------------------


def test_one_lambda_queue_dlq_and_mapping_per_function_plus_the_router(
    app: App, resources: Resources
) -> None:
    n = len(list(app)) + 1
    counts = Counter(r["Type"] for r in resources.values())
    # ... the one delivery DLQ, and the run reaper: a Lambda, its failure queue, its stream
    # mapping, its logs; the schedule census: a Lambda and its logs; and CDK's Lambda that
    # empties the payload bucket on `cdk destroy`.
    assert counts["AWS::Lambda::Function"] == n + 3
    assert len(stepkit_lambdas(resources)) == n + 2
    assert counts["AWS::SQS::Queue"] == 2 * n + 2
    assert counts["AWS::Lambda::EventSourceMapping"] == n + 1
    assert counts["AWS::Logs::LogGroup"] == n + 2


def test_lambdas_run_the_handlers_on_arm64_with_the_stepkit_environment(
    app: App, res: AppResources, resources: Resources
) -> None:
    for fn in [*app, None]:
        function_id = fn.id if fn else None
        _, p = lambda_of(resources, function_id)
        queue = res.function(fn.id).queue if fn else res.router_queue
        assert p["Runtime"] == "python3.14"
        assert p["Architectures"] == ["arm64"]
        assert p["Handler"] == ("runtime.handlers.worker.handler" if fn
                                else "runtime.handlers.router.handler")
        dlq = res.function(fn.id).dlq if fn else res.router_dlq
        expected = res.lambda_env(fn, "QUEUE", 30, "DLQ")
        expected["STEPKIT_QUEUE_URL"] = {"Ref": queue_id(resources, queue)}
        expected["STEPKIT_DLQ_URL"] = {"Ref": queue_id(resources, dlq)}
        expected["STEPKIT_QUEUE_ARN"] = arn(queue_id(resources, queue))
        expected["STEPKIT_TIMER_ROLE_ARN"] = arn(timer_role(resources))
        expected[ENV_PAYLOAD_BUCKET] = {"Ref": payload_bucket(resources)}
        expected |= {"POWERTOOLS_SERVICE_NAME": app.id, "POWERTOOLS_LOG_LEVEL": "INFO"}
        if fn:  # its own settings (the example welcome function declares both)
            expected |= fn.aws.environment
            if fn.aws.secrets:
                expected["STEPKIT_SECRETS"] = json.dumps(fn.aws.secrets, sort_keys=True)
        assert p["Environment"]["Variables"] == expected
        if fn:
            assert (p["MemorySize"], p["Timeout"]) == (MIN_MEMORY_MB, 60)
            assert "ReservedConcurrentExecutions" not in p


def test_queues_are_encrypted_redrive_to_their_dlq_and_outlast_the_lambda(
    app: App, res: AppResources, resources: Resources
) -> None:
    consumers = [(fn.id, res.function(fn.id).queue, res.function(fn.id).dlq) for fn in app]
    for function_id, queue, dlq in [*consumers, (None, res.router_queue, res.router_dlq)]:
        q = props(resources[queue_id(resources, queue)])
        assert q["VisibilityTimeout"] >= 6 * lambda_of(resources, function_id)[1]["Timeout"]
        assert q["RedrivePolicy"] == {"deadLetterTargetArn": arn(queue_id(resources, dlq)),
                                      "maxReceiveCount": MAX_RECEIVES}
    for logical_id, queue in of_type(resources, "AWS::SQS::Queue").items():
        assert props(queue)["SqsManagedSseEnabled"] is True
        (policy,) = [p for p in of_type(resources, "AWS::SQS::QueuePolicy").values()
                     if props(p)["Queues"] == [{"Ref": logical_id}]]
        assert {"Action": "sqs:*", "Effect": "Deny", "Principal": {"AWS": "*"},
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                "Resource": arn(logical_id)} in props(policy)["PolicyDocument"]["Statement"]


def test_each_lambda_consumes_its_own_queue_with_partial_batch_responses(
    app: App, res: AppResources, resources: Resources
) -> None:
    mappings = list(of_type(resources, "AWS::Lambda::EventSourceMapping").values())
    for fn in [*app, None]:
        queue = res.function(fn.id).queue if fn else res.router_queue
        logical_id, _ = lambda_of(resources, fn.id if fn else None)
        (m,) = [props(m) for m in mappings if props(m)["FunctionName"] == {"Ref": logical_id}]
        assert m["EventSourceArn"] == arn(queue_id(resources, queue))
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["BatchSize"] == (1 if fn else 10)
        # The router is capped, so a burst of events cannot take the account's concurrency
        # from the functions; a function is capped only by its own max_concurrency.
        if fn is None:
            assert m["ScalingConfig"] == {"MaximumConcurrency": ROUTER_MAX_CONCURRENCY}
        else:
            assert "ScalingConfig" not in m, fn.id


def test_router_max_concurrency_context_sets_its_mapping_and_a_bad_one_is_named() -> None:
    node = cdk.App(context={"stepkit:routerMaxConcurrency": "200"}).node
    settings = StackSettings.from_context(node)
    assert settings.router_max_concurrency == 200
    assert StackSettings.from_context(cdk.App().node).router_max_concurrency == 50
    app = App("shop")
    app.function(id="tick", trigger=TriggerEvent("a/b"))(noop)
    _, resources, _ = synth(app, router_max_concurrency=settings.router_max_concurrency)
    (m,) = [props(m) for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
            if props(m)["BatchSize"] == 10]  # the router's
    assert m["ScalingConfig"] == {"MaximumConcurrency": 200}
    for bad in ("1", "1001", "many", "2.5"):
        with pytest.raises(ValueError, match="stepkit:routerMaxConcurrency must be a whole "
                           "number from 2 to 1000"):
            StackSettings.from_context(cdk.App(context={"stepkit:routerMaxConcurrency": bad}).node)


# -- routing --------------------------------------------------------------------------------


def rule_named(resources: Resources, name: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, props(v)) for k, v in of_type(resources, "AWS::Events::Rule").items()
                if props(v)["Name"] == name]
    return found


def assert_delivers_to(resources: Resources, rule: tuple[str, dict[str, Any]], queue: str) -> None:
    """The rule targets the queue, and the queue lets EventBridge send for this rule only."""
    rule_id, p = rule
    qid = queue_id(resources, queue)
    (target,) = p["Targets"]
    assert {k: target[k] for k in ("Arn", "Id")} == {"Arn": arn(qid), "Id": "queue"}
    (policy,) = [props(q) for q in of_type(resources, "AWS::SQS::QueuePolicy").values()
                 if props(q)["Queues"] == [{"Ref": qid}]]
    assert {"Action": "sqs:SendMessage", "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"}, "Resource": arn(qid),
            "Condition": {"ArnEquals": {"aws:SourceArn": arn(rule_id)}}} in \
        policy["PolicyDocument"]["Statement"]


def test_trigger_and_router_rules_use_the_patterns_from_resources(
    app: App, res: AppResources, resources: Resources
) -> None:
    # The bus carries app events only: no rule delivers stepkit's own events or control
    # messages, so nothing put on the bus can forge them.
    bus = next(iter(of_type(resources, "AWS::Events::EventBus")))
    with_rule = [fn for fn in app if res.function(fn.id).trigger_pattern(app.id)]
    assert len(of_type(resources, "AWS::Events::Rule")) == len(with_rule) + 1
    for fn in app:
        f = res.function(fn.id)
        if any(not e.event.startswith("stepkit/") for e in fn.events):
            rule = rule_named(resources, f.trigger_rule)
            assert rule[1]["EventPattern"] == f.trigger_pattern(app.id)
            assert not any(n.startswith("stepkit/")
                           for n in rule[1]["EventPattern"]["detail-type"])
            assert rule[1]["EventBusName"] == {"Ref": bus}
            assert_delivers_to(resources, rule, f.queue)
        else:  # cron-only, or on_failure handlers (started by the router)
            assert f.trigger_pattern(app.id) is None
    rule = rule_named(resources, res.router_rule)
    assert rule[1]["EventPattern"] == {
        "source": [app.id], "detail-type": [{"anything-but": {"prefix": "stepkit/"}}]}
    assert_delivers_to(resources, rule, res.router_queue)


def test_cron_triggers_are_scheduler_schedules_with_a_send_only_role(
    app: App, res: AppResources, resources: Resources
) -> None:
    schedules = {k: s for k, s in of_type(resources, "AWS::Scheduler::Schedule").items()
                 if props(s)["Target"]["Arn"] != arn(census_id(resources))}  # the census's
    assert len(schedules) == sum(len(fn.crons) for fn in app)
    digest = [props(s) for s in schedules.values()
              if props(s)["Name"] == res.function("daily-digest").schedules[0].name]
    assert [(s["ScheduleExpression"], s["ScheduleExpressionTimezone"]) for s in digest] == \
        [("cron(0 8 * * ? *)", "Europe/London")]
    for fn in app:
        f = res.function(fn.id)
        for schedule, cron in zip(f.schedules, fn.crons, strict=True):
            (p,) = [props(s) for s in schedules.values() if props(s)["Name"] == schedule.name]
            assert p["FlexibleTimeWindow"] == {"Mode": "OFF"}
            assert (p["ScheduleExpression"], p["ScheduleExpressionTimezone"]) == \
                cron.to_aws_scheduler()
            qid = queue_id(resources, f.queue)
            assert p["Target"]["Arn"] == arn(qid)
            assert json.loads(p["Target"]["Input"]) == {
                "type": "cron", "function_id": fn.id, "cron": cron.spec,
                "scheduled_time": "<aws.scheduler.scheduled-time>"}
            role_id = p["Target"]["RoleArn"]["Fn::GetAtt"][0]
            trust = props(resources[role_id])["AssumeRolePolicyDocument"]["Statement"]
            assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
            statements = role_statements(resources, p["Target"]["RoleArn"])
            assert {(s["Action"], s["Effect"]) for s in statements} == \
                {("sqs:SendMessage", "Allow")}
            assert sorted(json.dumps(r) for s in statements for r in as_list(s["Resource"])) \
                == sorted(json.dumps(arn(q)) for q in (qid, queue_id(resources, res.delivery_dlq)))


# -- delivery guarantees -------------------------------------------------------------------

RETRY = {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 185}


def test_every_rule_target_retries_then_dead_letters_to_the_delivery_dlq(
    res: AppResources, resources: Resources
) -> None:
    dlq = queue_id(resources, res.delivery_dlq)
    rules = of_type(resources, "AWS::Events::Rule")
    assert rules
    for rule in rules.values():
        for target in props(rule)["Targets"]:
            assert target["RetryPolicy"] == RETRY
            assert target["DeadLetterConfig"] == {"Arn": arn(dlq)}
    (policy,) = [props(q) for q in of_type(resources, "AWS::SQS::QueuePolicy").values()
                 if props(q)["Queues"] == [{"Ref": dlq}]]
    allowed = [s for s in policy["PolicyDocument"]["Statement"]
               if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert all((s["Action"], s["Effect"], s["Resource"]) == ("sqs:SendMessage", "Allow", arn(dlq))
               for s in allowed)
    # EventBridge may send there only on behalf of the app's own rules: one statement for
    # every rule on the app's bus (one per rule would pass SQS's 20 statements per policy).
    (statement,) = allowed
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": {"Fn::Join": ["", [
        "arn:", {"Ref": "AWS::Partition"}, ":events:", {"Ref": "AWS::Region"}, ":",
        {"Ref": "AWS::AccountId"}, f":rule/{res.bus}/*"]]}}}
    assert all(props(r)["EventBusName"] == {"Ref": bus_id(resources)} for r in rules.values())


def test_every_schedule_target_retries_then_dead_letters_and_lives_in_the_apps_group(
    res: AppResources, resources: Resources
) -> None:
    dlq = queue_id(resources, res.delivery_dlq)
    ((group_id, group),) = of_type(resources, "AWS::Scheduler::ScheduleGroup").items()
    assert props(group)["Name"] == res.schedule_group
    schedules = of_type(resources, "AWS::Scheduler::Schedule")
    assert schedules
    for schedule in schedules.values():
        p = props(schedule)
        assert p["GroupName"] == {"Ref": group_id}
        assert p["Target"]["RetryPolicy"] == RETRY
        assert p["Target"]["DeadLetterConfig"] == {"Arn": arn(dlq)}
        # Scheduler sends to the DLQ with the target's role (checked in the cron test).


def test_the_delivery_dlq_is_encrypted_and_keeps_messages_14_days(
    res: AppResources, resources: Resources
) -> None:
    q = props(resources[queue_id(resources, res.delivery_dlq)])
    assert q["SqsManagedSseEnabled"] is True
    assert q["MessageRetentionPeriod"] == 14 * 86400
    assert "RedrivePolicy" not in q


# -- permissions ----------------------------------------------------------------------------


def test_no_wildcards_in_iam_policies(res: AppResources, resources: Resources) -> None:
    payload_objects = {"Fn::Join": ["", [arn(payload_bucket(resources)), "/runs/*"]]}
    policies = [*of_type(resources, "AWS::IAM::Policy").values(),
                *of_type(resources, "AWS::IAM::ManagedPolicy").values()]
    assert of_type(resources, "AWS::IAM::ManagedPolicy")
    for p in policies:
        for s in props(p)["PolicyDocument"]["Statement"]:
            assert not any("*" in a for a in actions(s)), s
            if actions(s) == ["scheduler:ListSchedules"]:
                continue  # no resource type in IAM: the census's, see its own test
            # Named at run time: timer schedules (the next test) and payload objects.
            if s["Resource"] in (timer_schedules(res), payload_objects):
                continue
            assert "*" not in json.dumps(s["Resource"]), s


def test_lambdas_may_create_timer_schedules_in_the_apps_group_delivered_by_its_role(
    app: App, res: AppResources, resources: Resources
) -> None:
    role = timer_role(resources)
    trust = props(resources[role])["AssumeRolePolicyDocument"]["Statement"]
    assert [(s["Principal"], s["Condition"]) for s in trust] == [
        ({"Service": "scheduler.amazonaws.com"},
         {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}})]
    # Scheduler delivers timers to the function queues, and failed ones to the delivery DLQ.
    statements = role_statements(resources, arn(role))
    assert {(a, s["Effect"]) for s in statements for a in actions(s)} == \
        {("sqs:SendMessage", "Allow")}
    targets = [*(f.queue for f in res.functions), res.delivery_dlq]
    assert sorted(queue_name(resources, r) for s in statements for r in as_list(s["Resource"])) \
        == sorted(targets)
    # Every stepkit Lambda (the router too: debounce windows) may create schedules in the
    # app's group (and delete those made moot) and pass this role, only to Scheduler;
    # nothing else of Scheduler or IAM.
    for fn in [*app, None]:
        _, p = lambda_of(resources, fn.id if fn else None)
        timer_grants = [s for s in role_statements(resources, p["Role"])
                        if any(a.split(":")[0] in ("scheduler", "iam") for a in actions(s))]
        assert [(actions(s), s["Resource"], s.get("Condition")) for s in timer_grants] == [
            (["scheduler:CreateSchedule", "scheduler:DeleteSchedule"], timer_schedules(res),
             None),
            (["iam:PassRole"], arn(role),
             {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}),
        ]
    _, reaper = reaper_ids(resources)
    reaper_role = props(resources[reaper])["Role"]
    assert not [s for s in role_statements(resources, reaper_role)
                if any(a.startswith(("scheduler:", "iam:")) for a in actions(s))]


def test_each_lambda_touches_only_its_queues_the_table_and_the_bus(
    app: App, res: AppResources, resources: Resources
) -> None:
    (table,) = of_type(resources, "AWS::DynamoDB::Table")
    (bus,) = of_type(resources, "AWS::Events::EventBus")
    table_arns = [arn(table), *({"Fn::Join": ["", [arn(table), f"/index/{i['IndexName']}"]]}
                                for i in table_spec("x")["GlobalSecondaryIndexes"])]
    for fn in [*app, None]:
        _, p = lambda_of(resources, fn.id if fn else None)
        granted: dict[str, list[Any]] = {}
        for s in role_statements(resources, p["Role"]):
            assert s["Effect"] == "Allow"
            for a in actions(s):
                granted.setdefault(a.split(":")[0], []).extend(as_list(s["Resource"]))
        # Its declared secrets only (the example welcome function reads one SSM parameter).
        secrets = [r.partition(":")[2] for r in (fn.aws.secrets.values() if fn else ())]
        # scheduler and iam: creating long timers (the test above); s3: large outputs
        assert set(granted) == {"sqs", "dynamodb", "events", "logs", "scheduler", "iam",
                                "s3"} | ({"ssm"} if secrets else set())
        assert [json.dumps(r) for r in granted.get("ssm", [])] == [
            json.dumps({"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":ssm:",
                                          {"Ref": "AWS::Region"}, ":",
                                          {"Ref": "AWS::AccountId"}, f":parameter{name}"]]})
            for name in secrets]
        dlq = res.function(fn.id).dlq if fn else res.router_dlq
        # Send only: every queue of the app (control messages go queue to queue), its DLQ.
        app_queues = [res.router_queue, *(f.queue for f in res.functions)]
        assert {queue_name(resources, r) for r in granted["sqs"]} == {*app_queues, dlq}
        assert all(r in table_arns for r in granted["dynamodb"])
        assert set(map(json.dumps, granted["dynamodb"])) == set(map(json.dumps, table_arns))
        assert granted["events"] == [arn(bus)]
        log_group = p["LoggingConfig"]["LogGroup"]["Ref"]
        assert all(r == arn(log_group) for r in granted["logs"])


def test_state_actions_are_exactly_what_the_store_calls() -> None:
    """Keeps STATE_ACTIONS in step with the store: a new call needs a grant, a dropped one none.

    The store is ``DynamoStore`` and the parts it is made of, each in its own module.
    """
    from runtime.backends.aws.store import DynamoStore

    modules = {c.__module__ for c in DynamoStore.__mro__ if c.__module__.startswith("runtime.")}
    assert "runtime.backends.aws.dynamo" in modules and len(modules) == 9
    source = "\n".join(Path(str(sys.modules[m].__file__)).read_text() for m in sorted(modules))
    calls = set(re.findall(r"client\.(\w+)\(", source))
    calls |= {f"{m}" for m in re.findall(r"get_paginator\(\"(\w+)\"\)", source)}
    calls -= {"get_paginator", "transact_write_items"}  # the latter: per-item actions below
    used = {"dynamodb:" + "".join(w.title() for w in c.split("_")) for c in calls}
    kinds = set(re.findall(r"\{\s*\"(Put|Update|Delete|ConditionCheck)\":", source))
    used |= {f"dynamodb:{k}Item" for k in kinds}
    assert used == set(STATE_ACTIONS)


def test_payload_actions_are_exactly_what_s3_payloads_calls() -> None:
    """Keeps PAYLOAD_ACTIONS in step with payloads.py, as STATE_ACTIONS is with the store."""
    source = (PROJECT_ROOT / "runtime/backends/aws/payloads.py").read_text()
    calls = set(re.findall(r"client\.(\w+)\(", source))
    assert {"s3:" + "".join(w.title() for w in c.split("_")) for c in calls} == \
        set(PAYLOAD_ACTIONS)


# -- the payload bucket ---------------------------------------------------------------------


def test_payload_bucket_is_encrypted_private_tls_only_and_unversioned(
    resources: Resources
) -> None:
    bucket = payload_bucket(resources)
    p = props(resources[bucket])
    assert p["BucketEncryption"] == {"ServerSideEncryptionConfiguration": [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    assert p["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True}
    assert p["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert "VersioningConfiguration" not in p  # content-addressed objects are never rewritten
    assert "BucketName" not in p  # bucket names are global: CloudFormation picks one
    (policy,) = [props(b) for b in of_type(resources, "AWS::S3::BucketPolicy").values()
                 if props(b)["Bucket"] == {"Ref": bucket}]
    assert {"Action": "s3:*", "Effect": "Deny", "Principal": {"AWS": "*"},
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Resource": [arn(bucket), {"Fn::Join": ["", [arn(bucket), "/*"]]}]} in \
        policy["PolicyDocument"]["Statement"]
    # The bucket policy allows only CDK's auto-delete Lambda (emptying it on `cdk destroy`);
    # the stepkit roles' access is their IAM policy's (below).
    (provider,) = auto_delete_ids(resources)
    allowed = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert [s["Principal"] for s in allowed] == [
        {"AWS": props(resources[provider])["Role"]}]


def lifecycle(resources: Resources) -> dict[str, Any]:
    (rule,) = props(resources[payload_bucket(resources)])["LifecycleConfiguration"]["Rules"]
    return rule


def test_payload_objects_expire_a_year_after_the_retention(resources: Resources) -> None:
    # An object is written while its run runs, and the run's items start their retention
    # only when it ends: the same margin as the log items' backstop TTL.
    assert lifecycle(resources) == {
        "Id": "expire-after-retention", "Status": "Enabled",
        "ExpirationInDays": DEFAULT_RETENTION_DAYS + 366,
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }
    assert RUN_MARGIN_DAYS == 366


def test_retention_context_moves_the_payload_expiry_and_retain_state_keeps_the_bucket() -> None:
    app = App("shop")
    app.function(id="tick", trigger=TriggerEvent("a/b"))(noop)
    cdk_app = cdk.App(context={"stepkit:retentionDays": "7", "stepkit:bundle": "false",
                               "stepkit:retainState": "true"})
    stack = StepkitStack(cdk_app, "test", app=app,
                         settings=StackSettings.from_context(cdk_app.node))
    resources = flat(stack)["Resources"]
    assert lifecycle(resources)["ExpirationInDays"] == 7 + 366
    bucket = resources[payload_bucket(resources)]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert of_type(resources, "Custom::S3AutoDeleteObjects") == {}
    assert len(of_type(resources, "AWS::Lambda::Function")) == 4  # no auto-delete provider


def test_payload_bucket_is_emptied_and_deleted_with_the_stack_by_default(
    resources: Resources
) -> None:
    bucket = payload_bucket(resources)
    assert resources[bucket]["DeletionPolicy"] == "Delete"  # stepkit:retainState=false
    ((_, auto_delete),) = of_type(resources, "Custom::S3AutoDeleteObjects").items()
    assert props(auto_delete)["BucketName"] == {"Ref": bucket}


def test_each_lambda_finds_the_bucket_and_may_only_put_get_and_list_payload_objects(
    app: App, resources: Resources
) -> None:
    bucket = payload_bucket(resources)
    objects = {"Fn::Join": ["", [arn(bucket), "/runs/*"]]}
    for fn in [*app, None]:
        _, p = lambda_of(resources, fn.id if fn else None)
        assert p["Environment"]["Variables"][ENV_PAYLOAD_BUCKET] == {"Ref": bucket}
        s3 = [s for s in role_statements(resources, p["Role"])
              if any(a.startswith("s3:") for a in actions(s))]
        assert [(s["Effect"], sorted(actions(s)), s["Resource"]) for s in s3] == \
            [("Allow", ["s3:GetObject", "s3:PutObject"], objects),
             ("Allow", ["s3:ListBucket"], arn(bucket))]  # so a missing key answers 404
    # The run reaper deletes items, not objects: the lifecycle rule expires those.
    _, reaper = reaper_ids(resources)
    reaper_role = props(resources[reaper])["Role"]
    assert not [s for s in role_statements(resources, reaper_role)
                if any(a.startswith("s3:") for a in actions(s))]


# -- the table, monitoring, outputs ---------------------------------------------------------


def test_table_mirrors_table_spec(res: AppResources, resources: Resources) -> None:
    ((_, table),) = of_type(resources, "AWS::DynamoDB::Table").items()
    p, spec = props(table), table_spec(res.table)
    for key in ("TableName", "BillingMode", "KeySchema", "GlobalSecondaryIndexes"):
        assert p[key] == spec[key], key
    assert sorted(p["AttributeDefinitions"], key=str) == \
        sorted(spec["AttributeDefinitions"], key=str)
    assert p["TimeToLiveSpecification"] == ttl_spec(res.table)["TimeToLiveSpecification"]
    assert p["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert p["SSESpecification"] == {"SSEEnabled": True}
    assert p["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["DeletionPolicy"] == "Delete"  # stepkit:retainState=false, the default


def test_alarms_on_every_dlq_and_backlog_and_a_dashboard_but_none_on_lambda_errors(
    app: App, res: AppResources, resources: Resources
) -> None:
    alarms = [props(a) for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
              if "MetricName" in props(a)]  # the app's query alarms: see below
    dlqs = [res.function(fn.id).dlq for fn in app] + [res.router_dlq, res.delivery_dlq]
    assert sorted(dlqs) == sorted(name for name, _ in res.dead_letter_queues())
    reaper_failed, _ = reaper_ids(resources)
    dlq_alarms = [a for a in alarms if a["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert sorted(a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in dlq_alarms) == \
        sorted([*(queue_id(resources, d) for d in dlqs), reaper_failed])
    # A batch reports its failed records instead of failing, so a Lambda error is a crash
    # or a timeout, which a failed run or a dead letter reports: Errors page no one.
    assert [a for a in alarms if a["MetricName"] == "Errors"] == []
    assert all(a["Namespace"] != "AWS/Lambda" for a in alarms)
    # Every function queue and the router's keep messages 14 days (SQS's maximum: a backlog
    # older than the default 4 would be deleted unprocessed) and alarm on a day-old backlog.
    worker_queues = [res.function(fn.id).queue for fn in app] + [res.router_queue]
    for name in worker_queues:
        assert props(resources[queue_id(resources, name)])["MessageRetentionPeriod"] == \
            14 * 86400, name
    age_alarms = [a for a in alarms if a["MetricName"] == "ApproximateAgeOfOldestMessage"]
    assert sorted(a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in age_alarms) == \
        sorted(queue_id(resources, q) for q in worker_queues)
    for a in age_alarms:
        assert (a["Threshold"], a["ComparisonOperator"], a["EvaluationPeriods"]) == \
            (86400, "GreaterThanThreshold", 3)
    for a in alarms:
        if a not in age_alarms and a["MetricName"] != "Schedules":  # the census: its own test
            assert (a["Threshold"], a["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    # One dashboard for the root stack (the router) and one per group of functions, so
    # that none outgrows CloudWatch's 500 widgets.
    dashboards = of_type(resources, "AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1 + len({function_group(fn.id) for fn in app})
    for dashboard in dashboards.values():
        body = json.dumps(props(dashboard)["DashboardBody"])
        assert "ApproximateAgeOfOldestMessage" in body
        assert "ApproximateNumberOfMessagesVisible" in body


def test_failed_deliveries_alarm_per_rule_and_for_the_schedule_group(
    res: AppResources, resources: Resources
) -> None:
    alarms = [props(a) for a in of_type(resources, "AWS::CloudWatch::Alarm").values()]
    rule_alarms = [a for a in alarms if a.get("Namespace") == "AWS/Events"]
    assert {a["MetricName"] for a in rule_alarms} == {"FailedInvocations"}
    dims = [{d["Name"]: d["Value"] for d in a["Dimensions"]} for a in rule_alarms]
    assert all(d["EventBusName"] == res.bus for d in dims)  # a custom bus: both dimensions
    assert sorted(d["RuleName"] for d in dims) == \
        sorted(props(r)["Name"] for r in of_type(resources, "AWS::Events::Rule").values())
    scheduler = [a for a in alarms if a.get("Namespace") == "AWS/Scheduler"]
    assert sorted(a["MetricName"] for a in scheduler) == sorted(
        ["TargetErrorCount", "InvocationDroppedCount",
         "InvocationsFailedToBeSentToDeadLetterCount"])
    assert all(a["Dimensions"] == [{"Name": "ScheduleGroup", "Value": res.schedule_group}]
               for a in scheduler)
    for a in rule_alarms + scheduler:
        assert (a["Statistic"], a["Threshold"], a["TreatMissingData"]) == \
            ("Sum", 0, "notBreaching")


def test_failed_runs_and_sustained_pushback_alarm_once_per_app_by_function(
    app: App, resources: Resources
) -> None:
    alarms = {k: props(a) for k, a in of_type(resources, "AWS::CloudWatch::Alarm").items()
              if "Metrics" in props(a)}
    # No run metric is alarmed per function (the schedule census is one series per app).
    assert all(props(a).get("Namespace") != "stepkit" or props(a)["MetricName"] == "Schedules"
               for a in of_type(resources, "AWS::CloudWatch::Alarm").values())
    by_metric: dict[str, dict[str, Any]] = {}
    for a in alarms.values():
        (query,) = a["Metrics"]
        assert query["ReturnData"] is True
        found = re.fullmatch(
            r'SELECT SUM\("(\w+)"\) FROM SCHEMA\("stepkit", "function_id", "service"\) '
            r"WHERE \"service\" = '([\w-]+)' GROUP BY \"function_id\" ORDER BY SUM\(\) DESC",
            query["Expression"])
        assert found, query["Expression"]
        assert found[2] == app.id
        by_metric[found[1]] = a
        # Blocked runs report again every 10 minutes: a 15-minute period always sees them.
        assert query["Period"] == (900 if found[1] == "RunsBlocked" else 300)
    assert sorted(by_metric) == ["Pushback", "RunsBlocked", "RunsFailed"]
    # A failed run pages at once; pushback only when every 5 minutes of 15 saw some.
    shape = ("Threshold", "ComparisonOperator", "EvaluationPeriods", "DatapointsToAlarm",
             "TreatMissingData")
    assert tuple(by_metric["RunsFailed"][k] for k in shape) == \
        (0, "GreaterThanThreshold", 1, 1, "notBreaching")
    assert tuple(by_metric["Pushback"][k] for k in shape) == \
        (0, "GreaterThanThreshold", 3, 3, "notBreaching")
    assert tuple(by_metric["RunsBlocked"][k] for k in shape) == \
        (0, "GreaterThanThreshold", 1, 1, "notBreaching")


def test_every_alarm_notifies_the_encrypted_tls_only_alarm_topic(resources: Resources) -> None:
    ((topic_id, topic),) = of_type(resources, "AWS::SNS::Topic").items()
    alarms = of_type(resources, "AWS::CloudWatch::Alarm")
    assert len(alarms) > 20
    for alarm in alarms.values():
        assert props(alarm)["AlarmActions"] == [{"Ref": topic_id}]
    ((key_id, key),) = of_type(resources, "AWS::KMS::Key").items()
    assert props(topic)["KmsMasterKeyId"] == arn(key_id)
    assert props(key)["EnableKeyRotation"] is True
    key_statements = props(key)["KeyPolicy"]["Statement"]
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
               and set(s["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
               for s in key_statements)
    ((_, policy),) = of_type(resources, "AWS::SNS::TopicPolicy").items()
    statements = props(policy)["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport":
                                                                    "false"}}
               for s in statements)
    (publish,) = [s for s in statements if s["Effect"] == "Allow"]
    assert (publish["Principal"], publish["Action"]) == \
        ({"Service": "cloudwatch.amazonaws.com"}, "sns:Publish")
    assert "aws:SourceAccount" in publish["Condition"]["StringEquals"]
    assert of_type(resources, "AWS::SNS::Subscription") == {}  # no alarmEmail by default


def test_alarm_email_context_subscribes_the_address_and_a_bad_one_is_named() -> None:
    node = cdk.App(context={"stepkit:alarmEmail": "ops@example.com"}).node
    settings = StackSettings.from_context(node)
    assert settings.alarm_email == "ops@example.com"
    app = App("shop")
    app.function(id="tick", trigger=TriggerEvent("a/b"))(noop)
    _, resources, _ = synth(app, alarm_email=settings.alarm_email)
    ((topic_id, _),) = of_type(resources, "AWS::SNS::Topic").items()
    ((_, sub),) = of_type(resources, "AWS::SNS::Subscription").items()
    assert (props(sub)["Protocol"], props(sub)["Endpoint"], props(sub)["TopicArn"]) == \
        ("email", "ops@example.com", {"Ref": topic_id})
    for bad in ("ops", "ops@example", "a@b.c, d@e.f", "ops @example.com"):
        node = cdk.App(context={"stepkit:alarmEmail": bad}).node
        with pytest.raises(ValueError, match="stepkit:alarmEmail must be one email address"):
            StackSettings.from_context(node)


def test_tracing_is_off_by_default(resources: Resources) -> None:
    for _, fn in stepkit_lambdas(resources).items():
        assert "TracingConfig" not in props(fn)
        assert "STEPKIT_TRACING" not in props(fn)["Environment"]["Variables"]
    assert "xray:" not in json.dumps(of_type(resources, "AWS::IAM::Policy"))


def test_tracing_context_makes_every_lambda_trace_actively(tmp_path: Path) -> None:
    node = cdk.App(context={"stepkit:tracing": "true"}).node
    assert StackSettings.from_context(node).tracing is True
    with pytest.raises(ValueError, match="stepkit:tracing must be true or false"):
        StackSettings.from_context(cdk.App(context={"stepkit:tracing": "sometimes"}).node)
    app = App("shop")
    app.function(id="tick", trigger=TriggerEvent("a/b"))(noop)
    cdk_app = cdk.App(outdir=str(tmp_path))
    stack = StepkitStack(cdk_app, "traced", app=app,
                         settings=StackSettings(bundle=False, tracing=True))
    cdk.Validations.of(cdk_app).add_plugins(AwsSolutionsChecks(cdk_app))
    cdk_app.synth()  # cdk-nag passes: the one wildcard (X-Ray) is acknowledged with a reason
    resources = flat(stack)["Resources"]
    functions = stepkit_lambdas(resources)
    assert len(functions) == 4  # the function, the router, the run reaper and the census
    for _, fn in functions.items():
        p = props(fn)
        assert p["TracingConfig"] == {"Mode": "Active"}
        assert p["Environment"]["Variables"]["STEPKIT_TRACING"] == "true"
        xray = [s for s in role_statements(resources, p["Role"])
                if any(a.startswith("xray:") for a in actions(s))]
        assert [(sorted(actions(s)), s["Resource"]) for s in xray] == \
            [(["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "*")]


def test_outputs(synthesized: tuple) -> None:
    outputs = synthesized[3]["Outputs"]
    assert {"TableName", "BusName", "BusArn", "TableItemsUrl", "DashboardUrl",
            "AlarmTopicArn", "PayloadBucketName"} <= set(outputs)
    # What `stepkit ... --aws` needs in STEPKIT_PAYLOAD_BUCKET to read large outputs.
    assert outputs["PayloadBucketName"]["Value"] == {"Ref": payload_bucket(synthesized[2])}
    (topic,) = of_type(synthesized[2], "AWS::SNS::Topic")
    assert outputs["AlarmTopicArn"]["Value"] == {"Ref": topic}
    url = json.dumps(outputs["TableItemsUrl"]["Value"])
    assert '"https://", {"Ref": "AWS::Region"}, ".console.aws.amazon.com/dynamodbv2/home?region='\
        in url
    assert '"#item-explorer?table=", {"Ref": "StateTable' in url


# -- options, settings and growth -----------------------------------------------------------


def noop(ctx: Any) -> None:
    return None


def test_options_and_settings_shape_the_lambdas_and_names() -> None:
    app = App("shop")
    app.function(id="big", trigger=TriggerEvent("a/b"),
                 aws=AwsOptions(memory_mb=1024, timeout_s=120, max_concurrency=3,
                                sqs_batch_size=5, ephemeral_storage_mb=2048))(noop)
    stack, resources, _ = synth(app, stage="prod", retention_days=7, log_level="DEBUG")
    assert stack.stack_name == "test"
    _, p = lambda_of(resources, "big")
    assert (p["MemorySize"], p["Timeout"], p["EphemeralStorage"]) == (1024, 120, {"Size": 2048})
    assert "ReservedConcurrentExecutions" not in p
    env = p["Environment"]["Variables"]
    assert (env["STEPKIT_APP"], env["STEPKIT_TABLE"], env["STEPKIT_BUS"]) == \
        ("shop", "shop-prod-state", "shop-prod-bus")
    assert (env["STEPKIT_RETENTION_DAYS"], env["POWERTOOLS_LOG_LEVEL"]) == ("7", "DEBUG")
    assert props(resources[queue_id(resources, "shop-prod-big")])["VisibilityTimeout"] == 720
    rule = rule_named(resources, "shop-prod-big-trigger")[1]
    assert rule["EventPattern"]["source"] == ["shop"]  # the stage never changes the source
    assert {props(g)["RetentionInDays"] for g in
            of_type(resources, "AWS::Logs::LogGroup").values()} == {7}
    (m,) = [props(m) for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
            if props(m)["BatchSize"] not in (10, REAPER_BATCH)]
    assert m["BatchSize"] == 5
    # Capped where messages wait, so nothing is throttled into the DLQ.
    assert m["ScalingConfig"] == {"MaximumConcurrency": 3}


def test_every_lambda_may_continue_runs_through_its_own_queue(resources: Resources) -> None:
    # Lambda stops a same-function SQS chain after ~16 hops unless RecursiveLoop is Allow:
    # every step and every 900 s timer hop of a run is such a hop. (The run reaper, fed by
    # the table's stream, and the schedule census send nothing and keep Lambda's default.)
    _, reaper = reaper_ids(resources)
    functions = {k: f for k, f in stepkit_lambdas(resources).items()
                 if k not in (reaper, census_id(resources))}
    assert functions
    assert {k: props(f).get("RecursiveLoop") for k, f in functions.items()} == {
        k: "Allow" for k in functions}
    assert not any("ReservedConcurrentExecutions" in props(f) for f in functions.values())


def test_function_settings_reach_its_lambda_and_role_only() -> None:
    app = App("shop")
    app.function(id="mailer", trigger=TriggerEvent("a/b"), aws={
        "environment": {"FROM": "shop@example.com"},
        "secrets": {"SMTP_PASSWORD": "secretsmanager:prod/smtp",
                    "API_KEY": "ssm:/shop/api-key"},
        "policies": [{"actions": ["ses:SendEmail"],
                      "resources": ["arn:aws:ses:eu-west-1:123456789012:identity/shop"]}],
        "managed_policies": ["AmazonS3ReadOnlyAccess"],
        "vpc": {"subnet_ids": ["subnet-0123abcd"], "security_group_ids": ["sg-0123abcd"]},
        "layers": ["arn:aws:lambda:eu-west-1:123456789012:layer:tools:3"],
    })(noop)
    app.function(id="plain", trigger=TriggerEvent("a/c"))(noop)
    seen: list[str] = []
    _, resources, _ = synth_with_hook(app, lambda st, fn, w: seen.append(fn.id))
    assert sorted(seen) == ["mailer", "plain"]
    _, p = lambda_of(resources, "mailer")
    env = p["Environment"]["Variables"]
    assert env["FROM"] == "shop@example.com"
    assert json.loads(env["STEPKIT_SECRETS"]) == {
        "API_KEY": "ssm:/shop/api-key", "SMTP_PASSWORD": "secretsmanager:prod/smtp"}
    assert p["VpcConfig"] == {"SubnetIds": ["subnet-0123abcd"],
                              "SecurityGroupIds": ["sg-0123abcd"]}
    assert p["Layers"] == ["arn:aws:lambda:eu-west-1:123456789012:layer:tools:3"]
    statements = json.dumps(role_policies(resources, p["Role"]["Fn::GetAtt"][0]))
    assert '"ses:SendEmail"' in statements
    assert '"secretsmanager:GetSecretValue"' in statements
    assert ":secret:prod/smtp-??????" in statements
    assert '"ssm:GetParameter"' in statements and ":parameter/shop/api-key" in statements
    role = props(resources[p["Role"]["Fn::GetAtt"][0]])
    managed = json.dumps(role["ManagedPolicyArns"])
    assert "AmazonS3ReadOnlyAccess" in managed and "AWSLambdaVPCAccessExecutionRole" in managed
    _, plain = lambda_of(resources, "plain")
    assert "FROM" not in plain["Environment"]["Variables"] and "VpcConfig" not in plain
    plain_policies = json.dumps(role_policies(resources, plain["Role"]["Fn::GetAtt"][0]))
    assert "ses:" not in plain_policies and "secretsmanager" not in plain_policies


def synth_with_hook(app: App, hook: Any) -> tuple[StepkitStack, Resources, dict]:
    cdk_app = cdk.App()
    stack = StepkitStack(cdk_app, "test", app=app, settings=StackSettings(bundle=False),
                         on_function=hook)
    template = flat(stack)
    return stack, template["Resources"], template


def role_policies(resources: Resources, role_id: str) -> list[Any]:
    """Every statement of the inline policies attached to ``role_id``."""
    return [st for r in of_type(resources, "AWS::IAM::Policy").values()
            if {"Ref": role_id} in props(r)["Roles"]
            for st in props(r)["PolicyDocument"]["Statement"]]


def test_bad_context_is_named() -> None:
    node = cdk.App(context={"stepkit:retentionDays": "0"}).node
    with pytest.raises(ValueError, match="stepkit:retentionDays"):
        StackSettings.from_context(node)
    node = cdk.App(context={"stepkit:stage": "qa", "stepkit:bundle": "false",
                            "stepkit:retentionDays": "14", "stepkit:logLevel": "debug"}).node
    assert StackSettings.from_context(node) == StackSettings(
        stage="qa", retention_days=14, log_level="DEBUG", bundle=False)
    assert StackSettings(stage="qa").stack_name("my_app") == "stepkit-my-app-qa"


EXTRA = '''
from functions import app
from runtime import TriggerCron, TriggerEvent


@app.function(id="extra-fn", trigger=[TriggerEvent("extra/happened"), TriggerCron("*/5 * * * *")])
def extra(ctx):
    return None
'''


@pytest.fixture
def functions_with_extra_file(tmp_path: Path) -> Iterator[App]:
    """A copy of functions/ plus one new module, loaded as the `functions` package."""
    shutil.copytree(PROJECT_ROOT / "functions", tmp_path / "functions",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "functions" / "extra.py").write_text(EXTRA)
    saved = {k: v for k, v in sys.modules.items() if k == "functions" or
             k.startswith("functions.")}
    for name in saved:
        del sys.modules[name]
    try:
        yield load_app(root=tmp_path)
    finally:
        for name in [k for k in sys.modules if k == "functions" or k.startswith("functions.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.path.remove(str(tmp_path.resolve()))


def test_a_new_function_file_adds_exactly_its_resources(
    resources: Resources, functions_with_extra_file: App
) -> None:
    app = functions_with_extra_file
    assert isinstance(app.get("extra-fn"), FunctionDef)
    stack, grown, _ = synth(app)
    new_group = function_group("extra-fn") not in {function_group(fn.id) for fn in app
                                                    if fn.id != "extra-fn"}
    before = Counter(r["Type"] for r in resources.values())
    after = Counter(r["Type"] for r in grown.values())
    added = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert added == {
        "AWS::Lambda::Function": 1, "AWS::Lambda::EventSourceMapping": 1,
        "AWS::SQS::Queue": 2, "AWS::SQS::QueuePolicy": 2, "AWS::Logs::LogGroup": 1,
        "AWS::Events::Rule": 1, "AWS::Scheduler::Schedule": 1,
        "AWS::IAM::Role": 2, "AWS::IAM::Policy": 2,
        # DLQ depth, backlog age, and failed deliveries of its trigger rule (its failed runs
        # and pushback are the app's alarms').
        "AWS::CloudWatch::Alarm": 3,
    } | ({  # the first function of its group: the group's dashboard and timer policy
        "AWS::CloudWatch::Dashboard": 1, "AWS::IAM::Policy": 3} if new_group else {})
    f = stack.resources.function("extra-fn")
    assert rule_named(grown, f.trigger_rule)[1]["EventPattern"] == \
        {"source": ["demo"], "detail-type": ["extra/happened"]}
    (schedule,) = [props(s) for s in of_type(grown, "AWS::Scheduler::Schedule").values()
                   if props(s)["Name"] == f.schedules[0].name]
    assert schedule["ScheduleExpression"] == "cron(0/5 * * * ? *)"
    assert lambda_of(grown, "extra-fn")[1]["Environment"]["Variables"]["STEPKIT_QUEUE_URL"] == \
        {"Ref": queue_id(grown, f.queue)}


def test_cron_only_function_gets_no_trigger_rule() -> None:
    app = App("shop")
    app.function(id="tick", trigger=TriggerCron("TZ=America/New_York 30 2 * * 1-5"))(noop)
    _, resources, _ = synth(app)
    names = {props(r)["Name"] for r in of_type(resources, "AWS::Events::Rule").values()}
    assert names == {"shop-router"}
    (s,) = [props(s) for s in of_type(resources, "AWS::Scheduler::Schedule").values()
            if props(s)["Name"] != CENSUS_SCHEDULE]
    assert (s["ScheduleExpression"], s["ScheduleExpressionTimezone"]) == \
        ("cron(30 2 ? * 2-6 *)", "America/New_York")
