"""The app's delivery DLQ, and the retry policy every rule and schedule target uses.

EventBridge rules and Scheduler deliver to SQS once, asynchronously: without a retry policy
and a dead-letter queue, an event or cron fire they fail to put on a queue (a deleted or
throttled queue, a policy mistake) is dropped and only a metric says so, and a run waiting
for a routed message stays Running for ever. Every target gets the same explicit retry
policy, and what still fails lands here, naming its target in its message attributes.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from runtime.backends.aws.resources import DELIVERY_MAX_EVENT_AGE_S, DELIVERY_MAX_RETRY_ATTEMPTS

#: How long EventBridge and Scheduler keep retrying a delivery (their maximum: a day), and
#: how often (EventBridge's maximum; Scheduler allows the same), with their own back-off. The
#: handlers give their timer schedules the same policy, so it is defined next to them.
MAX_EVENT_AGE_S = DELIVERY_MAX_EVENT_AGE_S
MAX_RETRY_ATTEMPTS = DELIVERY_MAX_RETRY_ATTEMPTS
DLQ_RETENTION = cdk.Duration.days(14)  # the SQS maximum: time to look and redrive


class DeliveryDlq(Construct):
    """The one queue where EventBridge rules and Scheduler put what they could not deliver.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        queue_name: ``AppResources.delivery_dlq``.
        bus_name: The app's bus: every rule on it may dead-letter here.

    Attributes:
        queue: The dead-letter queue.
    """

    def __init__(self, scope: Construct, construct_id: str, *, queue_name: str,
                 bus_name: str) -> None:
        super().__init__(scope, construct_id)
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=queue_name,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        cdk.Validations.of(self.queue).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-SQS3",
            reason="This queue is itself the dead-letter queue of every EventBridge rule and "
            "Scheduler target of the app; a DLQ of a DLQ would only move the same messages.",
        ))
        nag.acknowledge_dead_letter_queue(self.queue)
        # One statement for every rule of the app, not one per rule: a queue policy holds at
        # most 20 statements, and the app's bus holds only the app's rules.
        rules = cdk.Stack.of(self).format_arn(
            service="events", resource="rule", resource_name=f"{bus_name}/*")
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sqs:SendMessage"],
                resources=[self.queue.queue_arn],
                conditions={"ArnLike": {"aws:SourceArn": rules}},
            )
        )

    def rule_target(self) -> events.CfnRule.DeadLetterConfigProperty:
        """The DLQ of a rule's target (any rule on the app's bus may send to it)."""
        return events.CfnRule.DeadLetterConfigProperty(arn=self.queue.queue_arn)

    @staticmethod
    def rule_retry_policy() -> events.CfnRule.RetryPolicyProperty:
        """The retry policy of every rule target."""
        return events.CfnRule.RetryPolicyProperty(
            maximum_event_age_in_seconds=MAX_EVENT_AGE_S,
            maximum_retry_attempts=MAX_RETRY_ATTEMPTS,
        )

    def schedule_target(self) -> scheduler.CfnSchedule.DeadLetterConfigProperty:
        """The DLQ of a schedule's target (Scheduler sends with the target's role)."""
        return scheduler.CfnSchedule.DeadLetterConfigProperty(arn=self.queue.queue_arn)

    @staticmethod
    def schedule_retry_policy() -> scheduler.CfnSchedule.RetryPolicyProperty:
        """The retry policy of every schedule target."""
        return scheduler.CfnSchedule.RetryPolicyProperty(
            maximum_event_age_in_seconds=MAX_EVENT_AGE_S,
            maximum_retry_attempts=MAX_RETRY_ATTEMPTS,
        )
