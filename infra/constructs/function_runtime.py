"""A queue-fed Lambda: the runtime of one durable function (and of the event router).

Queue -> event source mapping (partial batch responses) -> Lambda, with a dead-letter queue
after ``MAX_RECEIVES`` deliveries, its own log group and its own role. The construct grants
the role nothing beyond its logs and consuming its queue (the event source mapping); the
stack adds the table, the bus and sending to its own queue. The queue's and the event
source's settings are ``QueueDelivery``'s, which the emulator harness plays too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME
from runtime.backends.aws.resources import QueueDelivery
from runtime.deploy import AwsOptions

DLQ_RETENTION = cdk.Duration.days(14)  # the SQS maximum: time to look and redrive
#: The SQS maximum too: a backlog (behind max_concurrency, or a long outage) older than the
#: default 4 days would be deleted silently (expired messages are not dead-lettered); the
#: backlog-age alarm fires long before.
QUEUE_RETENTION = cdk.Duration.days(14)
#: Lambda's recursive-loop detection stops a chain of invocations of one function through
#: SQS after about 16 hops. Every step of a run is such a hop (the worker sends the run's
#: next message to its own queue), as is every 900 s timer hop of a long sleep, so a loop
#: here is the design, not a bug: without ALLOW, runs longer than ~16 steps, or sleeps
#: longer than ~4 hours, would be stopped and dead-lettered.
RECURSIVE_LOOP = lambda_.RecursiveLoop.ALLOW
#: What Lambda needs to attach a function to a VPC (create and delete its network interfaces).
VPC_ACCESS_POLICY = "service-role/AWSLambdaVPCAccessExecutionRole"


def logged_lambda(scope: Construct, *, description: str, handler: str, code: lambda_.Code,
                  memory_mb: int, timeout: cdk.Duration, log_retention: logs.RetentionDays,
                  environment: Mapping[str, str],
                  **props: Any) -> tuple[logs.LogGroup, iam.Role, lambda_.Function]:
    """A stepkit Lambda: its own log group and a role that may write only there, so far.

    Every Lambda of the stack is made here (the queue workers, the event endpoint): one
    runtime and architecture, logs kept ``log_retention`` and deleted with the stack.
    ``props`` are further ``lambda_.Function`` properties.
    """
    log_group = logs.LogGroup(
        scope, "Logs", retention=log_retention, removal_policy=cdk.RemovalPolicy.DESTROY
    )
    role = iam.Role(
        scope,
        "Role",
        description=f"Lambda: {description}",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
    )
    log_group.grant_write(role)
    function = lambda_.Function(
        scope,
        "Function",
        description=description,
        runtime=LAMBDA_RUNTIME,
        architecture=LAMBDA_ARCHITECTURE,
        handler=handler,
        code=code,
        memory_size=memory_mb,
        timeout=timeout,
        environment=dict(environment),
        role=role,
        log_group=log_group,
        **props,
    )
    return log_group, role, function


class QueueWorker(Construct):
    """An SQS queue with a DLQ, consumed by a Lambda that reports partial batch failures.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        queue_name: The queue's name (from ``AppResources``).
        dlq_name: The dead-letter queue's name.
        handler: The Lambda handler (``runtime.handlers.worker.handler`` or the router's).
        code: The shared Lambda code asset.
        environment: Environment variables.
        options: The function's AWS settings (``AwsOptions``): memory, timeout, concurrency,
            batch size, storage, environment, permissions, VPC and layers. Secrets are
            granted by the stack, which knows the account and region.
        log_retention: How long the Lambda's logs are kept.
        description: The Lambda's description.

    Attributes:
        queue: The work queue.
        dlq: Its dead-letter queue.
        role: The Lambda's role.
        log_group: The Lambda's log group.
        function: The Lambda function.
        event_source: The queue -> Lambda event source mapping.
    """

    def __init__(self, scope: Construct, construct_id: str, *, queue_name: str, dlq_name: str,
                 handler: str, code: lambda_.Code, environment: Mapping[str, str],
                 options: AwsOptions, log_retention: logs.RetentionDays,
                 description: str) -> None:
        super().__init__(scope, construct_id)
        timeout = cdk.Duration.seconds(options.timeout_s)
        delivery = QueueDelivery.of(options)
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            queue_name=dlq_name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=queue_name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(delivery.visibility_timeout_s),
            retention_period=QUEUE_RETENTION,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=delivery.max_receives,
                                                  queue=self.dlq),
        )
        self.log_group, self.role, self.function = logged_lambda(
            self, description=description, handler=handler, code=code,
            memory_mb=options.memory_mb, timeout=timeout, log_retention=log_retention,
            environment={**options.environment, **environment},
            ephemeral_storage_size=cdk.Size.mebibytes(options.ephemeral_storage_mb),
            recursive_loop=RECURSIVE_LOOP,
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(self, f"Layer{i}", arn)
                for i, arn in enumerate(options.layers)
            ],
        )
        self._grant(options)
        nag.acknowledge_queue_worker(function=self.function, dlq=self.dlq)
        nag.acknowledge_untraced(self.function)
        # Concurrency is capped where the messages wait (the event source mapping), never
        # by reserved concurrency: throttled receives would count towards MAX_RECEIVES and
        # dead-letter step and timer messages under load.
        self.event_source = sources.SqsEventSource(
            self.queue, batch_size=delivery.batch_size, report_batch_item_failures=True,
            max_concurrency=options.max_concurrency,
        )
        self.function.add_event_source(self.event_source)

    def _grant(self, options: AwsOptions) -> None:
        """The function's own permissions and network (the stack adds stepkit's)."""
        for st in options.policies:
            self.role.add_to_policy(iam.PolicyStatement(
                actions=st.actions, resources=st.resources,
                effect=iam.Effect.ALLOW if st.effect == "Allow" else iam.Effect.DENY,
            ))
        for i, name in enumerate(options.managed_policies):
            self.role.add_managed_policy(
                iam.ManagedPolicy.from_managed_policy_arn(self, f"Managed{i}", name)
                if name.startswith("arn:")
                else iam.ManagedPolicy.from_aws_managed_policy_name(name)
            )
        if options.vpc is not None:
            self.role.add_managed_policy(
                iam.ManagedPolicy.from_aws_managed_policy_name(VPC_ACCESS_POLICY)
            )
            cfn = self.function.node.default_child
            assert isinstance(cfn, lambda_.CfnFunction)
            cfn.vpc_config = lambda_.CfnFunction.VpcConfigProperty(
                subnet_ids=list(options.vpc.subnet_ids),
                security_group_ids=list(options.vpc.security_group_ids),
            )
