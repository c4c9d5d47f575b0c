"""Long timers: the role EventBridge Scheduler delivers them with, and who may create them.

A message due beyond SQS's 900 s delay (a long sleep, a wait's timeout, a debounce window)
is put on a one-time schedule in the app's schedule group by the Lambda that sends it
(``runtime/backends/aws/timers.py``). Scheduler delivers it with this role, which may only
send to the app's function queues and the delivery DLQ, and which only Scheduler in this
account may assume. The Lambdas may create schedules in the app's group, and pass this
role to Scheduler, nothing more: no reading, updating or deleting schedules
(``ActionAfterCompletion=DELETE`` lets Scheduler delete each after it fired). Sending to the
function queues comes from the app's send policies (managed policies by queue name, shared
with the Lambdas), so the role's inline policy does not grow with the app.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        policy: The role's inline permission: send to the delivery DLQ (the function queues
            come from the app's send policies, :meth:`deliver_with`).
        create_policy: Attached to each Lambda of the root stack that sets timers
            (:meth:`grant_create`); each nested stack has its own copy.
    """

    def __init__(self, scope: Construct, construct_id: str, *, group_name: str,
                 dlq: DeliveryDlq) -> None:
        super().__init__(scope, construct_id)
        self._group_name = group_name
        self.role = iam.Role(
            self,
            "Role",
            description="EventBridge Scheduler: deliver stepkit's long timers to their queues",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            ),
        )
        self.policy = iam.Policy(self, "Policy", roles=[self.role], statements=[
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[dlq.queue.queue_arn])])
        self.create_policy = self._create_policy(self)
        self._create_policies: dict[str, iam.Policy] = {
            cdk.Stack.of(self).node.path: self.create_policy}

    def _create_policy(self, scope: Construct) -> iam.Policy:
        schedules = cdk.Stack.of(scope).format_arn(
            service="scheduler", resource="schedule", resource_name=f"{self._group_name}/*")
        policy = iam.Policy(
            scope,
            f"CreateTimers{cdk.Stack.of(scope).node.id}" if scope is not self else "Create",
            statements=[
                # Delete: a commit that makes a timer moot (a wait answered, a run ended)
                # removes its schedule, so schedules count only pending work.
                iam.PolicyStatement(actions=["scheduler:CreateSchedule",
                                             "scheduler:DeleteSchedule"], resources=[schedules]),
                iam.PolicyStatement(
                    actions=["iam:PassRole"],
                    resources=[self.role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
                ),
            ],
        )
        nag.acknowledge_timer_schedules(policy, self._group_name)
        return policy

    def deliver_with(self, policies: Sequence[iam.IManagedPolicy]) -> None:
        """Let Scheduler send to what ``policies`` allow (the app's function queues)."""
        for policy in policies:
            self.role.add_managed_policy(policy)

    def deliver_to(self, queue: sqs.IQueue) -> None:
        """Let Scheduler deliver timers to ``queue`` (a function's queue)."""
        queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ArnPrincipal(self.role.role_arn)],
                actions=["sqs:SendMessage"],
                resources=[queue.queue_arn],
            )
        )

    def grant_create(self, role: iam.IRole) -> None:
        """Let ``role`` create timer schedules in the app's group, delivered with :attr:`role`.

        One policy per stack, in the role's stack: a policy in another stack would make that
        stack depend on every nested stack of functions, through one output per role.
        """
        stack = cdk.Stack.of(role)
        policy = self._create_policies.get(stack.node.path)
        if policy is None:
            policy = self._create_policies[stack.node.path] = self._create_policy(stack)
        policy.attach_to_role(role)
