"""The stepkit stack: everything the AWS backend needs for exactly the functions in an App.

Names, event patterns, schedules and environment variables all come from ``AppResources``;
this module composes one construct per concern and wires the grants between them, so each
Lambda can touch only the app's queues, the state table (and its indexes), the payload
objects and the bus. The functions live in nested stacks (``FunctionGroup``), so that no
template, policy or bus outgrows an AWS limit up to hundreds of functions
(``runtime.deploy_limits``; ARCHITECTURE.md, "Deploy limits").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct, Node

from infra import hooks, nag
from infra.bundling import PROJECT_ROOT, lambda_code_factory
from infra.constructs.alarm_topic import AlarmTopic
from infra.constructs.delivery import DeliveryDlq
from infra.constructs.event_api import (
    DEFAULT_BURST,
    DEFAULT_RATE,
    MAX_BURST,
    MAX_RATE,
    EventApi,
)
from infra.constructs.event_bus import AppEventBus, CronSchedules, QueueRule
from infra.constructs.event_router import ROUTER_MAX_CONCURRENCY, EventRouter
from infra.constructs.function_group import FunctionGroup
from infra.constructs.function_runtime import QueueWorker
from infra.constructs.monitoring import Monitoring, NotifyTopic
from infra.constructs.payloads import OBJECTS, PayloadBucket
from infra.constructs.run_alarms import RunAlarms
from infra.constructs.run_reaper import RunReaper
from infra.constructs.schedule_census import ScheduleCensus
from infra.constructs.state_table import StateTable
from infra.constructs.timers import TimerSchedules
from infra.constructs.tracing import enable_tracing
from runtime.app import App, FunctionDef
from runtime.backends.aws.resources import DEFAULT_RETENTION_DAYS, AppResources
from runtime.backends.aws.table import GATE_PREFIX
from runtime.deploy_limits import function_group, queue_arn_chunks
from runtime.discovery import load_app
from runtime.ingress.keys import KEY_SCOPE
from runtime.ingress.webhooks import secret_refs
from runtime.manifest import METADATA_KEY, build_manifest
from runtime.manifest import stack_name as default_stack_name
from runtime.secrets import ENV_SECRETS

#: ``(stack, function, its QueueWorker)``: see ``infra/hooks.py``.
FunctionHook = Callable[["StepkitStack", FunctionDef, QueueWorker], None]

# CDK context keys (cdk.json holds the defaults; override with `-c key=value`).
STAGE, RETENTION_DAYS, LOG_LEVEL = "stepkit:stage", "stepkit:retentionDays", "stepkit:logLevel"
BUNDLE, RETAIN_STATE = "stepkit:bundle", "stepkit:retainState"
ALARM_EMAIL, TRACING = "stepkit:alarmEmail", "stepkit:tracing"
ROUTER_CONCURRENCY = "stepkit:routerMaxConcurrency"
EVENT_API, EVENT_API_RATE = "stepkit:eventApi", "stepkit:eventApiRate"
EVENT_API_BURST = "stepkit:eventApiBurst"
#: What SNS accepts as an email endpoint, near enough to catch typos at synth, not deploy.
_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;.]+$")
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


def _email(value: Any) -> str | None:
    address = str(value or "").strip()
    if not address:
        return None
    if not _EMAIL.match(address):
        raise ValueError(
            f"context {ALARM_EMAIL} must be one email address (like ops@example.com), "
            f"got {address!r}"
        )
    return address


def _whole_number(value: Any, key: str, *, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if not low <= number <= high:
        raise ValueError(f"context {key} must be a whole number from {low} to {high}, "
                         f"got {value!r}")
    return number


def _router_concurrency(value: Any) -> int:
    # The bounds of an SQS event source's MaximumConcurrency.
    return _whole_number(value, ROUTER_CONCURRENCY, default=ROUTER_MAX_CONCURRENCY, low=2,
                         high=1000)


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
        alarm_email: Subscribe this address to the alarm topic.
        tracing: X-Ray active tracing on every Lambda (off by default: it costs per trace).
        router_max_concurrency: The most router invocations at once, 2-1000 (its event
            source mapping's ``MaximumConcurrency``), so a burst of events leaves the
            account's concurrency to the functions.
        event_api: The HTTPS event endpoint (``infra/constructs/event_api.py``); off by
            default.
        event_api_rate: Its stage's steady rate, requests a second (1 to the account's
            10,000).
        event_api_burst: Its stage's burst (1 to the account's 5,000).
    """

    stage: str | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS
    log_level: str = "INFO"
    bundle: bool = True
    retain_state: bool = False
    alarm_email: str | None = None
    tracing: bool = False
    router_max_concurrency: int = ROUTER_MAX_CONCURRENCY
    event_api: bool = False
    event_api_rate: int = DEFAULT_RATE
    event_api_burst: int = DEFAULT_BURST

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
        tracing, event_api = node.try_get_context(TRACING), node.try_get_context(EVENT_API)
        return cls(
            stage=str(node.try_get_context(STAGE) or "") or None,
            retention_days=retention,
            log_level=level,
            bundle=True if bundle is None else _flag(bundle, BUNDLE),
            retain_state=False if retain is None else _flag(retain, RETAIN_STATE),
            alarm_email=_email(node.try_get_context(ALARM_EMAIL)),
            tracing=False if tracing in (None, "") else _flag(tracing, TRACING),
            router_max_concurrency=_router_concurrency(node.try_get_context(ROUTER_CONCURRENCY)),
            event_api=False if event_api in (None, "") else _flag(event_api, EVENT_API),
            event_api_rate=_whole_number(node.try_get_context(EVENT_API_RATE), EVENT_API_RATE,
                                         default=DEFAULT_RATE, low=1, high=MAX_RATE),
            event_api_burst=_whole_number(node.try_get_context(EVENT_API_BURST),
                                          EVENT_API_BURST, default=DEFAULT_BURST, low=1,
                                          high=MAX_BURST),
        )

    def stack_name(self, app_id: str) -> str:
        """``stepkit-<app>[-<stage>]``, in the characters stack names allow."""
        return default_stack_name(app_id, self.stage)

    def log_retention(self) -> logs.RetentionDays:
        """The shortest log retention CloudWatch offers that covers ``retention_days``."""
        for days, member in _LOG_RETENTION:
            if days >= self.retention_days:
                return member
        return logs.RetentionDays.INFINITE


class StepkitStack(cdk.Stack):
    """The state table, bus, router and, in nested stacks, each function's runtime and rules.

    Args:
        scope: The CDK app.
        construct_id: The stack's id (and, by default, its name).
        settings: Per-environment settings.
        app: The functions; by default ``load_app()`` on the project's ``functions/``.
        code: The Lambda code of every stack (inline code: a CDK asset belongs to one stack);
            by default built once by ``infra.bundling`` per ``settings.bundle``, with one
            asset per stack of the same hash.
        on_function: Called with each function's constructs once they exist; by default
            ``infra.hooks.on_function``, the place to customise what ``AwsOptions`` does not
            cover.
        **kwargs: Passed to ``Stack`` (``env``, ``stack_name``, ...).

    Attributes:
        resources: The ``AppResources`` everything here is named from.
        state: The state table.
        payloads: The bucket of outputs too large for the table's items.
        events: The event bus.
        router: The event router.
        workers: The queue-fed Lambdas by function id.
        groups: The nested stacks of functions by group (only those with functions).
        send_policies: Managed policies letting a role send to every function queue, by
            name, each within IAM's managed policy size.
        delivery: The delivery DLQ of every rule and schedule target.
        timers: The Scheduler role of long timers, and the Lambdas' right to create them.
        alarms: The topic every alarm notifies.
        run_alarms: The app's failed-run and sustained-pushback alarms (one each, by function).
        monitoring: The root stack's alarms and dashboard (router, delivery DLQ, schedules).
        group_monitoring: Each group's alarms and dashboard (its functions), by group.
        reaper: Deletes a run's steps and log when TTL deletes its run item.
        census: Counts the app's schedules hourly, alarmed before the account's quota.
        event_api: The HTTPS event endpoint, when ``settings.event_api``; else ``None``.
        manifest: Each function's step ids and kinds; the root template's metadata
            ``Stepkit::StepManifest`` carries it (or its digests, past its budget), so
            ``stepkit check --aws`` compares the next deploy with it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings,
                 app: App | None = None, code: lambda_.Code | None = None,
                 on_function: FunctionHook | None = None, **kwargs: Any) -> None:
        app = app or load_app(root=PROJECT_ROOT)
        self.on_function: FunctionHook = on_function or hooks.on_function
        kwargs.setdefault("description", f"stepkit durable functions of app '{app.id}'")
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.resources = AppResources.for_app(app, stage=settings.stage)
        self.manifest = build_manifest(app)
        self.add_metadata(METADATA_KEY, self.manifest.template_form())
        self._make_code = (lambda: code) if code else lambda_code_factory(bundle=settings.bundle)
        self._codes: dict[str, lambda_.Code] = {}
        self._code = self._code_of(self)
        self._environment = {"POWERTOOLS_SERVICE_NAME": app.id,
                             "POWERTOOLS_LOG_LEVEL": settings.log_level}
        self.state = StateTable(self, "State", table_name=self.resources.table,
                                retain=settings.retain_state)
        self.payloads = PayloadBucket(self, "Payloads", retention_days=settings.retention_days,
                                      retain=settings.retain_state)
        self.reaper = RunReaper(self, "Reaper", table=self.state.table, code=self._code,
                                environment=self._environment,
                                log_retention=settings.log_retention())
        if settings.tracing:
            enable_tracing(self.reaper.function, self.reaper.role)
        self.events = AppEventBus(self, "Events", bus_name=self.resources.bus)
        self.delivery = DeliveryDlq(self, "Delivery", queue_name=self.resources.delivery_dlq,
                                    bus_name=self.resources.bus)
        self.schedule_group = scheduler.CfnScheduleGroup(
            self, "Schedules", name=self.resources.schedule_group)
        self.timers = TimerSchedules(self, "Timers", group_name=self.resources.schedule_group,
                                     dlq=self.delivery)
        self.router = EventRouter(
            self, "Router", resources=self.resources, bus=self.events.bus, code=self._code,
            environment=self._environment, log_retention=settings.log_retention(),
            dlq=self.delivery, max_concurrency=settings.router_max_concurrency,
        )
        self.send_policies = self._send_policies()
        self.timers.deliver_with(self.send_policies)
        self._wire(self.router.worker, None)
        self.groups: dict[int, FunctionGroup] = {}
        self.workers = {fn.id: self._add_function(fn) for fn in app}
        self.alarms = AlarmTopic(self, "Alarms", display_name=f"stepkit {self.stack_name}",
                                 email=settings.alarm_email)
        cdk.Aspects.of(self).add(NotifyTopic(self.alarms.topic))  # the groups' alarms too
        self.run_alarms = RunAlarms(self, "RunAlarms", service=app.id)
        self.census = self._census(app)
        self.event_api = self._event_api(app) if settings.event_api else None
        self.monitoring = Monitoring(
            self, "Monitoring", dashboard_name=self.stack_name,
            workers={ROUTER_LABEL: self.router.worker}, service=app.id, function_ids=[],
            delivery_dlq=self.delivery.queue, bus_name=self.resources.bus,
            rules=[self.router.rule],
            schedule_group=self.resources.schedule_group,  # cron fires and long timers
            app_alarms=[self.run_alarms.runs_failed, self.run_alarms.pushback],
        )
        self.group_monitoring = {index: self._monitor(group, app)
                                 for index, group in self.groups.items()}
        self._add_outputs()

    def _census(self, app: App) -> ScheduleCensus:
        """The hourly schedule count; a census that cannot count notifies too."""
        census = ScheduleCensus(self, "Census", service=app.id, group=self.schedule_group,
                                code=self._code, environment=self._environment,
                                log_retention=self.settings.log_retention(), dlq=self.delivery)
        census.alarm.add_insufficient_data_action(cloudwatch_actions.SnsAction(self.alarms.topic))
        if self.settings.tracing:
            enable_tracing(census.function, census.role)
        return census

    def _monitor(self, group: FunctionGroup, app: App) -> Monitoring:
        """The group's alarms and dashboard (ids unique in the app: the console lists them)."""
        workers = {fn.id: self.workers[fn.id] for fn in app
                   if function_group(fn.id) == group.index}
        return Monitoring(
            group, f"Monitoring{group.index:02d}",
            dashboard_name=f"{self.stack_name}-group{group.index:02d}",
            workers=workers, service=app.id, function_ids=list(workers), delivery_dlq=None,
            bus_name=self.resources.bus, schedule_group=None,
            rules=[c.rule for c in group.node.find_all() if isinstance(c, QueueRule)],
        )

    def _code_of(self, scope: Construct) -> lambda_.Code:
        path = cdk.Stack.of(scope).node.path
        if path not in self._codes:
            self._codes[path] = self._make_code()
        return self._codes[path]

    def _group(self, function_id: str) -> FunctionGroup:
        index = function_group(function_id)
        if index not in self.groups:
            self.groups[index] = FunctionGroup(self, index=index, app_id=self.resources.app_id)
        return self.groups[index]

    def _send_policies(self) -> list[iam.ManagedPolicy]:
        """Send to every function queue, named by ARN, in as many policies as IAM's size needs.

        Control messages (a child's start, a parent's resolve, the router's matches and
        cancels) and stepkit's own events go queue to queue, never through the bus, which
        any producer with PutEvents can write to; so these grants are what makes them
        unforgeable. The queues are listed explicitly (no wildcard), by name: an ARN from a
        nested stack would cost each group an output and each role a parameter per queue,
        and one role's inline policies (10,240 bytes together) could not hold them all.
        """
        names = [f.queue for f in self.resources.functions]
        return [
            iam.ManagedPolicy(
                self, f"SendToQueues{i}",
                description=f"stepkit {self.resources.app_id}: send to the app's function "
                f"queues (part {i + 1})",
                statements=[iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[
                    self.format_arn(service="sqs", resource=name,
                                    arn_format=cdk.ArnFormat.NO_RESOURCE_NAME)
                    for name in chunk])],
            )
            for i, chunk in enumerate(queue_arn_chunks(names))
        ]

    def _add_function(self, fn: FunctionDef) -> QueueWorker:
        """One durable function: its runtime, trigger rule and cron schedules."""
        res, scope = self.resources.function(fn.id), Construct(self._group(fn.id), fn.id)
        worker = QueueWorker(
            scope, "Worker", queue_name=res.queue, dlq_name=res.dlq,
            handler="runtime.handlers.worker.handler", code=self._code_of(scope),
            environment=self._environment,
            options=fn.aws,
            log_retention=self.settings.log_retention(),
            description=f"stepkit {self.resources.app_id}: function {fn.id}",
        )
        self._wire(worker, fn)
        self._grant_secrets(worker.function, worker.role, fn.aws.secrets)
        self.on_function(self, fn, worker)
        app_id, bus = self.resources.app_id, self.events.bus
        if (trigger := res.trigger_pattern(app_id)) is not None:
            QueueRule(scope, "Trigger", bus=bus, rule_name=res.trigger_rule, pattern=trigger,
                      queue=worker.queue, dlq=self.delivery)
        if res.schedules:
            CronSchedules(scope, "Cron", function_id=fn.id, schedules=res.schedules,
                          queue=worker.queue, dlq=self.delivery, group=self.schedule_group)
        return worker

    def _wire(self, worker: QueueWorker, fn: FunctionDef | None) -> None:
        """Environment and grants: the table, the payload bucket, the bus, its own queue and
        DLQ."""
        env = self.resources.lambda_env(fn, worker.queue.queue_url, self.settings.retention_days,
                                        worker.dlq.queue_url, queue_arn=worker.queue.queue_arn,
                                        timer_role_arn=self.timers.role.role_arn,
                                        payload_bucket=self.payloads.bucket.bucket_name)
        for name, value in env.items():
            worker.function.add_environment(name, value)
        self.state.grant_state_access(worker.role)
        self.payloads.grant_access(worker.role)
        self.events.bus.grant_put_events_to(worker.role)
        # Every queue of the app (a function's own too: its next steps, short delays).
        for policy in self.send_policies:
            worker.role.add_managed_policy(policy)
        self.router.worker.queue.grant(worker.role, "sqs:SendMessage")
        # Timers beyond SQS's 900 s delay: the router's too (debounce and batch windows).
        self.timers.grant_create(worker.role)
        if fn is not None:
            self.timers.deliver_to(worker.queue)
        # Records that can never succeed go straight to the DLQ, not after MAX_RECEIVES tries.
        worker.dlq.grant(worker.role, "sqs:SendMessage")
        if self.settings.tracing:
            enable_tracing(worker.function, worker.role)

    def _event_api(self, app: App) -> EventApi:
        """The HTTPS event endpoint and exactly what it may touch: publish to the bus, read
        the event keys' items, put large events' payload objects, read the webhook secrets."""
        api = EventApi(
            self, "EventApi", api_name=self.stack_name, code=self._code,
            environment={**self._environment,
                         **self.resources.ingress_env(self.payloads.bucket.bucket_name)},
            log_retention=self.settings.log_retention(), rate=self.settings.event_api_rate,
            burst=self.settings.event_api_burst,
            description=f"stepkit {self.resources.app_id}: HTTPS event endpoint",
        )
        self.events.bus.grant_put_events_to(api.role)
        api.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["dynamodb:GetItem"], resources=[self.state.table.table_arn],
            conditions={"ForAllValues:StringEquals": {
                "dynamodb:LeadingKeys": [GATE_PREFIX + KEY_SCOPE]}},  # the keys' partition only
        ))
        # Events over EventBridge's 256 KB travel as payload objects: put only, no get.
        api.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:PutObject"], resources=[self.payloads.bucket.arn_for_objects(OBJECTS)]))
        bucket = self.payloads.bucket.node.default_child
        assert isinstance(bucket, cdk.CfnElement)
        nag.acknowledge_payload_objects(api.role, self.get_logical_id(bucket))
        self._grant_secrets(api.function, api.role, secret_refs(list(app.webhooks.values())))
        if self.settings.tracing:
            enable_tracing(api.function, api.role)
        return api

    def _grant_secrets(self, function: lambda_.Function, role: iam.IRole,
                       refs: Mapping[str, str]) -> None:
        """Pass a Lambda its secret references (``STEPKIT_SECRETS``), and let its role read
        exactly those."""
        if not refs:
            return
        function.add_environment(ENV_SECRETS, json.dumps(refs, sort_keys=True))
        arns: dict[str, list[str]] = {"secretsmanager": [], "ssm": []}
        for ref in refs.values():
            store, _, ident = ref.partition(":")
            if ident.startswith("arn:"):
                arns[store].append(ident)
            elif store == "secretsmanager":  # a name: Secrets Manager adds a 6-character suffix
                arns[store].append(self.format_arn(
                    service="secretsmanager", resource="secret", resource_name=f"{ident}-??????",
                    arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME))
            else:
                arns[store].append(self.format_arn(
                    service="ssm", resource="parameter", resource_name=ident.lstrip("/")))
        if arns["secretsmanager"]:
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=arns["secretsmanager"]))
        if arns["ssm"]:
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["ssm:GetParameter"], resources=arns["ssm"]))

    def _add_outputs(self) -> None:
        table, bus = self.state.table, self.events.bus
        region = cdk.Aws.REGION
        cdk.CfnOutput(self, "TableName", value=table.table_name,
                      description="DynamoDB table holding every run's state")
        cdk.CfnOutput(self, "PayloadBucketName", value=self.payloads.bucket.bucket_name,
                      description="S3 bucket of outputs over 64 KiB (the CLI's "
                      "STEPKIT_PAYLOAD_BUCKET with --aws)")
        cdk.CfnOutput(self, "BusName", value=bus.event_bus_name,
                      description="EventBridge bus to send events to (Source = app id)")
        cdk.CfnOutput(self, "BusArn", value=bus.event_bus_arn)
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarms.topic.topic_arn,
                      description="SNS topic every alarm notifies: subscribe to it")
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
        if self.event_api is not None:
            cdk.CfnOutput(self, "EventApiUrl", value=self.event_api.stage.url,
                          description="HTTPS event endpoint: POST /e/<event key>, POST /e "
                          "(Authorization: Bearer <event key>), POST /webhooks/<source>")
