"""Long timers: the role EventBridge Scheduler delivers them with, and who may create them.

A message due beyond SQS's 900 s delay (a long sleep, a wait's timeout, a debounce window)
is put on a one-time schedule in the app's schedule group by the Lambda that sends it
(``runtime/backends/aws/timers.py``). Scheduler delivers it with this role, which may only
send to the app's function queues and the delivery DLQ, and which only Scheduler in this
account may assume. The Lambdas may create schedules in the app's group, and pass this
role to Scheduler, nothing more: no reading, updating or deleting schedules
(``ActionAfterCompletion=DELETE`` lets Scheduler delete each after it fired).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import nag
from infra.constructs.delivery import DeliveryDlq


class TimerSchedules(Construct):
    """The Scheduler role of the app's timers and the policy that lets Lambdas create them.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        group_name: The app's schedule group (``AppResources.schedule_group``).
        dlq: The app's delivery DLQ, where undeliverable timers end.

    Attributes:
        role: The role Scheduler assumes to deliver a timer.
        policy: The role's permissions: send to the queues added with :meth:`deliver_to`
            and to the delivery DLQ.
        create_policy: Attached to each Lambda that sets timers (:meth:`grant_create`).
    """

    def __init__(self, scope: Construct, construct_id: str, *, group_name: str,
                 dlq: DeliveryDlq) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            description="EventBridge Scheduler: deliver stepkit's long timers to their queues",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            ),
        )
        self._send = iam.PolicyStatement(actions=["sqs:SendMessage"],
                                         resources=[dlq.queue.queue_arn])
        self.policy = iam.Policy(self, "Policy", roles=[self.role], statements=[self._send])
        schedules = cdk.Stack.of(self).format_arn(
            service="scheduler", resource="schedule", resource_name=f"{group_name}/*")
        self.create_policy = iam.Policy(
            self,
            "Create",
            statements=[
                iam.PolicyStatement(actions=["scheduler:CreateSchedule"], resources=[schedules]),
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[self.role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
                ),
            ],
        )
        nag.acknowledge_timer_schedules(self.create_policy, group_name)

    def deliver_to(self, queue: sqs.IQueue) -> None:
        """Let Scheduler deliver timers to ``queue`` (a function's queue)."""
        self._send.add_resources(queue.queue_arn)
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ArnPrincipal(self.role.role_arn)],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
            )
        )

    def grant_create(self, role: iam.IRole) -> None:
        """Let ``role`` create timer schedules in the app's group, delivered with :attr:`role`."""
        self.create_policy.attach_to_role(role)
