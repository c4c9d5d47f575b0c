"""Builds the orchestrator a Lambda handler uses, and turns SQS records into work.

What a cold start imports is what the first record needs (``bench/cold_import.py`` measures,
``tests/unit/test_import_weight.py`` checks): boto3 clients are created once per container,
never per record, and the SQS batch loop is stepkit's own (:mod:`runtime.handlers.batch`), not
Powertools' batch package, which loads every event source's data class and asyncio.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from runtime.app import App
from runtime.backends.aws.bus import AppBus, EventBridgeBus
from runtime.backends.aws.payloads import REF_KEY, BrokenReferenceError, S3Payloads
from runtime.backends.aws.queue import STORED, SqsQueue
from runtime.backends.aws.resources import (
    ENV_TRACING,
    MAX_RECEIVES,
    MAX_SQS_DELAY,
    AppResources,
    HandlerConfig,
)
from runtime.backends.aws.store import DynamoStore
from runtime.backends.aws.timers import SchedulerTimers
from runtime.discovery import load_app
from runtime.engine import Limits
from runtime.errors import InvalidEventError, MalformedMessageError
from runtime.events import SYSTEM_PREFIX, validate_event
from runtime.handlers.batch import SqsRecord, process_partial_response
from runtime.handlers.metrics import CloudWatchMetrics
from runtime.messages import Deferral, checked
from runtime.orchestration.clock import SystemClock
from runtime.orchestration.orchestrator import Orchestrator
from runtime.orchestration.protocols import Clock
from runtime.orchestration.pushback import is_pushback, short
from runtime.records import Message

#: Where a router record pushed back counts its pushbacks (see ``LambdaApp._route_later``).
_DEFERRED = "stepkit_deferred"

class BadMessageError(ValueError):
    """A queue record that is none of the shapes stepkit sends (it ends in the DLQ)."""


class MissingEventError(BadMessageError):
    """A bus delivery refers to a stored event that is not there (forged, or expired).

    Attributes:
        event_id: The event's id, as the delivery gives it.
        name: The event's name.
        key: The payload bucket's key it refers to.
        why: What reading it answered.
    """

    def __init__(self, event_id: str, name: str, key: str, why: BrokenReferenceError) -> None:
        super().__init__(f"event {event_id} ('{name}'): its stored object {key} cannot be "
                         f"read: {why}")
        self.event_id = event_id
        self.name = name
        self.key = key
        self.why = str(why)


def event_from_envelope(raw: dict[str, Any], payloads: S3Payloads | None = None,
                        now_ms: int | None = None) -> dict[str, Any]:
    """The stepkit event in an EventBridge delivery, with gaps filled from the envelope.

    ``Detail`` is the event JSON. Anything that can call PutEvents may send one, so a missing
    ``name`` is the ``DetailType``, a missing ``id`` the EventBridge event id and a missing
    ``ts`` its ``time``: every target (each function's queue and the router) receives the
    same envelope, so they agree on the id, which is what deduplicates runs. An event too
    large for EventBridge travels as ``{id, name, ts, "$stepkit_payload"}`` and is read back
    from the payload bucket; its object must be the event's own (under ``runs/<event id>/``,
    with that id and name), so a forged reference cannot bring in another run's data.

    Raises:
        BadMessageError: The detail is not a valid event.
    """
    detail = raw.get("detail")
    if not isinstance(detail, dict):
        raise BadMessageError("EventBridge delivery without a detail object")
    kind = str(raw.get("detail-type"))
    if kind.startswith(SYSTEM_PREFIX) or str(detail.get("name", "")).startswith(SYSTEM_PREFIX):
        raise BadMessageError(
            f"refused '{detail.get('name') or kind}' from the app's bus: names under "
            f"'{SYSTEM_PREFIX}' are stepkit's own events and messages, which it never sends "
            "through the bus (anyone with PutEvents could forge them)"
        )
    if detail.get("name") not in (None, kind):
        raise BadMessageError(
            f"EventBridge delivery's DetailType '{kind}' differs from its event's name "
            f"'{detail['name']}'"
        )
    if REF_KEY in detail:
        detail = _stored_event(detail, kind, payloads)
    event = dict(detail)
    event.setdefault("name", kind)
    if not event.get("id"):
        event["id"] = str(raw.get("id") or "")
    if not event.get("ts") and raw.get("time"):
        when = datetime.fromisoformat(str(raw["time"]).replace("Z", "+00:00"))
        event["ts"] = int(when.timestamp() * 1000)
    try:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return validate_event(event, now_ms=now).to_json()
    except InvalidEventError as exc:
        raise BadMessageError(f"EventBridge delivery carries an invalid event: {exc}") from None


def _stored_event(detail: dict[str, Any], kind: str,
                  payloads: S3Payloads | None) -> dict[str, Any]:
    """The event a bus delivery refers to (see :func:`event_from_envelope`)."""
    ref, event_id = detail.get(REF_KEY), str(detail.get("id") or "")
    if payloads is None or not isinstance(ref, dict) or not event_id:
        raise BadMessageError("a stored event without a reference this Lambda can read "
                              "(is STEPKIT_PAYLOAD_BUCKET set?)")
    if not str(ref.get("key", "")).startswith(f"runs/{event_id}/"):
        raise BadMessageError(f"event {event_id}: its stored object is not its own")
    try:
        event = payloads.resolve({REF_KEY: ref})
    except BrokenReferenceError as exc:
        raise MissingEventError(event_id, kind, str(ref["key"]), exc) from None
    if not isinstance(event, dict) or event.get("id") != event_id or event.get("name") != kind:
        raise BadMessageError(f"event {event_id}: its stored object is another event")
    return event


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def deployed_entry(*, router: bool) -> LambdaHandler:
    """The entry of a Lambda: the deployed app (see ``load_app(deployed=True)``) over AWS."""
    return LambdaApp.from_env(load_app(deployed=True)).lambda_handler(router=router)


class LambdaApp:
    """The app as one Lambda container runs it: its orchestrator, its SQS batches turned into work.

    Built once per container (cold start) over DynamoDB, SQS and EventBridge.

    Args:
        app: The app (from ``functions/``).
        config: Names from the environment.
        clients: boto3 clients by service name (``dynamodb``, ``sqs``, ``events``; a
            ``scheduler`` one is made on the first long timer when absent, an ``s3`` one on
            the first large output).
        clock: Time source (a fake one in tests).
    """

    def __init__(
        self,
        app: App,
        config: HandlerConfig,
        clients: dict[str, Any],
        clock: Clock | None = None,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen
    ) -> None:
        self.app = app
        self.config = config
        self.clock = clock or SystemClock()
        self.logger = Logger(service=app.id)
        #: Powertools Tracer when the Lambda's X-Ray tracing is active (``STEPKIT_TRACING``).
        self.tracer: Any = None
        self.payloads = (S3Payloads(config.payload_bucket, clients.get("s3"))
                         if config.payload_bucket else None)
        store = DynamoStore(
            config.table,
            retention_days=config.retention_days,
            client=clients["dynamodb"],
            clock=self.clock,
            payloads=self.payloads,
        )
        self.sqs = clients["sqs"]
        self.resources = AppResources.for_app(app, stage=config.stage)
        self.bus = AppBus(
            EventBridgeBus(app.id, config.bus, clients["events"], payloads=self.payloads),
            self.resources.queue_url(self.resources.router_queue, config.queue_url),
            self.sqs,
        )
        self.metrics = CloudWatchMetrics(app.id)
        timers = SchedulerTimers.for_handler(self.resources, config, clients)
        queue = SqsQueue(self._queue_url, self.clock, self.sqs, timers=timers,
                         payloads=self.payloads)
        self.orchestrator = Orchestrator(
            app,
            store,
            queue,
            self.bus,
            self.clock,
            limits=limits,
            logger=logging.getLogger("stepkit"),
            metrics=self.metrics,
        )
        #: The queue's redrive maxReceiveCount: its last delivery fails the run instead.
        self.max_receives = MAX_RECEIVES

    @classmethod
    def from_env(cls, app: App) -> LambdaApp:
        """Build from the Lambda environment (names set by the CDK app)."""
        import boto3

        config = HandlerConfig.from_env()
        tracer = None
        if os.environ.get(ENV_TRACING) == "true":
            # Before the clients: the tracer patches botocore, so AWS calls become subsegments.
            from aws_lambda_powertools import Tracer

            tracer = Tracer(service=app.id)
        service_logger = Logger(service=app.id)
        # stepkit's own loggers write through Powertools' JSON formatter, so every line carries
        # the keys appended per record (run id, function id, step).
        copy_config_to_registered_loggers(source_logger=service_logger, include={"stepkit"})
        clients: dict[str, Any] = {
            "dynamodb": boto3.client("dynamodb"),
            "sqs": boto3.client("sqs"),
            "events": boto3.client("events"),
        }
        lambda_app = cls(app, config, clients)
        lambda_app.logger = service_logger
        lambda_app.tracer = tracer
        return lambda_app

    def _queue_url(self, function_id: str) -> str:
        """The queue of ``function_id`` (every app queue is next to this Lambda's own)."""
        name = self.resources.function(function_id).queue
        return self.resources.queue_url(name, self.config.queue_url)

    def lambda_handler(self, *, router: bool) -> LambdaHandler:
        """The Lambda entry point: :meth:`handle_batch` with the invocation on every log line.

        Powertools adds the request id, function name, memory, ARN and ``cold_start`` to
        every line (keys appended per record are cleared per invocation), and, with tracing
        on, records the invocation as an X-Ray segment.
        """

        def entry(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return self.handle_batch(event, context, router=router)

        handler: LambdaHandler = self.logger.inject_lambda_context(entry, clear_state=True)
        if self.tracer is not None:
            handler = self.tracer.capture_lambda_handler(handler, capture_response=False)
        return handler

    # -- worker ----------------------------------------------------------------------------

    def message_from_body(self, body: str) -> Message:
        """Parse a function-queue record: a message, an EventBridge event, or a cron fire.

        Raises:
            BadMessageError: The record is none of them, or a message stepkit never wrote
                (:func:`runtime.messages.checked` says what is wrong with it).
        """
        try:
            raw = json.loads(body)
        except json.JSONDecodeError as exc:
            raise BadMessageError(f"queue record is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BadMessageError("queue record is not a JSON object")
        fn_id = self.config.function_id
        if fn_id is None:
            raise BadMessageError("a worker needs STEPKIT_FUNCTION")
        if "detail-type" in raw:  # a trigger rule's delivery of an app event
            return self.orchestrator.start_message(self.app.get(fn_id),
                                                   event_from_envelope(raw, self.payloads,
                                                                       self._now_ms()))
        kind = raw.get("type")
        if kind == "cron":
            return self._cron_message(raw, fn_id)
        if kind == STORED:  # too large for SQS: the message is in the payload bucket
            if self.payloads is None or not isinstance(raw.get(REF_KEY), dict):
                raise BadMessageError("a stored message without a reference it can read "
                                      "(is STEPKIT_PAYLOAD_BUCKET set?)")
            try:
                raw = self.payloads.resolve({REF_KEY: raw.get(REF_KEY)})
            except BrokenReferenceError as exc:
                raise BadMessageError(f"a stored message that cannot be read: {exc}") from None
            if not isinstance(raw, dict):
                raise BadMessageError("a stored message that is not a JSON object")
            kind = raw.get("type")
        if kind == "message":
            try:
                return checked(Message.from_json(raw))
            except MalformedMessageError as exc:
                raise BadMessageError(str(exc)) from None
        raise BadMessageError(f"unrecognised queue record (keys: {sorted(raw)[:8]})")

    def _now_ms(self) -> int:
        """The receive time events are validated against (the injected clock in tests)."""
        return int(self.clock.now() * 1000)

    def _cron_message(self, raw: dict[str, Any], fn_id: str) -> Message:
        """The START of a cron fire, as the function's schedule sends it."""
        cron, when = raw.get("cron"), raw.get("scheduled_time")
        try:
            if not isinstance(cron, str) or not isinstance(when, str):
                raise ValueError("a cron expression and a scheduled time")
            at = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadMessageError(f"malformed cron fire: expected 'cron' and an ISO 8601 "
                                  f"'scheduled_time' ({exc})") from None
        return self.orchestrator.cron_message(self.app.get(fn_id), cron, at.timestamp())

    def _dead_letter(self, record: SqsRecord, exc: BadMessageError) -> None:
        """Send a record that can never succeed to the DLQ at once, with the reason.

        Without a DLQ configured (a hand-run handler), raise: the queue's redrive applies.
        """
        if not self.config.dlq_url:
            raise exc
        logging.getLogger("stepkit").error("record %s dead-lettered: %s", record.message_id, exc)
        self.sqs.send_message(
            QueueUrl=self.config.dlq_url,
            MessageBody=record.body,
            MessageAttributes={
                "stepkit_error": {"DataType": "String", "StringValue": str(exc)[:1000]}
            },
        )

    def worker_record(self, record: SqsRecord) -> None:
        """Handle one function-queue record; raising marks it failed for redelivery."""
        try:
            msg = self.message_from_body(record.body)
        except BadMessageError as exc:
            self._dead_letter(record, exc)
            return
        self.logger.append_keys(
            run_id=msg.run_id, function_id=msg.function_id, step=msg.key or "", kind=msg.kind.value
        )
        # SQS always sends it to Lambda; a hand-made record without it counts as a first one.
        count = int(record.raw_event.get("attributes", {}).get("ApproximateReceiveCount") or 1)
        self.orchestrator.handle(msg, receive_count=count, max_receives=self.max_receives)

    def router_record(self, record: SqsRecord) -> None:
        """Handle one router-queue record.

        An app event from the bus (its runs are started by the trigger rules), or one of
        stepkit's own events, sent by a worker straight to this queue (its runs, e.g. an
        ``on_failure`` handler's, are started here).
        """
        try:
            raw = json.loads(record.body)
            if isinstance(raw, dict) and raw.get("type") == "event":
                own = True
                if not isinstance(raw.get("event"), dict):
                    raise BadMessageError("router event record without an event object")
                event = validate_event(
                    raw["event"], now_ms=self._now_ms(), allow_system=True
                ).to_json()
            elif isinstance(raw, dict) and "detail-type" in raw:
                own = False
                event = event_from_envelope(raw, self.payloads, self._now_ms())
            else:
                raise BadMessageError("router record is neither an event nor a bus delivery")
        except json.JSONDecodeError as exc:
            self._dead_letter(record, BadMessageError(f"router record is not JSON: {exc}"))
            return
        except InvalidEventError as exc:
            self._dead_letter(record, BadMessageError(f"router record's event: {exc}"))
            return
        except MissingEventError as exc:
            # Without its body the event can match no wait, and no retry or redrive brings
            # the object back: drop this one event, saying so. (Each function queue's trigger
            # delivery of it is dead-lettered with the reason.)
            logging.getLogger("stepkit").warning(
                "event %s ('%s') dropped: its stored object %s cannot be read (%s)",
                exc.event_id, exc.name, exc.key, exc.why)
            return
        except BadMessageError as exc:
            self._dead_letter(record, exc)
            return
        self.logger.append_keys(event_id=event["id"], event_name=event["name"])
        try:
            self.orchestrator.route_event(event, start_runs=own)
        except Exception as exc:
            if not is_pushback(exc) or not self._route_later(raw, event["id"], exc):
                raise

    def _route_later(self, raw: dict[str, Any], event_id: str, exc: Exception) -> bool:
        """Send a router record pushed back to the router's queue again, after its backoff.

        As a worker defers its messages (``runtime.orchestration.pushback``): the record's
        pushbacks are counted in it (``stepkit_deferred``), never towards the queue's
        receive count, for up to the backoff's ceiling. Routing is idempotent per event id,
        so a record routed in part is routed again whole. Returns whether it was sent.
        """
        backoff = self.orchestrator.deferrer.backoff
        later = backoff.pushed_back(Deferral.from_json(raw.get(_DEFERRED)), exc,
                                    self.clock.now(), event_id)
        if later is None or not self.config.queue_url:
            return False
        counts, delay = later
        body = json.dumps({**raw, _DEFERRED: counts.to_json()}, separators=(",", ":"))
        try:
            self.sqs.send_message(QueueUrl=self.config.queue_url, MessageBody=body,
                                  DelaySeconds=min(int(delay), MAX_SQS_DELAY))
        except Exception:
            logging.getLogger("stepkit").exception("event %s could not be deferred", event_id)
            return False
        logging.getLogger("stepkit").warning("event %s pushed back (%d): %s; again in %.0fs",
                                             event_id, counts.pushbacks, short(exc), delay)
        self.metrics.pushback("router")
        return True

    def handle_batch(self, event: dict[str, Any], context: Any, *, router: bool) -> dict[str, Any]:
        """Process an SQS batch, reporting failed records (partial batch response).

        The run metrics of the batch are flushed at its end, even when it fails.
        """
        handler = self.router_record if router else self.worker_record
        # A checkpoint chain hands its run back in time for the whole batch, not only for
        # its own record: every record of a batch shares the invocation's timeout.
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        ports = self.orchestrator.ports
        ports.deadline = time.monotonic() + remaining() / 1000 if remaining else None
        try:
            return process_partial_response(event, handler)
        finally:
            ports.deadline = None
            self.metrics.flush()
