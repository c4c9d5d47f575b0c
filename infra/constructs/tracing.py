"""Optional X-Ray active tracing of stepkit's Lambdas (``-c stepkit:tracing=true``).

Off by default: X-Ray charges per trace recorded and scanned (after a free tier), and every
step is at least one invocation, so a busy app pays for a trace per step. Turned on, Lambda
records each invocation and the handlers' Powertools Tracer adds the AWS calls
(DynamoDB, SQS, EventBridge) as subsegments.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_

from runtime.backends.aws.resources import ENV_TRACING

#: What the Lambda needs to send traces (the AWSXRayDaemonWriteAccess managed policy's core).
XRAY_ACTIONS = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]


def enable_tracing(function: lambda_.Function, role: iam.Role) -> None:
    """Active tracing on a stepkit Lambda, its role allowed to send traces."""
    cfn = function.node.default_child
    assert isinstance(cfn, lambda_.CfnFunction)
    cfn.tracing_config = lambda_.CfnFunction.TracingConfigProperty(mode="Active")
    function.add_environment(ENV_TRACING, "true")
    role.add_to_principal_policy(iam.PolicyStatement(actions=XRAY_ACTIONS, resources=["*"]))
    cdk.Validations.of(role).acknowledge(cdk.Acknowledgment(
        id="AwsSolutions-IAM5[Resource::*]",
        reason="X-Ray PutTraceSegments and PutTelemetryRecords have no resource-level "
        "permissions: AWS documents Resource * for them (only with stepkit:tracing=true).",
    ))
