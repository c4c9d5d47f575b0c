"""The event router: every app event (other than routed queue messages) reaches one Lambda.

It resolves ``wait_for_event`` waiters and ``cancel_on`` and records the event log; runs are
started by the functions' own trigger rules, not here.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.delivery import DeliveryDlq
from infra.constructs.event_bus import QueueRule
from infra.constructs.function_runtime import QueueWorker
from runtime.backends.aws.resources import ROUTER_OPTIONS, AppResources
from runtime.deploy import AwsOptions

HANDLER = "runtime.handlers.router.handler"
#: The most router invocations at once (the event source mapping's ``MaximumConcurrency``,
#: 2-1000). Unset, a burst of events scales the router's pollers up by 300 a minute to
#: 1,000, the whole default account concurrency: the functions' own invocations would be
#: throttled while the router drains events whose runs they are meant to run. 50
#: invocations of ten events, each a few DynamoDB calls, route thousands of events a
#: second; over it, events wait in the router's queue (not throttled: a throttled receive
#: counts towards the dead-letter limit). ``-c stepkit:routerMaxConcurrency=`` changes it.
ROUTER_MAX_CONCURRENCY = 50


def router_options(max_concurrency: int = ROUTER_MAX_CONCURRENCY) -> AwsOptions:
    """The router Lambda's settings: routing an event is a few small DynamoDB calls, so
    batches of ten are safe and cheap."""
    return ROUTER_OPTIONS.model_copy(update={"max_concurrency": max_concurrency})


class EventRouter(Construct):
    """The router's queue, DLQ and Lambda, and the rule that feeds it from the bus.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        resources: The app's resources (names and the router's pattern).
        bus: The app's bus.
        code: The shared Lambda code asset.
        environment: Environment variables (the stack adds stepkit's, which name the queue).
        log_retention: How long the router's logs are kept.
        dlq: The app's delivery DLQ, for events the rule cannot deliver.
        max_concurrency: The most router invocations at once (2-1000).

    Attributes:
        worker: The queue, DLQ and Lambda.
        rule: The router rule.
    """

    def __init__(self, scope: Construct, construct_id: str, *, resources: AppResources,
                 bus: events.IEventBus, code: lambda_.Code, environment: Mapping[str, str],
                 log_retention: logs.RetentionDays, dlq: DeliveryDlq,
                 max_concurrency: int = ROUTER_MAX_CONCURRENCY) -> None:
        super().__init__(scope, construct_id)
        self.worker = QueueWorker(
            self,
            "Worker",
            queue_name=resources.router_queue,
            dlq_name=resources.router_dlq,
            handler=HANDLER,
            code=code,
            environment=environment,
            options=router_options(max_concurrency),
            log_retention=log_retention,
            description=f"stepkit {resources.app_id}: event router",
        )
        self.rule = QueueRule(
            self,
            "Rule",
            bus=bus,
            rule_name=resources.router_rule,
            pattern=resources.router_pattern(),
            queue=self.worker.queue,
            dlq=dlq,
        ).rule
