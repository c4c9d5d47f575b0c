"""EventBridge: the app's bus, the rules that deliver its events to queues, and cron schedules.

Rules and schedules are L1 resources on purpose: their event patterns, expressions and inputs
come verbatim from ``runtime.backends.aws.resources`` (the handlers parse exactly those
shapes), so nothing is translated into the L2 types and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.delivery import DeliveryDlq
from runtime.backends.aws.resources import Schedule


class AppEventBus(Construct):
    """The app's custom event bus: ``PutEvents`` with Source = app id, DetailType = event name.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        bus_name: ``AppResources.bus``.

    Attributes:
        bus: The event bus.
    """

    def __init__(self, scope: Construct, construct_id: str, *, bus_name: str) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=bus_name)


class QueueRule(Construct):
    """A rule on the bus that delivers matching events to one SQS queue.

    The queue's policy lets EventBridge send only on behalf of this rule (``aws:SourceArn``).
    The target retries for a day and then puts the event in the app's delivery DLQ.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        bus: The app's bus.
        rule_name: The rule's name (from ``AppResources``).
        pattern: The EventBridge pattern (from ``AppResources``), used verbatim.
        queue: The target queue.
        dlq: The app's delivery DLQ.

    Attributes:
        rule: The rule.
    """

    def __init__(self, scope: Construct, construct_id: str, *, bus: events.IEventBus,
                 rule_name: str, pattern: dict[str, Any], queue: sqs.IQueue,
                 dlq: DeliveryDlq) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.CfnRule(
            self,
            "Rule",
            name=rule_name,
            event_bus_name=bus.event_bus_name,
            event_pattern=pattern,
            state="ENABLED",
        )
        self.rule.targets = [events.CfnRule.TargetProperty(
            id="queue", arn=queue.queue_arn, retry_policy=dlq.rule_retry_policy(),
            dead_letter_config=dlq.rule_target(),
        )]
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
                conditions={"ArnEquals": {"aws:SourceArn": self.rule.attr_arn}},
            )
        )


class CronSchedules(Construct):
    """EventBridge Scheduler schedules that put a function's cron fires on its queue.

    One role per function may only ``sqs:SendMessage`` to that queue, and only Scheduler in
    this account may assume it. Each schedule sends ``Schedule.input`` from ``AppResources``
    (the cron-fire message the worker parses), with Scheduler filling in the fire time. A fire
    that cannot be delivered is retried for a day, then put in the app's delivery DLQ (with
    the same role, which may also send there).

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        function_id: The function the schedules start.
        schedules: ``FunctionResources.schedules``.
        queue: The function's queue.
        dlq: The app's delivery DLQ.
        group: The app's schedule group (its metrics' ``ScheduleGroup``).

    Attributes:
        role: The role Scheduler assumes.
        policy: The role's only permission: sending to the queue and the delivery DLQ.
        schedules: The schedules, in order.
    """

    def __init__(self, scope: Construct, construct_id: str, *, function_id: str,
                 schedules: Sequence[Schedule], queue: sqs.IQueue, dlq: DeliveryDlq,
                 group: scheduler.CfnScheduleGroup) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            description=f"EventBridge Scheduler: send {function_id}'s cron fires to its queue",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            ),
        )
        self.policy = iam.Policy(
            self,
            "Policy",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[queue.queue_arn]),
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[dlq.queue.queue_arn]),
            ],
        )
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ArnPrincipal(self.role.role_arn)],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
            )
        )
        self.schedules: list[scheduler.CfnSchedule] = []
        for i, schedule in enumerate(schedules):
            resource = scheduler.CfnSchedule(
                self,
                f"Schedule{i}",
                name=schedule.name,
                group_name=group.ref,
                description=f"{function_id}: {schedule.expression} {schedule.timezone}",
                schedule_expression=schedule.expression,
                schedule_expression_timezone=schedule.timezone,
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED",
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=queue.queue_arn, role_arn=self.role.role_arn, input=schedule.input,
                    retry_policy=dlq.schedule_retry_policy(),
                    dead_letter_config=dlq.schedule_target(),
                ),
            )
            # Scheduler checks the role when the schedule is created: wait for its policy.
            resource.node.add_dependency(self.policy)
            self.schedules.append(resource)
