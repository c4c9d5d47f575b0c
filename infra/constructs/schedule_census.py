"""The schedule census: an hourly count of the app's schedules, alarmed before the quota.

Scheduler publishes no metric of how many schedules exist, and past the account's quota every
``CreateSchedule`` fails, so every new long timer fails. A small Lambda
(``runtime.handlers.census``), fired hourly by a schedule in the app's group, pages through
``ListSchedules`` up to :data:`~runtime.backends.aws.census.CAP` and publishes the count as
``stepkit`` / ``Schedules``; the alarm fires when it reaches the cap.

Missing data is *missing*, with the alarm topic on ``INSUFFICIENT_DATA`` as well as on
``ALARM``: a census that failed publishes nothing, and failure is likeliest exactly when the
group is largest (the longest count), so silence must not read as OK (``notBreaching``) nor
keep the last state for ever (``ignore``); ``breaching`` would page on every new stack,
whose alarm has no data until the first hourly run.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from infra import nag
from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME
from infra.constructs.delivery import DeliveryDlq
from runtime.backends.aws.census import CAP, ENV_SCHEDULE_GROUP, SCHEDULES
from runtime.backends.aws.resources import ENV_APP
from runtime.orchestration.metrics import NAMESPACE

HANDLER = "runtime.handlers.census.handler"
#: The census's schedule, in the app's group (names are unique per group).
SCHEDULE_NAME = "stepkit-census"
#: Every hour, on the hour (UTC): one data point in each hour the alarm evaluates.
EXPRESSION = "cron(0 * * * ? *)"
PERIOD = cdk.Duration.hours(1)
#: Lambda's longest: a census at the cap is 10,000 calls, ~500 s at its pace.
TIMEOUT = cdk.Duration.minutes(15)


class ScheduleCensus(Construct):
    """Counts the app's schedules hourly and alarms before the account's quota.

    Args:
        scope: Parent construct (the root stack).
        construct_id: Construct id.
        service: The app id (the metric's ``service`` dimension).
        group: The app's schedule group (the census schedule lives in it too).
        code: The shared Lambda code asset.
        environment: Environment variables shared by every stepkit Lambda.
        log_retention: How long the census's logs are kept.
        dlq: The app's delivery DLQ, where a fire Scheduler cannot deliver ends.

    Attributes:
        function: The census Lambda.
        role: Its role: its log group, and ``ListSchedules``.
        invoke_role: The role Scheduler invokes it with.
        schedule: The hourly schedule.
        alarm: ``Schedules`` >= the cap in an hour.
    """

    def __init__(self, scope: Construct, construct_id: str, *, service: str,
                 group: scheduler.CfnScheduleGroup, code: lambda_.Code,
                 environment: Mapping[str, str], log_retention: logs.RetentionDays,
                 dlq: DeliveryDlq) -> None:
        super().__init__(scope, construct_id)
        log_group = logs.LogGroup(
            self, "Logs", retention=log_retention, removal_policy=cdk.RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", description="Lambda: stepkit schedule census",
                             assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
        log_group.grant_write(self.role)
        self.role.add_to_principal_policy(_list_schedules())
        self.function = lambda_.Function(
            self, "Function",
            description="stepkit: counts the app's schedules for the schedules-quota alarm",
            runtime=LAMBDA_RUNTIME, architecture=LAMBDA_ARCHITECTURE, handler=HANDLER,
            code=code, memory_size=256, timeout=TIMEOUT,
            environment={**environment, ENV_APP: service, ENV_SCHEDULE_GROUP: group.ref},
            role=self.role, log_group=log_group,
            # A failed census is counted again by the next hour's; a retry would only repeat
            # its cost. (It logs a failed count and returns: only a crash is an error.)
            retry_attempts=0, max_event_age=PERIOD,
        )
        _acknowledge(self.function, self.role)
        nag.acknowledge_untraced(self.function)
        self.invoke_role = iam.Role(
            self, "InvokeRole", description="EventBridge Scheduler: run the schedule census",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}}),
        )
        invoke = iam.Policy(self, "InvokePolicy", roles=[self.invoke_role], statements=[
            iam.PolicyStatement(actions=["lambda:InvokeFunction"],
                                resources=[self.function.function_arn]),
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[dlq.queue.queue_arn]),
        ])
        self.schedule = scheduler.CfnSchedule(
            self, "Hourly", name=SCHEDULE_NAME, group_name=group.ref,
            description=f"{service}: count the app's schedules (stepkit schedule census)",
            schedule_expression=EXPRESSION, schedule_expression_timezone="UTC",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.function.function_arn, role_arn=self.invoke_role.role_arn,
                retry_policy=dlq.schedule_retry_policy(),
                dead_letter_config=dlq.schedule_target()),
        )
        # Scheduler checks the role when the schedule is created: wait for its policy.
        self.schedule.node.add_dependency(invoke)
        self.alarm = self._alarm(service)

    def _alarm(self, service: str) -> cloudwatch.Alarm:
        metric = cloudwatch.Metric(namespace=NAMESPACE, metric_name=SCHEDULES,
                                   dimensions_map={"service": service}, period=PERIOD,
                                   statistic="Maximum")
        return metric.create_alarm(
            self, "Alarm",
            alarm_description=f"{service}: {CAP:,} or more schedules in the app's group "
            "(pending timers), a tenth of the account's default quota of 10,000,000 per "
            "Region, shared by every app; past the quota every new long timer fails. Find "
            "what keeps timers pending (long waits, finish timeouts) or raise the quota. "
            "INSUFFICIENT_DATA: the census could not count (see its logs).",
            threshold=CAP,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1, datapoints_to_alarm=1,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )


def _list_schedules() -> iam.PolicyStatement:
    """``ListSchedules`` on ``*``: the action has no resource type in IAM (it may list every
    group), so a statement naming the group's schedules would never match and every census
    would be refused. The census passes its ``GroupName``; the action reads names and
    states, not a schedule's target input."""
    return iam.PolicyStatement(actions=["scheduler:ListSchedules"], resources=["*"])


def _acknowledge(function: lambda_.Function, role: iam.Role) -> None:
    cdk.Validations.of(function).acknowledge(cdk.Acknowledgment(
        id="Serverless-LambdaDLQ",
        reason="The census is invoked hourly and keeps no state: a failed invocation is "
        "retried by the next hour's, and the alarm notifies when no count arrives "
        "(INSUFFICIENT_DATA), so a dead-letter queue would hold nothing anyone acts on.",
    ))
    cdk.Validations.of(function).acknowledge(cdk.Acknowledgment(
        id="Serverless-LambdaAsyncFailureDestination",
        reason="Asynchronous retries are off (the next hour's census counts again), and an "
        "invocation that fails publishes no count, which the alarm's INSUFFICIENT_DATA "
        "notification reports; a failure destination would duplicate that signal.",
    ))
    cdk.Validations.of(role).acknowledge(cdk.Acknowledgment(
        id="AwsSolutions-IAM5[Resource::*]",
        reason="scheduler:ListSchedules supports no resource-level permission (IAM's "
        "service authorization reference lists no resource type for it); it is the only "
        "action on '*', and the census always passes the app's GroupName.",
    ))
