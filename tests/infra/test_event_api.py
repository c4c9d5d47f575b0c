"""The optional HTTPS event endpoint (``-c stepkit:eventApi=true``), read from the template.

Absent by default; turned on, three POST routes reach one Lambda through a payload-2.0 proxy
integration on a throttled, access-logged ``$default`` stage, and the Lambda's role may do
exactly what the endpoint does: publish to the bus, read event keys' items, put large events'
payload objects, read the webhook sources' secrets.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra.bundling import PROJECT_ROOT
from infra.stack import StackSettings, StepkitStack
from runtime import App, TriggerEvent
from runtime.deploy_limits import MAX_RESOURCES
from runtime.ingress.webhooks import SignatureError, Verified, WebhookRequest
from tests.infra.templates import flat

pytestmark = pytest.mark.xdist_group("cdk")

Resources = dict[str, dict[str, Any]]
HANDLER = "runtime.handlers.ingress.handler"
ROUTE_KEYS = {"POST /e/{key}", "POST /e", "POST /webhooks/{source}"}
#: The $context variables an access log line may hold: none names the path or the request.
LOGGABLE = {"requestId", "requestTimeEpoch", "routeKey", "status", "identity.sourceIp",
            "responseLatency", "error.message", "integrationErrorMessage"}
#: The endpoint's environment: names, never values of keys or secrets.
ENVIRONMENT = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL", "STEPKIT_APP",
               "STEPKIT_TABLE", "STEPKIT_BUS", "STEPKIT_PAYLOAD_BUCKET", "STEPKIT_SECRETS"}
SECRETS = {"STRIPE_SECRET": "secretsmanager:shop/stripe", "HOOK_SECRET": "ssm:/shop/hook"}


@dataclass(frozen=True)
class HeaderEquals:
    """A verifier that accepts a request whose ``x-token`` header is the secret."""

    secret: str

    def verify(self, request: WebhookRequest, secret: str, now: float) -> Verified:
        if request.headers.get("x-token") != secret:
            raise SignatureError("x-token does not match")
        return Verified(timestamp=now)


def noop(ctx: Any) -> None:
    return None


def shop() -> App:
    app = App("shop")
    app.function(id="order", trigger=TriggerEvent("shop/order"))(noop)
    app.webhook("stripe", verify=HeaderEquals("STRIPE_SECRET"),
                secrets={"STRIPE_SECRET": SECRETS["STRIPE_SECRET"]})
    app.webhook("hook", verify=HeaderEquals("HOOK_SECRET"),
                secrets={"HOOK_SECRET": SECRETS["HOOK_SECRET"]})
    return app


def synth(context: dict[str, Any], app: App | None = None) -> tuple[StepkitStack, dict]:
    cdk_app = cdk.App(context={"stepkit:bundle": "false", **context})
    stack = StepkitStack(cdk_app, "test", app=app or shop(),
                         settings=StackSettings.from_context(cdk_app.node))
    return stack, flat(stack)


@pytest.fixture(scope="module")
def off() -> tuple[StepkitStack, dict]:
    return synth({})


@pytest.fixture(scope="module")
def on() -> tuple[StepkitStack, dict]:
    return synth({"stepkit:eventApi": "true"})


def of_type(resources: Resources, kind: str) -> Resources:
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def props(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties", {})


def one(resources: Resources, kind: str) -> tuple[str, dict[str, Any]]:
    (found,) = of_type(resources, kind).items()
    return found[0], props(found[1])


def ingress(resources: Resources) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, props(v)) for k, v in of_type(resources, "AWS::Lambda::Function").items()
                if props(v).get("Handler") == HANDLER]
    return found


def statements(resources: Resources, role: str) -> list[dict[str, Any]]:
    """The statements of the role's inline policies."""
    return [s for p in of_type(resources, "AWS::IAM::Policy").values()
            if {"Ref": role} in props(p)["Roles"] for s in props(p)["PolicyDocument"]["Statement"]]


def logical_id(resources: Resources, kind: str) -> str:
    return one(resources, kind)[0]


# -- off by default -------------------------------------------------------------------------


def test_absent_by_default(off: tuple[StepkitStack, dict]) -> None:
    stack, template = off
    assert stack.event_api is None
    assert not [v for v in template["Resources"].values()
                if v["Type"].startswith("AWS::ApiGatewayV2::")]
    assert not [v for v in template["Resources"].values()
                if props(v).get("Handler") == HANDLER]
    assert "EventApiUrl" not in template["Outputs"]
    defaults = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]
    assert defaults["stepkit:eventApi"] is False
    assert StackSettings.from_context(cdk.App(context=defaults).node).event_api is False


# -- the API --------------------------------------------------------------------------------


def test_three_post_routes_reach_the_ingress_lambda_through_one_payload_2_proxy(
    on: tuple[StepkitStack, dict]
) -> None:
    resources = on[1]["Resources"]
    api, _ = one(resources, "AWS::ApiGatewayV2::Api")
    integration, p = one(resources, "AWS::ApiGatewayV2::Integration")
    function, _ = ingress(resources)
    assert p == {"ApiId": {"Ref": api}, "IntegrationType": "AWS_PROXY",
                 "IntegrationUri": {"Fn::GetAtt": [function, "Arn"]},
                 "PayloadFormatVersion": "2.0"}
    routes = [props(r) for r in of_type(resources, "AWS::ApiGatewayV2::Route").values()]
    assert sorted(r["RouteKey"] for r in routes) == sorted(ROUTE_KEYS)
    for route in routes:
        assert route["ApiId"] == {"Ref": api}
        assert route["Target"] == {"Fn::Join": ["", ["integrations/", {"Ref": integration}]]}
    # API Gateway may invoke it for those routes only, from any stage.
    invokers = [props(r) for r in of_type(resources, "AWS::Lambda::Permission").values()
                if props(r)["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}]
    assert {r["Principal"] for r in invokers} == {"apigateway.amazonaws.com"}
    assert sorted(r["SourceArn"]["Fn::Join"][1][-1] for r in invokers) == \
        sorted(f"/*/*{key.split(' ')[1]}" for key in ROUTE_KEYS)


def test_the_lambda_has_512_mb_10_s_its_own_logs_and_the_ingress_environment(
    on: tuple[StepkitStack, dict]
) -> None:
    stack, template = on
    resources = template["Resources"]
    _, p = ingress(resources)
    assert (p["MemorySize"], p["Timeout"]) == (512, 10)  # well under the API's 30 s
    assert p["Architectures"] == ["arm64"]
    assert "TracingConfig" not in p
    env = p["Environment"]["Variables"]
    assert set(env) == ENVIRONMENT
    assert {k: env[k] for k in ("STEPKIT_APP", "STEPKIT_TABLE", "STEPKIT_BUS")} == {
        "STEPKIT_APP": "shop", "STEPKIT_TABLE": stack.resources.table,
        "STEPKIT_BUS": stack.resources.bus}
    assert env["STEPKIT_PAYLOAD_BUCKET"] == {"Ref": logical_id(resources, "AWS::S3::Bucket")}
    assert json.loads(env["STEPKIT_SECRETS"]) == SECRETS
    logs = props(resources[p["LoggingConfig"]["LogGroup"]["Ref"]])
    assert logs["RetentionInDays"] == 30


def test_the_stage_is_the_default_one_throttled_at_100_and_200_by_default(
    on: tuple[StepkitStack, dict]
) -> None:
    resources = on[1]["Resources"]
    api, _ = one(resources, "AWS::ApiGatewayV2::Api")
    _, stage = one(resources, "AWS::ApiGatewayV2::Stage")
    assert (stage["ApiId"], stage["StageName"], stage["AutoDeploy"]) == \
        ({"Ref": api}, "$default", True)
    assert stage["DefaultRouteSettings"] == {"ThrottlingRateLimit": 100,
                                             "ThrottlingBurstLimit": 200}
    output = on[1]["Outputs"]["EventApiUrl"]["Value"]["Fn::Join"][1]
    assert output[:2] == ["https://", {"Ref": api}] and output[-1] == "/"


def test_access_logs_name_the_route_never_the_path(on: tuple[StepkitStack, dict]) -> None:
    resources = on[1]["Resources"]
    _, stage = one(resources, "AWS::ApiGatewayV2::Stage")
    settings = stage["AccessLogSettings"]
    log_group = settings["DestinationArn"]["Fn::GetAtt"][0]
    assert props(resources[log_group])["RetentionInDays"] == 30
    line = json.loads(settings["Format"])  # one JSON object a request
    variables = {m for v in line.values() for m in re.findall(r"\$context\.([\w.]+)", v)}
    assert {"requestId", "routeKey", "status", "identity.sourceIp"} <= variables
    assert variables <= LOGGABLE, variables - LOGGABLE
    assert "path" not in settings["Format"].lower()
    assert all(v.count("$") == 1 and v.startswith("$context.") for v in line.values())


def test_server_errors_alarm_notifies_the_alarm_topic(on: tuple[StepkitStack, dict]) -> None:
    resources = on[1]["Resources"]
    api, _ = one(resources, "AWS::ApiGatewayV2::Api")
    topic = logical_id(resources, "AWS::SNS::Topic")
    (alarm,) = [props(a) for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
                if props(a).get("Namespace") == "AWS/ApiGateway"]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == ("5xx", "Sum", 0)
    assert alarm["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": api}}]
    assert alarm["AlarmActions"] == [{"Ref": topic}]


# -- least privilege ------------------------------------------------------------------------


def test_the_role_may_publish_read_event_keys_put_payloads_and_read_the_webhook_secrets(
    on: tuple[StepkitStack, dict]
) -> None:
    resources = on[1]["Resources"]
    _, p = ingress(resources)
    role = p["Role"]["Fn::GetAtt"][0]
    logs = p["LoggingConfig"]["LogGroup"]["Ref"]
    bucket = logical_id(resources, "AWS::S3::Bucket")
    found = {tuple(sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"])):
             (s["Resource"], s.get("Condition")) for s in statements(resources, role)}
    assert all(s["Effect"] == "Allow" for s in statements(resources, role))
    assert len(found) == len(statements(resources, role)) == 6
    assert "ManagedPolicyArns" not in props(resources[role])  # nothing beyond these
    secret_arn, parameter_arn = (found.pop((action,))[0] for action in (
        "secretsmanager:GetSecretValue", "ssm:GetParameter"))
    assert found == {
        ("logs:CreateLogStream", "logs:PutLogEvents"): ({"Fn::GetAtt": [logs, "Arn"]}, None),
        ("events:PutEvents",): (
            {"Fn::GetAtt": [logical_id(resources, "AWS::Events::EventBus"), "Arn"]}, None),
        ("dynamodb:GetItem",): (
            {"Fn::GetAtt": [logical_id(resources, "AWS::DynamoDB::Table"), "Arn"]},
            {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["GATE#eventkey"]}}),
        ("s3:PutObject",): ({"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/runs/*"]]},
                            None),
    }
    assert json.dumps(secret_arn).endswith(':secret:shop/stripe-??????"]]}')
    assert json.dumps(parameter_arn).endswith(':parameter/shop/hook"]]}')


def test_only_the_endpoint_may_read_the_webhook_secrets(on: tuple[StepkitStack, dict]) -> None:
    resources = on[1]["Resources"]
    _, p = ingress(resources)
    readers = {r for r, v in of_type(resources, "AWS::IAM::Role").items()
               if any(a.startswith(("secretsmanager:", "ssm:")) for s in statements(resources, r)
                      for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))}
    assert readers == {p["Role"]["Fn::GetAtt"][0]}
    workers = [props(v)["Environment"]["Variables"]
               for v in of_type(resources, "AWS::Lambda::Function").values()
               if props(v).get("Handler") != HANDLER and "Environment" in props(v)]
    assert workers and not [env for env in workers if "STEPKIT_SECRETS" in env]


def test_no_secrets_no_secret_environment_nor_grant() -> None:
    app = App("plain")
    app.function(id="order", trigger=TriggerEvent("shop/order"))(noop)
    _, template = synth({"stepkit:eventApi": "true"}, app)
    resources = template["Resources"]
    _, p = ingress(resources)
    assert "STEPKIT_SECRETS" not in p["Environment"]["Variables"]
    text = json.dumps(statements(resources, p["Role"]["Fn::GetAtt"][0]))
    assert "secretsmanager" not in text and "ssm:" not in text


def test_no_event_key_material_in_the_template(on: tuple[StepkitStack, dict]) -> None:
    text = json.dumps(on[1])
    # "eventkey" is the name of the keys' partition, in the one IAM condition; no key, no
    # key's digest, no secret value.
    assert text.count("eventkey") == 1
    assert "Bearer" not in json.dumps(on[1]["Resources"])
    _, p = ingress(on[1]["Resources"])
    assert not [v for k, v in p["Environment"]["Variables"].items()
                if k != "STEPKIT_SECRETS" and re.search(r"key|secret|token", k, re.I)]


# -- settings -------------------------------------------------------------------------------


def test_throttle_and_tracing_context_reach_the_stage_and_the_lambda() -> None:
    stack, template = synth({"stepkit:eventApi": "yes", "stepkit:eventApiRate": "50",
                             "stepkit:eventApiBurst": 80, "stepkit:tracing": "true"})
    assert (stack.settings.event_api_rate, stack.settings.event_api_burst) == (50, 80)
    resources = template["Resources"]
    _, stage = one(resources, "AWS::ApiGatewayV2::Stage")
    assert stage["DefaultRouteSettings"] == {"ThrottlingRateLimit": 50,
                                             "ThrottlingBurstLimit": 80}
    _, p = ingress(resources)
    assert p["TracingConfig"] == {"Mode": "Active"}
    role = p["Role"]["Fn::GetAtt"][0]
    assert [s["Resource"] for s in statements(resources, role)
            if "xray:PutTraceSegments" in s["Action"]] == ["*"]


@pytest.mark.parametrize(("key", "bad"), [
    ("stepkit:eventApiRate", "0"), ("stepkit:eventApiRate", "10001"),
    ("stepkit:eventApiRate", "fast"), ("stepkit:eventApiRate", "2.5"),
    ("stepkit:eventApiBurst", "0"), ("stepkit:eventApiBurst", "5001"),
    ("stepkit:eventApiBurst", "-3"), ("stepkit:eventApiBurst", []),
])
def test_a_bad_throttle_is_refused_naming_its_key(key: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=f"context {key} must be a whole number from 1 to"):
        StackSettings.from_context(cdk.App(context={"stepkit:eventApi": "true", key: bad}).node)


def test_a_bad_switch_is_refused_naming_its_key() -> None:
    with pytest.raises(ValueError, match="context stepkit:eventApi must be true or false"):
        StackSettings.from_context(cdk.App(context={"stepkit:eventApi": "sometimes"}).node)


def test_the_root_template_stays_small(off: tuple[StepkitStack, dict],
                                       on: tuple[StepkitStack, dict]) -> None:
    """The endpoint lives in the root stack: it adds a fixed 15 resources (Lambda, role,
    policy, two log groups, API, integration, three routes and their three invoke
    permissions, stage, alarm), whatever the number of functions or sources."""
    root_on = Template.from_stack(on[0]).to_json()["Resources"]
    root_off = Template.from_stack(off[0]).to_json()["Resources"]
    assert len(root_on) - len(root_off) == 15
    assert len(root_on) <= MAX_RESOURCES // 4
