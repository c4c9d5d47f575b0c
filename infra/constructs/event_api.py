"""The optional HTTPS event endpoint (``-c stepkit:eventApi=true``): an API Gateway HTTP API.

``POST /e/{key}`` and ``POST /e`` (the event key in ``Authorization: Bearer``) publish events,
``POST /webhooks/{source}`` takes a provider's signed webhook; all three reach one Lambda
(``runtime.handlers.ingress``, payload format 2.0), which checks the key or the signature.
An HTTP API rather than a Lambda function URL: its stage throttle answers 429 before Lambda
is invoked, so a flood costs no Lambda time and takes none of the account's Lambda
concurrency, which the function workers share; it also takes a custom domain natively. It
has no AWS WAF: put CloudFront (with WAF) in front where one is needed.

The access log never holds the request's path: ``/e/{key}`` carries the event key, so the
log names the route (``$context.routeKey``, the template), never the path or the raw request.
The construct grants its role nothing but its logs; the stack adds the bus, the event keys'
items, the payload objects and the webhook secrets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import aws_cdk as cdk
import jsii
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import nag
from infra.constructs.function_runtime import logged_lambda
from runtime.ingress.endpoint import ROUTES

HANDLER = "runtime.handlers.ingress.handler"
MEMORY_MB = 512
#: Well under the HTTP API's 30-second integration timeout, and short because the stage
#: throttle caps requests, not concurrency: invocations that hang until their timeout hold
#: rate x timeout of the account's Lambda concurrency (100 rps x 10 s = 1,000, the default
#: account limit). A request is one key read (cached) and at most 100 PutEvents calls, each
#: bounded by the handler's client timeouts (``runtime.handlers.ingress``), well under a
#: second when AWS answers.
TIMEOUT_S = 10
#: The default stage's steady rate (requests a second) and burst (the token bucket's size).
#: At ~100 ms an event, 100 a second keep about 10 invocations busy.
DEFAULT_RATE = 100
DEFAULT_BURST = 200
#: The account's HTTP API quotas per Region (shared by all its APIs): a stage limit above
#: them throttles nothing more.
MAX_RATE = 10_000
MAX_BURST = 5_000
#: What each access log line holds: the route's template, never the path (it may carry
#: an event key) nor the raw request.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "time": "$context.requestTimeEpoch",
    "route": "$context.routeKey",
    "status": "$context.status",
    "ip": "$context.identity.sourceIp",
    "latencyMs": "$context.responseLatency",
    "error": "$context.error.message",
    "integrationError": "$context.integrationErrorMessage",
}


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLog:
    """Access log settings: a log group, one JSON line per request."""

    def __init__(self, log_group: logs.ILogGroup) -> None:
        self._destination = apigwv2.LogGroupLogDestination(log_group)

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return apigateway.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS))


class EventApi(Construct):
    """An HTTP API whose three routes reach one Lambda, throttled at its stage.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        api_name: The API's name (the stack's).
        code: The shared Lambda code asset.
        environment: The Lambda's environment (``AppResources.ingress_env`` and the
            Powertools settings; the stack adds the webhook secrets).
        log_retention: How long the Lambda's logs and the access logs are kept.
        rate: The stage's steady request rate (requests a second), 1 to ``MAX_RATE``.
        burst: The stage's burst, 1 to ``MAX_BURST``.
        description: The Lambda's description.

    Attributes:
        role: The Lambda's role (its logs only; the stack grants the rest).
        log_group: The Lambda's log group.
        function: The endpoint's Lambda.
        api: The HTTP API.
        stage: Its ``$default`` stage, throttled and access-logged.
        access_logs: The stage's access log group.
        alarm: Fires on the API's 5xx answers (the Lambda failed, timed out or was
            throttled).

    Raises:
        ValueError: ``rate`` or ``burst`` is out of range.
    """

    def __init__(self, scope: Construct, construct_id: str, *, api_name: str,
                 code: lambda_.Code, environment: Mapping[str, str],
                 log_retention: logs.RetentionDays, rate: int = DEFAULT_RATE,
                 burst: int = DEFAULT_BURST, description: str) -> None:
        super().__init__(scope, construct_id)
        if not (1 <= rate <= MAX_RATE and 1 <= burst <= MAX_BURST):
            raise ValueError(f"event API throttle: rate 1-{MAX_RATE} and burst 1-{MAX_BURST}, "
                             f"got {rate} and {burst}")
        self.log_group, self.role, self.function = logged_lambda(
            self, description=description, handler=HANDLER, code=code, memory_mb=MEMORY_MB,
            timeout=cdk.Duration.seconds(TIMEOUT_S), log_retention=log_retention,
            environment=environment)
        nag.acknowledge_event_api_function(self.function)
        nag.acknowledge_untraced(self.function)
        self.api = apigwv2.HttpApi(self, "Api", api_name=api_name, create_default_stage=False,
                                   description=description)
        integration = integrations.HttpLambdaIntegration(
            "Ingress", self.function,
            payload_format_version=apigwv2.PayloadFormatVersion.VERSION_2_0)
        for path in ROUTES:
            self.api.add_routes(path=path, methods=[apigwv2.HttpMethod.POST],
                                integration=integration)
        nag.acknowledge_event_api_routes(self.api)
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=log_retention,
            removal_policy=cdk.RemovalPolicy.DESTROY)
        self.stage = apigwv2.HttpStage(
            self, "Stage", http_api=self.api, stage_name="$default", auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(rate_limit=rate, burst_limit=burst),
            access_log_settings=_AccessLog(self.access_logs),
        )
        self.alarm = self.api.metric_server_error(
            period=cdk.Duration.minutes(5), statistic="Sum",
        ).create_alarm(
            self, "ServerErrors",
            alarm_description=f"{description}: answered 5xx (its Lambda failed, timed out or "
            "was throttled); the senders were told to retry. See the endpoint's logs.",
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
