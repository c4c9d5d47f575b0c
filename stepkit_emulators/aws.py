"""The AWS backend on emulators: the real Lambda handlers over DynamoDB Local and moto.

Provisions the app's resources from :class:`~runtime.backends.aws.resources.AppResources`
(the description the CDK app deploys), then plays the parts moto cannot:

- the Lambda SQS event source, as the stack deploys it (each queue's
  :class:`~runtime.backends.aws.resources.QueueDelivery`): calls the real handler once per
  batch of the queue's batch size with a Lambda-shaped SQS event, deletes only the records not
  in ``batchItemFailures`` (failed ones reappear after the queue's visibility timeout, and
  reach the DLQ after its redrive count), and lets a crash (a ``BaseException``) leave the
  whole batch in flight, as a dying Lambda does;
- EventBridge Scheduler: reads the created schedules back and fires their targets when the
  fake clock passes a fire time (croniter over the AWS expression, so the translation is tested),
  and fires the one-time ``at()`` timers the handlers create in the app's schedule group once
  the clock passes their time, then deletes them (as ``ActionAfterCompletion=DELETE`` does);
- a deploy over existing state (:meth:`AwsBackend.redeploy`, as ``cdk deploy`` updates the
  stack): every resource is created only if absent and updated in place, and what the new
  app no longer has is deleted afterwards, as CloudFormation's cleanup does.

moto's SQS and EventBridge follow the same fake clock (see :mod:`stepkit_emulators.moto_clock`).
"""

from __future__ import annotations

import heapq
import json
import math
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from botocore.exceptions import ClientError

from runtime.app import App
from runtime.backends.aws.payloads import S3Payloads
from runtime.backends.aws.resources import AppResources, HandlerConfig, QueueDelivery, Schedule
from runtime.backends.aws.store import DynamoStore
from runtime.backends.aws.table import table_spec, ttl_spec
from runtime.cron import CronSchedule
from runtime.engine import Limits
from runtime.events import Event
from runtime.handlers.ingress import IngressLambda
from runtime.handlers.service import LambdaApp
from runtime.ingress.endpoint import Answer, IngressRequest, route_of
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import RunQuery
from runtime.records import Message, RunRecord, RunState
from runtime.testing.chaos import (
    Chaos,
    Faults,
    Idle,
    SimulatedCrash,
    run_workers,
    wrap_orchestrator,
)
from runtime.testing.faults import DuplicatingQueue
from runtime.testing.pushback import Pushback
from stepkit_emulators.emulators import AwsEmulators
from stepkit_emulators.lambda_events import http_api_event, sqs_lambda_event

_SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
#: Error codes of a create whose resource exists: a redeploy keeps and reuses it.
_EXISTS = frozenset({"ResourceInUseException", "ResourceAlreadyExistsException",
                     "ConflictException", "BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
#: Error codes of a queue that does not exist (the query and the JSON protocol's).
_NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
#: The most records one ``ReceiveMessage`` returns, or one ``DeleteMessageBatch`` deletes.
_RECEIVE_MAX = 10


@dataclass(frozen=True)
class _Consumer:
    """A queue, the handler its event source mapping invokes, and how (as deployed)."""

    url: str
    arn: str
    dlq_url: str
    service: LambdaApp
    router: bool
    delivery: QueueDelivery


@dataclass(frozen=True)
class _Schedule:
    name: str
    cron: CronSchedule
    target_url: str
    input: str


@dataclass(frozen=True)
class _Timer:
    """A one-time schedule: ``at`` in epoch seconds."""

    name: str
    at: float
    target_url: str | None  # None: its queue was deleted by a deploy
    input: str
    delete_after: bool


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _create_if_absent(create: Callable[[], object]) -> bool:
    """Create a resource unless it exists (a deploy over existing state); whether it did."""
    try:
        create()
    except ClientError as e:
        if _code(e) not in _EXISTS:
            raise
        return False
    return True


def _at_time(expression: str, timezone: str) -> float:
    """Epoch seconds of Scheduler's ``at(yyyy-mm-ddThh:mm:ss)`` in ``timezone``."""
    m = re.fullmatch(r"at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)", expression.strip())
    if not m:
        raise ValueError(f"not a one-time expression: {expression!r}")
    return datetime.fromisoformat(m.group(1)).replace(tzinfo=ZoneInfo(timezone)).timestamp()


class _DueTracker:
    """Wraps a worker's queue to note when each delayed message falls due."""

    def __init__(self, inner: Any, dues: list[float], clock: FakeClock) -> None:
        self.inner = inner
        self.dues = dues  # heappush is atomic under the GIL
        self.clock = clock

    def send(self, messages: Sequence[Message]) -> None:
        """Send, noting when each delayed message becomes visible.

        SQS delays whole seconds, so a message shows at the whole second at or after its
        due time; a timer longer than SQS's 900 s shows early and hops, and skipping those
        hops changes nothing, so what is noted is the due time itself.
        """
        now = self.clock.now()
        self.inner.send(messages)
        for m in messages:
            if m.due is not None:
                heapq.heappush(self.dues, now + max(0, math.ceil(m.due - now)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _MotoQueues:
    """Which queues hold a receivable message, read from the in-process moto's SQS model.

    Lambda's event source mapping long-polls and invokes the function only for records it
    received; the driver plays it with ``WaitTimeSeconds=0`` receives, so asking every queue
    on every round would be almost all empty ``ReceiveMessage`` calls (over 90 % of a
    settle's requests). This looks first, without a request, and the driver receives only
    from queues that have something: every record still comes through ``ReceiveMessage``
    (receive counts, visibility, redrive), only the empty answers are skipped.

    moto's model follows the fake clock (:mod:`stepkit_emulators.moto_clock`), so "visible"
    here is what a receive at this instant would see. With moto out of process there is
    nothing to read and every queue counts as possibly non-empty.
    """

    def __init__(self, emulators: AwsEmulators) -> None:
        self._where = (emulators.account_id, emulators.region) if emulators.moto else None

    def schedule_names(self, group: str) -> frozenset[str] | None:
        """Names of the schedules in ``group`` now (``None`` when unknown)."""
        if self._where is None:
            return None
        from moto.scheduler.models import scheduler_backends

        account, region = self._where
        found = scheduler_backends[account][region].schedule_groups.get(group)
        return None if found is None else frozenset(list(found.schedules))

    def ready(self, url: str) -> int:
        """Messages a receive on ``url`` would see now (1 when unknown)."""
        if self._where is None:
            return 1
        from moto.sqs.models import sqs_backends

        account, region = self._where
        queue = sqs_backends[account][region].queues.get(url.rsplit("/", 1)[-1])
        if queue is None:
            return 1
        # A copy first: moto's request threads append and remove while this reads.
        return sum(1 for m in list(queue._messages) if m.visible and not m.delayed)


class _LambdaContext:
    """The few Lambda context attributes Powertools reads."""

    def __init__(self, name: str) -> None:
        self.function_name = name
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def aws_cron_to_unix(expression: str) -> str:
    """Turn an EventBridge ``cron(M H DOM MON DOW YEAR)`` back into a 5-field Unix cron.

    Raises:
        ValueError: Forms this driver does not replay (years, ``L``/``W`` in day-of-week).
    """
    m = re.fullmatch(r"cron\((.*)\)", expression.strip())
    if not m:
        raise ValueError(f"not an EventBridge cron expression: {expression!r}")
    fields = m.group(1).split()
    if len(fields) != 6 or fields[5] != "*":
        raise ValueError(f"unsupported EventBridge cron (6 fields, any year): {expression!r}")
    minute, hour, dom, month, dow, _ = fields
    dom = "*" if dom == "?" else dom
    if dow == "?":
        dow = "*"
    elif re.search(r"[LW]", dow):
        raise ValueError(f"day-of-week {dow!r} is not replayed by the test driver")
    else:  # AWS numbers weekdays 1-7 from Sunday; Unix cron 0-6.
        dow = re.sub(r"(?<!#)\b([1-7])\b", lambda d: str(int(d.group(1)) - 1), dow)
    minute = re.sub(r"^(\d+)/", r"\1-59/", minute)
    hour = re.sub(r"^(\d+)/", r"\1-23/", hour)
    return f"{minute} {hour} {dom} {month} {dow}"


class AwsBackend:
    """Runs an app on the AWS backend against emulators (the ``TestBackend`` protocol).

    Args:
        app: The app under test.
        emulators: Running DynamoDB Local + moto: fresh state, or an app deployed there
            before (resources that exist are reused, see :meth:`redeploy`).
        clock: The fake clock the handlers, moto and the schedule driver all follow.
        limits: Per-run limits.
        timers: Long timers on Scheduler one-time schedules, as deployed; ``False``: every
            delay on SQS, a long one by timer hops (a Lambda without a timer role).
    """

    def __init__(
        self,
        app: App,
        emulators: AwsEmulators,
        clock: FakeClock,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen
        timers: bool = True,
    ) -> None:
        self.app = app
        self.clock = clock
        self.emulators = emulators
        self.region = emulators.region
        emulators.clock.follow(clock.now)
        self._ready = _MotoQueues(emulators)
        self.clients = {s: emulators.client(s)
                        for s in ("dynamodb", "sqs", "events", "scheduler", "s3")}
        self.resources = AppResources.for_app(app)
        #: Where outputs over 64 KiB go, as the deployed stack's bucket (a name S3 accepts).
        self.payload_bucket = f"{self.resources.table}-payloads".lower()[:63]
        self.consumers: list[_Consumer] = []
        self._urls_by_arn: dict[str, str] = {}
        self._limits = limits
        self._timers = timers
        #: The one-time schedules read back, by name (names are never reused while pending).
        self._pending: dict[str, _Timer] = {}
        self._fired: set[str] = set()  # fired and kept (ActionAfterCompletion=NONE)
        # Due times of every delayed message sent, so the harness can skip straight to them.
        self._dues: list[float] = []
        self._dues_lock = threading.Lock()
        #: Pushback mode, when a test turned it on (``Harness.pushback``).
        self.pushback: Pushback | None = None
        self._ingress: IngressLambda | None = None  # the event endpoint, built on first use
        self._provision()
        self._receiving = {c.url: threading.Lock() for c in self.consumers}
        self.store = DynamoStore(self.resources.table, client=self.clients["dynamodb"], clock=clock,
                                 payloads=S3Payloads(self.payload_bucket, self.clients["s3"]))
        self.router = next(c.service for c in self.consumers if c.router)
        self.schedules = self._read_schedules()
        self._schedules_checked = clock.now()

    # -- provisioning (the same description the CDK app deploys) --------------------------

    def _queue(self, name: str, dlq: str, delivery: QueueDelivery) -> tuple[str, str, str]:
        dlq_url = self._ensure_queue(dlq, {})
        dlq_arn = self._arn(dlq_url)
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(delivery.max_receives)}
        url = self._ensure_queue(name, {
            "VisibilityTimeout": str(delivery.visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
        })
        arn = self._arn(url)
        self._urls_by_arn[arn] = url
        return url, arn, dlq_url

    def _ensure_queue(self, name: str, attributes: dict[str, str]) -> str:
        """The queue's URL, created if absent; an existing queue keeps its messages.

        ``CreateQueue`` returns an existing queue's URL when the attributes sent are its own,
        and fails when they differ (a deploy that changes them, or chaos mode's redrive): the
        queue is then updated in place, as CloudFormation updates an ``AWS::SQS::Queue``.
        """
        sqs = self.clients["sqs"]
        try:
            return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        except ClientError as e:
            if _code(e) not in {"QueueAlreadyExists", "QueueNameExists"}:
                raise
        url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url

    def _url_of(self, arn: str) -> str | None:
        """The URL of the queue ``arn``: one of this app's, or one a deploy kept (else None)."""
        if arn in self._urls_by_arn:
            return self._urls_by_arn[arn]
        try:
            url = self.clients["sqs"].get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        except ClientError as e:
            if _code(e) not in _NO_QUEUE:
                raise
            return None
        return str(url)

    def _arn(self, url: str) -> str:
        attrs = self.clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def _rule(self, name: str, pattern: Mapping[str, Any], target_arn: str) -> None:
        events, bus = self.clients["events"], self.resources.bus
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
        events.put_targets(
            Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": target_arn}]
        )

    def _service(self, function_id: str | None, url: str, dlq_url: str = "") -> LambdaApp:
        arn = next(a for a, u in self._urls_by_arn.items() if u == url)
        config = HandlerConfig(
            app_id=self.app.id,
            table=self.resources.table,
            bus=self.resources.bus,
            queue_url=url,
            function_id=function_id,
            retention_days=30,
            dlq_url=dlq_url or None,
            queue_arn=arn if self._timers else None,
            timer_role_arn=self.timer_role_arn if self._timers else None,
            payload_bucket=self.payload_bucket,
        )
        service = LambdaApp(self.app, config, self.clients, self.clock, limits=self._limits)
        service.orchestrator.queue = _DueTracker(service.orchestrator.queue, self._dues, self.clock)
        return service

    def next_due(self) -> float | None:
        """The earliest time after now at which a timer, a retry or a schedule is due."""
        now = self.clock.now()
        with self._dues_lock:
            while self._dues and self._dues[0] <= now + 1e-6:
                heapq.heappop(self._dues)
            found = self._dues[0] if self._dues else None
        at = datetime.fromtimestamp(now, UTC)
        for sch in self.schedules:
            fire = sch.cron.next_after(at).timestamp()
            found = fire if found is None else min(found, fire)
        for timer in self._read_timers():
            if timer.at > now:
                found = timer.at if found is None else min(found, timer.at)
        return found

    @property
    def timer_role_arn(self) -> str:
        """The role the handlers' timer schedules name (moto checks only its form)."""
        return f"arn:aws:iam::123456789012:role/{self.resources.app_id}-timers"

    def _provision(self) -> None:
        r = self.resources
        ddb = self.clients["dynamodb"]
        if _create_if_absent(lambda: ddb.create_table(**table_spec(r.table))):
            ddb.update_time_to_live(**ttl_spec(r.table))
        _create_if_absent(lambda: self.clients["events"].create_event_bus(Name=r.bus))
        self._ensure_schedule_group(r.schedule_group)
        _create_if_absent(lambda: self.clients["s3"].create_bucket(Bucket=self.payload_bucket))
        url, arn, dlq = self._queue(r.router_queue, r.router_dlq, r.router_delivery)
        self._rule(r.router_rule, r.router_pattern(), arn)
        self.consumers.append(_Consumer(url, arn, dlq, self._service(None, url, dlq),
                                        router=True, delivery=r.router_delivery))
        for f in r.functions:
            url, arn, dlq = self._queue(f.queue, f.dlq, f.delivery)
            trigger = f.trigger_pattern(r.app_id)
            if trigger is not None:
                self._rule(f.trigger_rule, trigger, arn)
            for s in f.schedules:
                self._ensure_schedule(s, arn)
            service = self._service(f.function_id, url, dlq)
            self.consumers.append(_Consumer(url, arn, dlq, service, router=False,
                                            delivery=f.delivery))

    def _ensure_schedule_group(self, name: str) -> None:
        """Create the group unless it exists.

        Asked first: moto's ``CreateScheduleGroup`` replaces an existing group with an empty
        one (AWS refuses with ``ConflictException``), which would drop the pending timers.
        """
        scheduler = self.clients["scheduler"]
        try:
            scheduler.get_schedule_group(Name=name)
        except ClientError as e:
            if _code(e) != "ResourceNotFoundException":
                raise
            scheduler.create_schedule_group(Name=name)

    def _ensure_schedule(self, schedule: Schedule, target_arn: str) -> None:
        """Create a cron schedule, or update it in place (a deploy that changed its cron)."""
        scheduler = self.clients["scheduler"]
        spec: dict[str, Any] = {
            "Name": schedule.name,
            "ScheduleExpression": schedule.expression,
            "ScheduleExpressionTimezone": schedule.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {
                "Arn": target_arn,
                "RoleArn": f"arn:aws:iam::123456789012:role/{self.resources.app_id}-scheduler",
                "Input": schedule.input,
            },
        }
        if not _create_if_absent(lambda: scheduler.create_schedule(**spec)):
            scheduler.update_schedule(**spec)

    # -- deploying new code over the state ------------------------------------------------

    def redeploy(self, app: App, *, keep_queues: bool = False) -> AwsBackend:
        """Deploy ``app`` (same id, new code) over this backend's state, as ``cdk deploy`` does.

        The table, bus, bucket, schedule group and the queues of the functions kept stay
        with everything in them (runs, messages, timers); the router and the kept functions'
        rules and cron schedules are updated to the new app's, the added functions' created.
        Then what the new app lacks is deleted, as CloudFormation's cleanup pass does: the
        rules and cron schedules of removed functions (and removed crons), and, unless
        ``keep_queues``, their queues with their messages. Cron times due before the deploy
        fire under the old schedules.

        Args:
            app: The new code.
            keep_queues: Keep the removed functions' queues and DLQs (a ``RETAIN`` removal
                policy): their messages wait there for the function to come back, and
                timers already scheduled still fire into them.

        Returns:
            The backend running ``app``; this one must not be used any more.
        """
        self.fire_schedules()
        new = AwsBackend(app, self.emulators, self.clock, limits=self._limits,
                         timers=self._timers)
        self._remove_absent(new.resources, keep_queues=keep_queues)
        # The driver's own memory of what AWS is doing: delayed messages in flight, and
        # timers fired and kept (Scheduler would not fire them again).
        with self._dues_lock:
            new._dues = sorted({*new._dues, *self._dues})
        new._fired = set(self._fired)
        return new

    def _remove_absent(self, kept: AppResources, *, keep_queues: bool) -> None:
        """Delete this app's rules, schedules and queues that ``kept`` no longer has."""
        now = {f.function_id: f for f in kept.functions}
        for f in self.resources.functions:
            after = now.get(f.function_id)
            if f.trigger_pattern(kept.app_id) is not None and (
                    after is None or after.trigger_pattern(kept.app_id) is None):
                self._delete_rule(f.trigger_rule)
            still = {s.name for s in after.schedules} if after is not None else set()
            for s in f.schedules:
                if s.name not in still:
                    self.clients["scheduler"].delete_schedule(Name=s.name)
            if after is None and not keep_queues:
                self._delete_queues(f.function_id)

    def _delete_rule(self, name: str) -> None:
        events, bus = self.clients["events"], self.resources.bus
        events.remove_targets(Rule=name, EventBusName=bus, Ids=["queue"])
        events.delete_rule(Name=name, EventBusName=bus)

    def _delete_queues(self, function_id: str) -> None:
        """Delete a removed function's queue and DLQ, with whatever messages they hold."""
        consumer = next(c for c in self.consumers if c.service.config.function_id == function_id)
        for url in (consumer.url, consumer.dlq_url):
            self.clients["sqs"].delete_queue(QueueUrl=url)

    def _read_schedules(self) -> list[_Schedule]:
        """Read the schedules back from the emulator, as deployed."""
        scheduler = self.clients["scheduler"]
        found = []
        # The cron schedules (the default group); the app's group holds one-time timers.
        for page in scheduler.get_paginator("list_schedules").paginate(GroupName="default"):
            for item in page["Schedules"]:
                s = scheduler.get_schedule(Name=item["Name"])
                target = s["Target"]
                if target["Arn"] not in self._urls_by_arn:
                    continue  # a removed function's, which a redeploy is about to delete
                unix = aws_cron_to_unix(s["ScheduleExpression"])
                cron = CronSchedule.parse(f"TZ={s['ScheduleExpressionTimezone']} {unix}")
                found.append(
                    _Schedule(s["Name"], cron, self._urls_by_arn[target["Arn"]], target["Input"])
                )
        return found

    def _read_timers(self) -> list[_Timer]:
        """The one-time schedules of the app's group, as created (read back from the emulator).

        Each is read once (``GetSchedule``) when first listed; ones gone from the list are
        forgotten.
        """
        scheduler, group = self.clients["scheduler"], self.resources.schedule_group
        now_there = self._ready.schedule_names(group)
        if now_there is not None and now_there == self._pending.keys() | self._fired:
            return list(self._pending.values())  # none created or deleted since the last read
        names = [item["Name"]
                 for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group)
                 for item in page["Schedules"]]
        known = {n: self._pending[n] for n in names if n in self._pending}
        for name in names:
            if name in known or name in self._fired:
                continue
            s = scheduler.get_schedule(Name=name, GroupName=group)
            if not s["ScheduleExpression"].startswith("at("):
                continue
            at = _at_time(s["ScheduleExpression"], s.get("ScheduleExpressionTimezone") or "UTC")
            target = s["Target"]
            known[name] = _Timer(name, at, self._url_of(target["Arn"]), target["Input"],
                                 s.get("ActionAfterCompletion") == "DELETE")
        self._pending = known
        return list(known.values())

    # -- the parts moto cannot play -------------------------------------------------------

    def fire_schedules(self) -> int:
        """Send each schedule's input for every fire time since the last check.

        Cron schedules fire for every fire time since the last check; one-time timers whose
        time has come fire once and are deleted (``ActionAfterCompletion=DELETE``).
        """
        now = self.clock.now()
        start = datetime.fromtimestamp(self._schedules_checked, UTC)
        end = datetime.fromtimestamp(now, UTC)
        fired = 0
        for s in self.schedules:
            for at in s.cron.fire_times(start, end):
                body = s.input.replace(_SCHEDULED_TIME, at.strftime("%Y-%m-%dT%H:%M:%SZ"))
                self.clients["sqs"].send_message(QueueUrl=s.target_url, MessageBody=body)
                fired += 1
        self._schedules_checked = now
        for timer in self._read_timers():
            if timer.at > now:
                continue
            # A timer whose queue a deploy deleted fails to deliver: Scheduler retries, then
            # drops it (the emulator does not play the delivery DLQ).
            if timer.target_url is not None:
                self.clients["sqs"].send_message(QueueUrl=timer.target_url,
                                                 MessageBody=timer.input)
            if timer.delete_after:
                self.clients["scheduler"].delete_schedule(
                    Name=timer.name, GroupName=self.resources.schedule_group)
            else:
                self._fired.add(timer.name)
            del self._pending[timer.name]
            fired += 1
        return fired

    def poll(self, consumer: _Consumer, service: LambdaApp | None = None,
             chaos: random.Random | None = None) -> int:
        """One event source mapping poll: receive records, invoke the handler once per batch.

        A normal poll receives as many records as one receive returns and hands them to
        the handler in invocations of the queue's batch size, one after another, as the
        event source mapping hands them to concurrent invocations. A chaos worker is one
        Lambda container, so it receives one batch: the others are left to the other workers.
        The records handled are deleted together at the end of the poll: nothing else
        receives from the queue meanwhile, and one ``DeleteMessageBatch`` per poll, not per
        invocation, keeps a batch size of 1 as cheap to emulate as 10.

        Args:
            consumer: The queue and its handler.
            service: The handler instance to invoke (a Lambda container); the consumer's own
                by default.
            chaos: In chaos mode, the worker's dice: the batch is shuffled, and records that
                failed (or were in a crashed batch) become visible again at once, as if
                their visibility timeout had passed.

        Returns:
            Records handled successfully (in chaos mode: records received).
        """
        size = consumer.delivery.batch_size
        got = self._receive(consumer, size if chaos is not None else _RECEIVE_MAX)
        if chaos is not None:
            chaos.shuffle(got)
        done: list[dict[str, Any]] = []
        try:
            for i in range(0, len(got), size):
                done += self._invoke(consumer, got[i:i + size], service or consumer.service, chaos)
        finally:  # a crash raised in normal mode leaves its batch and the rest in flight
            self._delete(consumer, done)
        return len(got) if chaos is not None else len(done)

    def _receive(self, consumer: _Consumer, most: int) -> list[dict[str, Any]]:
        """Receive up to ``most`` visible records of the consumer's queue."""
        # One receive at a time per queue (the receive only, not the handling): a worker
        # that finds the queue emptied by another's receive asks nothing, instead of four
        # workers racing for one message with three empty answers.
        with self._receiving[consumer.url]:
            if not self._ready.ready(consumer.url):
                return []
            got: list[dict[str, Any]] = self.clients["sqs"].receive_message(
                QueueUrl=consumer.url,
                MaxNumberOfMessages=most,
                WaitTimeSeconds=0,  # the fake clock does not move by itself: never long-poll
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
        return got

    def _invoke(self, consumer: _Consumer, got: list[dict[str, Any]], service: LambdaApp,
                chaos: random.Random | None) -> list[dict[str, Any]]:
        """One Lambda invocation with the batch ``got``; failed records are left to come back.

        Returns:
            The records handled successfully, for the caller to delete.
        """
        if self.pushback is not None and self.pushback.refused("lambda"):
            # Lambda throttled the invocation: the records never reach the handler, and come
            # back after their visibility timeout with their receive count raised.
            with self._dues_lock:
                heapq.heappush(self._dues,
                               self.clock.now() + consumer.delivery.visibility_timeout_s)
            return []
        event = sqs_lambda_event(got, queue_arn=consumer.arn, region=self.region)
        name = service.config.function_id or "router"
        try:
            result = service.handle_batch(event, _LambdaContext(name), router=consumer.router)
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        except SimulatedCrash:
            if chaos is None:
                raise
            failed = {m["MessageId"] for m in got}  # the whole batch stays in flight
        again = [m for m in got if m["MessageId"] in failed]
        if again and chaos is None:  # they reappear when the queue's visibility timeout passes
            with self._dues_lock:
                heapq.heappush(self._dues,
                               self.clock.now() + consumer.delivery.visibility_timeout_s)
        if again and chaos is not None:
            self._visible_now(consumer, again)
        return [m for m in got if m["MessageId"] not in failed]

    def _delete(self, consumer: _Consumer, done: list[dict[str, Any]]) -> None:
        """Delete handled records, ten to a ``DeleteMessageBatch`` (its most)."""
        for i in range(0, len(done), _RECEIVE_MAX):
            self.clients["sqs"].delete_message_batch(
                QueueUrl=consumer.url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                         for n, m in enumerate(done[i:i + _RECEIVE_MAX])],
            )

    def _visible_now(self, consumer: _Consumer, records: list[dict[str, Any]]) -> None:
        """Make received records visible again at once (their lease 'expired')."""
        sqs = self.clients["sqs"]
        for m in records:
            try:
                sqs.change_message_visibility(
                    QueueUrl=consumer.url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
            except ClientError:
                # SQS caps a message's total invisibility at 12 h from its first receipt,
                # which a fake clock skipping days passes: re-send it. The copy starts a new
                # receive count, so it is marked as the redelivery it stands for (a worker
                # treats a first delivery whose work is done as a duplicate, and would drop
                # what a crash left unsent).
                sqs.send_message(QueueUrl=consumer.url, MessageBody=_as_redelivery(m["Body"]))
                sqs.delete_message(QueueUrl=consumer.url, ReceiptHandle=m["ReceiptHandle"])

    def _visible(self) -> int:
        """Messages visible in any queue (delayed and leased ones are not due yet)."""
        return sum(self._ready.ready(c.url) for c in self.consumers)

    def enable_chaos(self, chaos: Chaos) -> Callable[[], int]:
        """Chaos mode: returns the settle function the harness uses from now on.

        Each worker thread is its own set of Lambda containers (a LambdaApp per queue, with
        its own store cache), polling queues in random order; faults are injected between
        each orchestrator and DynamoDB, SQS and EventBridge.
        """
        faults = Faults(chaos)
        sqs = self.clients["sqs"]
        for c in self.consumers:
            redrive = {"deadLetterTargetArn": self._arn(c.dlq_url),
                       "maxReceiveCount": str(chaos.max_receives)}
            sqs.set_queue_attributes(QueueUrl=c.url,
                                     Attributes={"RedrivePolicy": json.dumps(redrive)})
        crews: list[dict[str, LambdaApp]] = []
        for _ in range(chaos.workers):
            crew = {}
            for c in self.consumers:
                svc = self._service(c.service.config.function_id, c.url, c.dlq_url)
                svc.max_receives = chaos.max_receives
                wrap_orchestrator(svc.orchestrator, faults)
                crew[c.url] = svc
            crews.append(crew)
        self.faults = faults
        self._crews = crews

        def settle() -> int:
            self.fire_schedules()
            idle = Idle(self._visible, chaos.workers)
            free = list(enumerate(crews))
            lock = threading.Lock()

            def work(idle: Idle) -> None:
                with lock:
                    me, crew = free.pop()
                rng = random.Random(chaos.seed * 7919 + me)
                with faults.active():
                    while not idle.done.is_set():
                        n = 0
                        for c in rng.sample(self.consumers, len(self.consumers)):
                            n = self.poll(c, crew[c.url], rng)
                            if n:
                                break
                        if n:
                            idle.count(n)
                            idle.wake()
                        else:
                            idle.rest()

            run_workers(chaos.workers, work, idle)
            return idle.handled

        return settle

    def run_until_idle(self, *, max_records: int = 100_000) -> int:
        """Fire due schedules, then poll every queue until none has a visible record."""
        self.fire_schedules()
        handled = 0
        while True:
            progressed = False
            for consumer in self.consumers:
                n = self.poll(consumer)
                handled += n
                progressed = progressed or n > 0
            if not progressed:
                return handled
            if handled > max_records:
                raise RuntimeError(f"run_until_idle handled {handled} records: a run-away loop?")

    # -- the TestBackend protocol ---------------------------------------------------------

    def send(
        self, events: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event]
    ) -> list[str]:
        """Publish events to the bus (PutEvents), as ``stepkit send --aws`` does."""
        return self.router.orchestrator.send(events)

    def post(self, request: IngressRequest) -> Answer:
        """A request to the deployed event endpoint: API Gateway's event to its Lambda.

        The endpoint's Lambda (``runtime.handlers.ingress``) is built once, with the
        environment the CDK app gives it, over the emulators' table and bus: what it
        publishes reaches the functions' queues through the bus's rules, as deployed.
        """
        if self._ingress is None:
            env = self.resources.ingress_env(self.payload_bucket)
            self._ingress = IngressLambda(self.app, env, self.clients, self.clock)
        route = route_of(request.method, request.path)
        if route is None:  # API Gateway answers a route it does not have itself
            return Answer(404, {"message": "Not Found"})
        response = self._ingress.handle(http_api_event(
            request.method, request.path, request.headers, request.body, route_key=route,
            query=request.query))
        headers = {k: v for k, v in response["headers"].items() if k != "content-type"}
        return Answer(response["statusCode"], json.loads(response["body"]), headers)

    def get_run(self, run_id: str) -> RunState | None:
        """A run with its steps, from DynamoDB."""
        return self.store.load(run_id)

    def list_runs(self, query: RunQuery = RunQuery()) -> list[RunRecord]:  # noqa: B008
        """Runs, newest first."""
        return self.store.list_runs(query)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run."""
        return self.router.orchestrator.cancel(run_id, "cancelled by user")

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Start a new run with the same events (a fork, ``from_step``)."""
        return self.router.orchestrator.rerun(run_id, from_step)

    def dead_letter_bodies(self) -> list[str]:
        """The raw bodies in every DLQ (left in place)."""
        bodies: list[str] = []
        for c in self.consumers:
            got = (
                self.clients["sqs"]
                .receive_message(
                    QueueUrl=c.dlq_url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=0,
                    WaitTimeSeconds=0,
                )
                .get("Messages", [])
            )
            bodies.extend(m["Body"] for m in got)
        return bodies

    def pending_timers(self) -> list[str]:
        """Names of the app's one-time Scheduler schedules still waiting to fire.

        Timers of SQS's own delay (900 s at most) cannot be deleted and are not listed.
        """
        scheduler, group = self.clients["scheduler"], self.resources.schedule_group
        return [item["Name"]
                for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group)
                for item in page["Schedules"]]

    def dead_letters(self) -> list[Message]:
        """Dead-lettered stepkit messages."""
        found = []
        for body in self.dead_letter_bodies():
            raw = json.loads(body)
            if isinstance(raw, dict) and raw.get("type") == "message":
                found.append(Message.from_json(raw))
        return found

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Send dead-lettered messages back to their queues (as ``stepkit dlq redrive``)."""
        from runtime.backends.aws.dlq import DeadLetterQueues

        return DeadLetterQueues(self.resources, self.clients["sqs"]).redrive(
            queue=queue, message_id=message_id
        )

    def duplicate_deliveries(self) -> None:
        """Fault injection: every queue message and event is sent twice."""
        for c in self.consumers:
            orch = c.service.orchestrator
            orch.queue = DuplicatingQueue(orch.queue)
            publish = c.service.bus.publish

            def twice(events: Sequence[dict[str, Any]], _publish: Any = publish) -> None:
                _publish([*events, *events])

            c.service.bus.publish = twice  # type: ignore[method-assign]

    def close(self) -> None:
        """Nothing to release: the emulators belong to the session."""


def _as_redelivery(body: str) -> str:
    """A queue message body marked as a redelivery (``payload.resend``)."""
    raw = json.loads(body)
    if raw.get("type") == "message":
        raw["payload"] = {**(raw.get("payload") or {}), "resend": True}
    return json.dumps(raw, separators=(",", ":"))
