"""The run reaper: a finished run's steps and commit log leave with its run item.

TTL deletes a finished run's run item ``retention_days`` after it ended; the table's stream
(keys only) passes that deletion, and nothing else, to a small Lambda through an event-source
filter (REMOVE by the TTL service principal, ``sk = RUN``), which deletes the rest of the
run's partition (``runtime.backends.aws.reaper``). A batch that keeps failing is bisected to
isolate the bad record, retried a few times, then described on a failure queue, whose alarm
fires: those runs' items are then left to their backstop TTL.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME
from runtime.backends.aws.reaper import stream_filter
from runtime.backends.aws.resources import ENV_TABLE

HANDLER = "runtime.handlers.reaper.handler"
#: What the reaper does to the table, and nothing more: check for a run item, read a run's
#: keys, delete them. (IAM has no delete-only form of BatchWriteItem; the code never puts.)
REAPER_ACTIONS = ("dynamodb:BatchWriteItem", "dynamodb:GetItem", "dynamodb:Query")
#: What Lambda's stream poller needs, on the table's stream only (DynamoDB's documented
#: policy for a Lambda that processes stream records).
STREAM_ACTIONS = (
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
)
RETRY_ATTEMPTS = 5
BATCH_SIZE = 100


class RunReaper(Construct):
    """Deletes the rest of a run's partition when TTL deletes its run item.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        table: The state table, with a stream (any view type: only keys are read).
        code: The shared Lambda code asset.
        environment: Environment variables shared by every stepkit Lambda.
        log_retention: How long the reaper's logs are kept.

    Attributes:
        function: The reaper Lambda.
        role: Its role.
        failed: The on-failure destination: a description of each batch given up on.
        mapping: The stream event source mapping.
        alarm: Fires when ``failed`` holds anything.
    """

    def __init__(self, scope: Construct, construct_id: str, *, table: dynamodb.Table,
                 code: lambda_.Code, environment: Mapping[str, str],
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        stream_arn = table.table_stream_arn
        if stream_arn is None:
            raise ValueError("the run reaper needs the state table's stream enabled")
        self.failed = sqs.Queue(
            self, "Failed", encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
        )
        cdk.Validations.of(self.failed).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-SQS3",
            reason="This queue is a dead-letter destination itself: the stream mapping's "
            "on-failure destination, alarmed on any message.",
        ))
        nag.acknowledge_dead_letter_queue(self.failed)
        log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=cdk.RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self, "Role", description="Lambda: stepkit run reaper",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        log_group.grant_write(self.role)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=list(REAPER_ACTIONS), resources=[table.table_arn]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=list(STREAM_ACTIONS), resources=[stream_arn]))
        self.function = lambda_.Function(
            self,
            "Function",
            description="stepkit: deletes a run's steps and log once TTL deleted its run item",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=HANDLER,
            code=code,
            memory_size=256,
            timeout=cdk.Duration.minutes(5),
            environment={**environment, ENV_TABLE: table.table_name},
            role=self.role,
            log_group=log_group,
        )
        cdk.Validations.of(self.function).acknowledge(cdk.Acknowledgment(
            id="Serverless-LambdaDLQ",
            reason="A DynamoDB stream event source mapping invokes the function "
            "synchronously, so a Lambda (asynchronous-invocation) DLQ would never receive "
            "anything; records the reaper gives up on go to the mapping's on-failure "
            "destination (the Failed queue), which alarms.",
        ))
        nag.acknowledge_untraced(self.function)
        self.mapping = lambda_.EventSourceMapping(
            self,
            "Stream",
            target=self.function,
            event_source_arn=stream_arn,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=BATCH_SIZE,
            bisect_batch_on_error=True,
            retry_attempts=RETRY_ATTEMPTS,
            on_failure=sources.SqsDlq(self.failed),
            filters=[lambda_.FilterCriteria.filter(stream_filter())],
        )
        self.alarm = cloudwatch.Alarm(
            self,
            "FailedAlarm",
            alarm_description="stepkit run reaper gave up on stream records: those runs' "
            "steps and log stay until their backstop TTL. See the reaper's logs.",
            metric=self.failed.metric_approximate_number_of_messages_visible(
                period=cdk.Duration.minutes(5), statistic="Maximum"),
            threshold=0,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
