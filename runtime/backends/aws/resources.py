"""The one description of an app's AWS resources: names, routing and environment variables.

The CDK app creates these resources, the Lambda handlers find them through the environment
variables named here, and the emulator test harness creates the same resources from the same
description, so there are never two hand-kept copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from runtime.app import App, FunctionDef
from runtime.deploy import AwsOptions
from runtime.errors import ConfigurationError
from runtime.events import SYSTEM_PREFIX

# Environment variables the handlers read (set by the CDK app on every Lambda).
ENV_APP = "STEPKIT_APP"
ENV_TABLE = "STEPKIT_TABLE"
ENV_BUS = "STEPKIT_BUS"
ENV_FUNCTION = "STEPKIT_FUNCTION"  # absent on the event router
ENV_QUEUE_URL = "STEPKIT_QUEUE_URL"  # the function's own queue
ENV_QUEUE_ARN = "STEPKIT_QUEUE_ARN"  # its ARN: the other queues' ARNs are derived from it
ENV_DLQ_URL = "STEPKIT_DLQ_URL"  # its dead-letter queue: records that can never succeed
ENV_RETENTION_DAYS = "STEPKIT_RETENTION_DAYS"
ENV_STAGE = "STEPKIT_STAGE"  # the stage in every resource name (absent: none)
ENV_TRACING = "STEPKIT_TRACING"  # "true": X-Ray tracing is active, use Powertools Tracer
#: The role EventBridge Scheduler sends long timers with (absent: long timers hop on SQS).
ENV_TIMER_ROLE = "STEPKIT_TIMER_ROLE_ARN"
#: The S3 bucket holding outputs too large for a DynamoDB item (absent: kept in the item).
ENV_PAYLOAD_BUCKET = "STEPKIT_PAYLOAD_BUCKET"

MAX_SQS_DELAY = 900
MAX_RECEIVES = 5  # deliveries before a message moves to the DLQ
DEFAULT_RETENTION_DAYS = 30
#: How long EventBridge and Scheduler keep retrying a delivery to a queue (their maximum: a
#: day), and how often (EventBridge's maximum; Scheduler allows the same), before the
#: delivery DLQ: every rule target, cron schedule and timer schedule has this policy.
DELIVERY_MAX_EVENT_AGE_S = 24 * 3600
DELIVERY_MAX_RETRY_ATTEMPTS = 185
#: Lambda's timeout is per batch, and SQS may redeliver a record while it is still being
#: handled if the visibility timeout is shorter: AWS recommends at least six times.
VISIBILITY_FACTOR = 6
#: The event router's Lambda. Routing an event is a few small DynamoDB calls, so batches of
#: ten are safe and cheap.
ROUTER_OPTIONS = AwsOptions(memory_mb=256, timeout_s=30, sqs_batch_size=10)
_STAGE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")
#: What EventBridge Scheduler replaces in a schedule's input with the fire's scheduled time.
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"


def _name(*parts: str, limit: int) -> str:
    """Join parts with '-', keeping within AWS name limits by hashing the overflow."""
    name = "-".join(parts)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


def function_queue_name(app_id: str, function_id: str, stage: str | None = None) -> str:
    """The queue of ``function_id`` in app ``app_id`` (as :meth:`AppResources.for_app` names it).

    For tools that know a run's function but not the app's code (the CLI's ``--aws``).
    """
    return _name(f"{app_id}-{stage}" if stage else app_id, function_id, limit=76)


class Schedule(NamedTuple):
    """An EventBridge Scheduler schedule for one cron trigger."""

    name: str
    expression: str  # AWS form, e.g. "cron(0 8 * * ? *)"
    timezone: str
    input: str  # the JSON the schedule sends to the function's queue

    def input_at(self, at: float) -> str:
        """The input as Scheduler sends it for the fire time ``at`` (epoch seconds).

        Its scheduled time is ISO 8601 UTC in whole seconds, e.g. ``2026-03-02T08:00:00Z``.
        """
        scheduled = datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.input.replace(SCHEDULED_TIME, scheduled)


@dataclass(frozen=True)
class QueueDelivery:
    """How a queue's records reach its Lambda, as deployed (the queue and its event source).

    The CDK app deploys these and the emulator harness plays them, from this one place.

    Attributes:
        batch_size: Records per invocation (the event source mapping's ``BatchSize``).
        visibility_timeout_s: How long a received record stays invisible: a failed record
            comes back after it (the queue's ``VisibilityTimeout``).
        max_receives: Receives before a record moves to the DLQ (``maxReceiveCount``).
    """

    batch_size: int
    visibility_timeout_s: int
    max_receives: int = MAX_RECEIVES

    @classmethod
    def of(cls, options: AwsOptions) -> QueueDelivery:
        """The delivery of a Lambda with these options (a function's ``aws=``, or the router's)."""
        return cls(options.sqs_batch_size, options.timeout_s * VISIBILITY_FACTOR)


@dataclass(frozen=True)
class FunctionResources:
    """Per-function resources: a queue (and its delivery), its DLQ, a trigger rule, schedules."""

    function_id: str
    queue: str
    dlq: str
    trigger_rule: str
    event_names: tuple[str, ...]
    schedules: tuple[Schedule, ...]
    delivery: QueueDelivery

    def trigger_pattern(self, app_id: str) -> dict[str, Any] | None:
        """EventBridge pattern of the function's app-event triggers (``None`` without any).

        Triggers on stepkit's own events (``on_failure`` handlers) have no rule: those events
        never travel on the bus; the router starts their runs.
        """
        names = sorted({n for n in self.event_names if not n.startswith(SYSTEM_PREFIX)})
        if not names:
            return None
        return {"source": [app_id], "detail-type": names}


def _schedule_input(function_id: str, cron_spec: str) -> str:
    """The JSON a cron schedule sends to the function's queue (Scheduler fills in the time)."""
    body = {
        "type": "cron",
        "function_id": function_id,
        "cron": cron_spec,
        "scheduled_time": SCHEDULED_TIME,
    }
    return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class AppResources:
    """Every resource of an app, derived from its registered functions."""

    app_id: str
    table: str
    bus: str
    router_queue: str
    router_dlq: str
    router_rule: str
    functions: tuple[FunctionResources, ...]
    #: Where EventBridge rules and Scheduler put what they failed to deliver to a queue.
    delivery_dlq: str = ""
    stage: str | None = None
    #: The Scheduler schedule group of the app's cron schedules (its metrics' dimension).
    schedule_group: str = ""

    @classmethod
    def for_app(cls, app: App, *, stage: str | None = None) -> AppResources:
        """Derive the resources from the app's functions.

        Args:
            app: The app.
            stage: Optional environment name (e.g. ``"prod"``) appended to the app id in every
                resource name, so several stages can live in one account and region. The
                EventBridge source stays the app id.

        Raises:
            ConfigurationError: The stage is not 1-16 lowercase letters, digits or '-'.
        """
        a = app.id
        if stage:
            if not _STAGE.match(stage):
                raise ConfigurationError(
                    f"invalid stage {stage!r}: use 1-16 lowercase letters, digits or '-', "
                    "starting with a letter or digit"
                )
            a = f"{app.id}-{stage}"
        fns = []
        for fn in app:
            schedules = tuple(
                Schedule(
                    _name(a, fn.id, f"cron{i}", limit=64),
                    *cron.to_aws_scheduler(),
                    input=_schedule_input(fn.id, cron.spec),
                )
                for i, cron in enumerate(fn.crons)
            )
            fns.append(
                FunctionResources(
                    function_id=fn.id,
                    queue=function_queue_name(app.id, fn.id, stage or None),
                    dlq=_name(a, fn.id, "dlq", limit=80),
                    trigger_rule=_name(a, fn.id, "trigger", limit=64),
                    event_names=tuple(f.event for f in fn.events),
                    schedules=schedules,
                    delivery=QueueDelivery.of(fn.aws),
                )
            )
        return cls(
            app_id=app.id,
            table=_name(a, "state", limit=255),
            bus=_name(a, "bus", limit=256),
            router_queue=_name(a, "router", limit=80),
            router_dlq=_name(a, "router", "dlq", limit=80),
            router_rule=_name(a, "router", limit=64),
            functions=tuple(fns),
            delivery_dlq=_name(a, "delivery", "dlq", limit=80),
            stage=stage or None,
            schedule_group=_name(a, "schedules", limit=64),
        )

    @property
    def router_delivery(self) -> QueueDelivery:
        """How the router's queue is delivered (:data:`ROUTER_OPTIONS`)."""
        return QueueDelivery.of(ROUTER_OPTIONS)

    def dead_letter_queues(self) -> list[tuple[str, str | None]]:
        """Every DLQ of the app with the queue its messages came from, by name.

        The function and router DLQs hold messages their queue failed to deliver; the
        delivery DLQ (``None``: no single source) holds events and cron fires EventBridge
        could not put on a queue, each naming its target queue in its attributes.
        """
        out: list[tuple[str, str | None]] = [(f.dlq, f.queue) for f in self.functions]
        return [*out, (self.router_dlq, self.router_queue), (self.delivery_dlq, None)]

    def function(self, function_id: str) -> FunctionResources:
        """One function's resources."""
        for f in self.functions:
            if f.function_id == function_id:
                return f
        raise ConfigurationError(f"no function '{function_id}' in app '{self.app_id}'")

    def router_pattern(self) -> dict[str, Any]:
        """Every app event on the bus goes to the router, except names stepkit reserves.

        Only a forger could put those there: stepkit sends its own events to the router
        queue directly.
        """
        return {
            "source": [self.app_id],
            "detail-type": [{"anything-but": {"prefix": SYSTEM_PREFIX}}],
        }

    def queue_url(self, name: str, any_queue_url: str) -> str:
        """The URL of the queue ``name``, from the URL of another queue of the app.

        All of an app's queues are in one account and region, so their URLs differ only
        in the name (``https://sqs.<region>.amazonaws.com/<account>/<name>``).
        """
        return f"{any_queue_url.rsplit('/', 1)[0]}/{name}"

    def queue_arn(self, name: str, any_queue_arn: str) -> str:
        """The ARN of the queue ``name``, from the ARN of another queue of the app.

        Like URLs, they differ only in the name (``arn:<partition>:sqs:<region>:<account>:<name>``).
        """
        return f"{any_queue_arn.rsplit(':', 1)[0]}:{name}"

    def lambda_env(
        self, fn: FunctionDef | None, queue_url: str, retention_days: int, dlq_url: str = "",
        *, queue_arn: str = "", timer_role_arn: str = "", payload_bucket: str = "",
    ) -> dict[str, str]:
        """Environment variables of a worker (``fn``) or of the router (``fn=None``).

        ``queue_arn`` and ``timer_role_arn`` (both or neither) put timers due beyond SQS's
        900 s on EventBridge Scheduler (see ``runtime.backends.aws.timers``);
        ``payload_bucket`` keeps outputs over 64 KiB in S3 (``runtime.backends.aws.payloads``).
        """
        env = {
            ENV_APP: self.app_id,
            ENV_TABLE: self.table,
            ENV_BUS: self.bus,
            ENV_QUEUE_URL: queue_url,
            ENV_RETENTION_DAYS: str(retention_days),
        }
        if fn is not None:
            env[ENV_FUNCTION] = fn.id
        if self.stage:
            env[ENV_STAGE] = self.stage
        if dlq_url:
            env[ENV_DLQ_URL] = dlq_url
        if queue_arn:
            env[ENV_QUEUE_ARN] = queue_arn
        if timer_role_arn:
            env[ENV_TIMER_ROLE] = timer_role_arn
        if payload_bucket:
            env[ENV_PAYLOAD_BUCKET] = payload_bucket
        return env

    def ingress_env(self, payload_bucket: str = "") -> dict[str, str]:
        """Environment variables of the HTTPS event endpoint's Lambda (``eventApi``).

        It publishes to the bus (events over 256 KB through ``payload_bucket``) and reads
        event keys from the table; it has no queue. The webhook sources' secrets are added
        by the stack (``STEPKIT_SECRETS``).
        """
        env = {ENV_APP: self.app_id, ENV_TABLE: self.table, ENV_BUS: self.bus}
        if self.stage:
            env[ENV_STAGE] = self.stage
        if payload_bucket:
            env[ENV_PAYLOAD_BUCKET] = payload_bucket
        return env


@dataclass(frozen=True)
class HandlerConfig:
    """What a Lambda handler reads from its environment."""

    app_id: str
    table: str
    bus: str
    queue_url: str
    function_id: str | None
    retention_days: int
    dlq_url: str | None = None
    stage: str | None = None
    queue_arn: str | None = None
    timer_role_arn: str | None = None
    payload_bucket: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HandlerConfig:
        """Read the configuration; a missing variable is a clear error naming it."""
        env = os.environ if env is None else env
        missing = [k for k in (ENV_APP, ENV_TABLE, ENV_BUS, ENV_QUEUE_URL) if not env.get(k)]
        if missing:
            raise ConfigurationError(
                f"missing environment variable(s) {', '.join(missing)}: the CDK app sets them on "
                "every stepkit Lambda; set them yourself to run a handler elsewhere"
            )
        days = env.get(ENV_RETENTION_DAYS, str(DEFAULT_RETENTION_DAYS))
        try:
            retention = int(days)
        except ValueError:
            raise ConfigurationError(
                f"{ENV_RETENTION_DAYS} must be a whole number of days, got {days!r}"
            ) from None
        return cls(
            app_id=env[ENV_APP],
            table=env[ENV_TABLE],
            bus=env[ENV_BUS],
            queue_url=env[ENV_QUEUE_URL],
            function_id=env.get(ENV_FUNCTION) or None,
            retention_days=retention,
            dlq_url=env.get(ENV_DLQ_URL) or None,
            stage=env.get(ENV_STAGE) or None,
            queue_arn=env.get(ENV_QUEUE_ARN) or None,
            timer_role_arn=env.get(ENV_TIMER_ROLE) or None,
            payload_bucket=env.get(ENV_PAYLOAD_BUCKET) or None,
        )
