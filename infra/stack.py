"""The stepkit stack: everything the AWS backend needs for exactly the functions in an App.

Names, event patterns, schedules and environment variables all come from ``AppResources``;
this module composes one construct per concern and wires the grants between them, so each
Lambda can touch only its own queue, the state table (and its indexes) and the bus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct, Node

from infra.bundling import PROJECT_ROOT, lambda_code
from infra.constructs.event_bus import AppEventBus, CronSchedules, QueueRule
from infra.constructs.event_router import EventRouter
from infra.constructs.function_runtime import QueueWorker, WorkerOptions
from infra.constructs.monitoring import Monitoring
from infra.constructs.run_reaper import RunReaper
from infra.constructs.state_table import StateTable
from runtime.app import App, FunctionDef
from runtime.backends.aws.resources import DEFAULT_RETENTION_DAYS, AppResources
from runtime.discovery import load_app

# CDK context keys (cdk.json holds the defaults; override with `-c key=value`).
STAGE, RETENTION_DAYS, LOG_LEVEL = "stepkit:stage", "stepkit:retentionDays", "stepkit:logLevel"
BUNDLE, RETAIN_STATE = "stepkit:bundle", "stepkit:retainState"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ROUTER_LABEL = "event router"  # not a valid function id, so it never collides with one
_LOG_RETENTION = sorted((days, member) for days, member in (
    (1, logs.RetentionDays.ONE_DAY), (3, logs.RetentionDays.THREE_DAYS),
    (5, logs.RetentionDays.FIVE_DAYS), (7, logs.RetentionDays.ONE_WEEK),
    (14, logs.RetentionDays.TWO_WEEKS), (30, logs.RetentionDays.ONE_MONTH),
    (60, logs.RetentionDays.TWO_MONTHS), (90, logs.RetentionDays.THREE_MONTHS),
    (180, logs.RetentionDays.SIX_MONTHS), (365, logs.RetentionDays.ONE_YEAR),
    (730, logs.RetentionDays.TWO_YEARS), (1827, logs.RetentionDays.FIVE_YEARS),
    (3653, logs.RetentionDays.TEN_YEARS),
))


def _flag(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"context {key} must be true or false, got {value!r}")


@dataclass(frozen=True)
class StackSettings:
    """Per-environment settings, read from CDK context.

    Attributes:
        stage: Suffix for every resource name and the stack name (e.g. ``prod``); none by
            default.
        retention_days: How long finished runs (and the Lambdas' logs) are kept.
        log_level: Powertools log level of every Lambda.
        bundle: Package the dependencies into the Lambda asset; ``False`` makes a small
            source-only asset for fast template tests (not deployable).
        retain_state: Keep the state table, with deletion protection, when the stack is
            deleted.
    """

    stage: str | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS
    log_level: str = "INFO"
    bundle: bool = True
    retain_state: bool = False

    @classmethod
    def from_context(cls, node: Node) -> StackSettings:
        """Read the settings; values given with ``-c`` arrive as strings.

        Raises:
            ValueError: A value is out of range, naming the context key.
        """
        days = node.try_get_context(RETENTION_DAYS)
        level = str(node.try_get_context(LOG_LEVEL) or "INFO").upper()
        try:
            retention = DEFAULT_RETENTION_DAYS if days in (None, "") else int(days)
        except ValueError:
            raise ValueError(f"context {RETENTION_DAYS} must be a whole number of days") from None
        if retention < 1:
            raise ValueError(f"context {RETENTION_DAYS} must be at least 1, got {retention}")
        if level not in LOG_LEVELS:
            raise ValueError(f"context {LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}")
        bundle, retain = node.try_get_context(BUNDLE), node.try_get_context(RETAIN_STATE)
        return cls(
            stage=str(node.try_get_context(STAGE) or "") or None,
            retention_days=retention,
            log_level=level,
            bundle=True if bundle is None else _flag(bundle, BUNDLE),
            retain_state=False if retain is None else _flag(retain, RETAIN_STATE),
        )

    def stack_name(self, app_id: str) -> str:
        """``stepkit-<app>[-<stage>]``, in the characters stack names allow."""
        name = f"stepkit-{app_id}" + (f"-{self.stage}" if self.stage else "")
        return name.replace("_", "-")

    def log_retention(self) -> logs.RetentionDays:
        """The shortest log retention CloudWatch offers that covers ``retention_days``."""
        for days, member in _LOG_RETENTION:
            if days >= self.retention_days:
                return member
        return logs.RetentionDays.INFINITE


class StepkitStack(cdk.Stack):
    """The state table, bus, router and, per function, its runtime, rules and schedules.

    Args:
        scope: The CDK app.
        construct_id: The stack's id (and, by default, its name).
        settings: Per-environment settings.
        app: The functions; by default ``load_app()`` on the project's ``functions/``.
        code: The Lambda code; by default built by ``infra.bundling`` per ``settings.bundle``.
        **kwargs: Passed to ``Stack`` (``env``, ``stack_name``, ...).

    Attributes:
        resources: The ``AppResources`` everything here is named from.
        state: The state table.
        events: The event bus.
        router: The event router.
        workers: The queue-fed Lambdas by function id.
        monitoring: Alarms and dashboard.
        reaper: Deletes a run's steps and log when TTL deletes its run item.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings,
                 app: App | None = None, code: lambda_.Code | None = None,
                 **kwargs: Any) -> None:
        app = app or load_app(root=PROJECT_ROOT)
        kwargs.setdefault("description", f"stepkit durable functions of app '{app.id}'")
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.resources = AppResources.for_app(app, stage=settings.stage)
        self._code = code or lambda_code(bundle=settings.bundle)
        self._environment = {"POWERTOOLS_SERVICE_NAME": app.id,
                             "POWERTOOLS_LOG_LEVEL": settings.log_level}
        self.state = StateTable(self, "State", table_name=self.resources.table,
                                retain=settings.retain_state)
        self.reaper = RunReaper(self, "Reaper", table=self.state.table, code=self._code,
                                environment=self._environment,
                                log_retention=settings.log_retention())
        self.events = AppEventBus(self, "Events", bus_name=self.resources.bus)
        self.router = EventRouter(
            self, "Router", resources=self.resources, bus=self.events.bus, code=self._code,
            environment=self._environment, log_retention=settings.log_retention(),
        )
        self._wire(self.router.worker, None)
        self.workers = {fn.id: self._add_function(fn) for fn in app}
        self.monitoring = Monitoring(
            self, "Monitoring", dashboard_name=self.stack_name,
            workers={ROUTER_LABEL: self.router.worker, **self.workers},
        )
        self._add_outputs()

    def _add_function(self, fn: FunctionDef) -> QueueWorker:
        """One durable function: its runtime, trigger and message rules, cron schedules."""
        res, scope = self.resources.function(fn.id), Construct(self, fn.id)
        worker = QueueWorker(
            scope, "Worker", queue_name=res.queue, dlq_name=res.dlq,
            handler="runtime.handlers.worker.handler", code=self._code,
            environment=self._environment,
            options=WorkerOptions.from_options(f"function '{fn.id}'", fn.options),
            log_retention=self.settings.log_retention(),
            description=f"stepkit {self.resources.app_id}: function {fn.id}",
        )
        self._wire(worker, fn)
        app_id, bus = self.resources.app_id, self.events.bus
        if (trigger := res.trigger_pattern(app_id)) is not None:
            QueueRule(scope, "Trigger", bus=bus, rule_name=res.trigger_rule, pattern=trigger,
                      queue=worker.queue)
        QueueRule(scope, "Messages", bus=bus, rule_name=res.message_rule,
                  pattern=res.message_pattern(app_id), queue=worker.queue)
        if res.schedules:
            CronSchedules(scope, "Cron", function_id=fn.id, schedules=res.schedules,
                          queue=worker.queue)
        return worker

    def _wire(self, worker: QueueWorker, fn: FunctionDef | None) -> None:
        """Environment and grants: the table, the bus, and sending to its own queue only."""
        env = self.resources.lambda_env(fn, worker.queue.queue_url, self.settings.retention_days,
                                        worker.dlq.queue_url)
        for name, value in env.items():
            worker.function.add_environment(name, value)
        self.state.grant_state_access(worker.role)
        self.events.bus.grant_put_events_to(worker.role)
        worker.queue.grant(worker.role, "sqs:SendMessage")  # delays and timer hops
        # Records that can never succeed go straight to the DLQ, not after MAX_RECEIVES tries.
        worker.dlq.grant(worker.role, "sqs:SendMessage")

    def _add_outputs(self) -> None:
        table, bus = self.state.table, self.events.bus
        region = cdk.Aws.REGION
        cdk.CfnOutput(self, "TableName", value=table.table_name,
                      description="DynamoDB table holding every run's state")
        cdk.CfnOutput(self, "BusName", value=bus.event_bus_name,
                      description="EventBridge bus to send events to (Source = app id)")
        cdk.CfnOutput(self, "BusArn", value=bus.event_bus_arn)
        cdk.CfnOutput(
            self, "TableItemsUrl", description="The runs, steps and waiters in the console",
            value=f"https://{region}.console.aws.amazon.com/dynamodbv2/home?region={region}"
            f"#item-explorer?table={table.table_name}",
        )
        cdk.CfnOutput(
            self, "DashboardUrl", description="Queue, DLQ and Lambda health",
            value=f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#dashboards/dashboard/{self.monitoring.dashboard.dashboard_name}",
        )
