"""A queue-fed Lambda: the runtime of one durable function (and of the event router).

Queue -> event source mapping (partial batch responses) -> Lambda, with a dead-letter queue
after ``MAX_RECEIVES`` deliveries, its own log group and its own role. The construct grants
the role nothing beyond its logs and consuming its queue (the event source mapping); the
stack adds the table, the bus and sending to its own queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, PYTHON_VERSION
from runtime.backends.aws.resources import MAX_RECEIVES

#: Lambda's timeout is per batch, and SQS may redeliver a record while it is still being
#: handled if the visibility timeout is shorter: AWS recommends at least six times.
VISIBILITY_FACTOR = 6
DLQ_RETENTION = cdk.Duration.days(14)  # the SQS maximum: time to look and redrive
_RANGES = {"memory_mb": (128, 10240), "timeout_s": (1, 900),
           "reserved_concurrency": (0, 1_000_000), "batch_size": (1, 10)}


@dataclass(frozen=True)
class WorkerOptions:
    """The deploy options a function may set in ``@app.function(...)``.

    Attributes:
        memory_mb: Lambda memory (128-10240), default 256.
        timeout_s: Lambda timeout in seconds (1-900), default 60.
        reserved_concurrency: Reserved concurrent executions, unset by default.
        batch_size: Records per invocation (1-10), default 1: the records of a batch run one
            after another within one timeout, so a batch of slow steps could time out whole.
    """

    memory_mb: int = 256
    timeout_s: int = 60
    reserved_concurrency: int | None = None
    batch_size: int = 1

    @classmethod
    def from_options(cls, where: str, options: Mapping[str, Any]) -> WorkerOptions:
        """Read and check the known options (others are left to other tools).

        Raises:
            ValueError: An option is not a whole number in its range; the message names
                ``where`` (the function).
        """
        values: dict[str, int] = {}
        for name, (low, high) in _RANGES.items():
            value = options.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(
                    f"{where}: option {name} must be a whole number {low}-{high}, got {value!r}"
                )
            values[name] = value
        return cls(**values)


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
        options: Memory, timeout, concurrency and batch size.
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
                 options: WorkerOptions, log_retention: logs.RetentionDays,
                 description: str) -> None:
        super().__init__(scope, construct_id)
        timeout = cdk.Duration.seconds(options.timeout_s)
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
            visibility_timeout=cdk.Duration.seconds(options.timeout_s * VISIBILITY_FACTOR),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=MAX_RECEIVES, queue=self.dlq),
        )
        self.log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=cdk.RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self,
            "Role",
            description=f"Lambda: {description}",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=handler,
            code=code,
            memory_size=options.memory_mb,
            timeout=timeout,
            reserved_concurrent_executions=options.reserved_concurrency,
            environment=dict(environment),
            role=self.role,
            log_group=self.log_group,
        )
        cdk.Validations.of(self.function).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-L1",
            reason=f"The runtime is pinned to Python {PYTHON_VERSION}, the version the bundled "
            "wheels are built for (infra/bundling.py); google-re2, which cel-python needs, has "
            "no wheels for newer Pythons in uv.lock. Move both together.",
        ))
        self.event_source = sources.SqsEventSource(
            self.queue, batch_size=options.batch_size, report_batch_item_failures=True
        )
        self.function.add_event_source(self.event_source)
