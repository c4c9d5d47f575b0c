"""Lambda entry for the HTTPS event endpoint (API Gateway HTTP API, payload format 2.0).

``-c stepkit:eventApi=true`` deploys it (``infra/constructs/event_api.py``). The request is
answered by :class:`runtime.ingress.endpoint.Ingress` over the app's table (event keys, one
cached ``GetItem`` per key per 30 s) and its bus (``PutEvents``; events over 256 KB through
the payload bucket). It holds no queue and starts no run itself: the bus's rules do, as for
``stepkit send``.

The request is never logged: ``inject_lambda_context`` runs without ``log_event``, since the
path carries the event key and the body the payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from runtime.app import App
from runtime.backends.aws.bus import EventBridgeBus
from runtime.backends.aws.gate_store import DynamoGateStore
from runtime.backends.aws.payloads import S3Payloads
from runtime.backends.aws.resources import ENV_BUS, ENV_PAYLOAD_BUCKET, ENV_TABLE
from runtime.errors import ConfigurationError, PushbackError
from runtime.ingress.endpoint import Answer, Ingress, IngressRequest
from runtime.ingress.keys import EventKeys
from runtime.orchestration.clock import SystemClock
from runtime.orchestration.protocols import Clock

LambdaHandler = Any

#: Entries in one ``PutEvents`` call (EventBridge's limit).
PUT_EVENTS_ENTRIES = 10
#: ``PutEvents`` calls one request makes at once: 100 slices of 1,000 events in ~1 s, well
#: under the account's PutEvents quota (thousands of requests/s; see ARCHITECTURE.md).
PUBLISH_THREADS = 8
#: Seconds before the Lambda's end by which a request is answered (429 with its ids if the
#: publish is not done): time to build and return the answer.
ANSWER_MARGIN_S = 1.5


class IngressLambda:
    """The endpoint as one Lambda container runs it (built once, at cold start).

    Args:
        app: The deployed app (its webhook sources and ``data=`` models).
        env: The Lambda's environment (``AppResources.ingress_env``).
        clients: boto3 clients: ``dynamodb``, ``events``, and ``s3`` when events may be
            over 256 KB.
        clock: Time source (a fake one in tests).
        config: The botocore ``Config`` of the S3 client made for the first large event.
    """

    def __init__(self, app: App, env: Mapping[str, str], clients: Mapping[str, Any],
                 clock: Clock | None = None, *, config: Any = None) -> None:
        missing = [k for k in (ENV_TABLE, ENV_BUS) if not env.get(k)]
        if missing:
            raise ConfigurationError(f"missing environment variable(s) {', '.join(missing)}: "
                                     "the CDK app sets them on the event endpoint's Lambda")
        self.clock = clock or SystemClock()
        bucket = env.get(ENV_PAYLOAD_BUCKET)
        payloads = S3Payloads(bucket, clients.get("s3"), config=config) if bucket else None
        # The keys' reads only: the gate store, not the whole DynamoStore (a lighter import).
        store = DynamoGateStore(env[ENV_TABLE], client=clients["dynamodb"], clock=self.clock)
        self.bus = EventBridgeBus(app.id, env[ENV_BUS], clients["events"], payloads=payloads)
        self.ingress = Ingress(app, keys=EventKeys(store, self.clock), publish=self.publish,
                               clock=self.clock)
        self._pool: ThreadPoolExecutor | None = None  # made for the first multi-slice post
        self._answer_by: float | None = None  # this request's deadline (monotonic seconds)

    @classmethod
    def from_env(cls, app: App) -> IngressLambda:
        """Build from the Lambda environment, with one client per service per container."""
        import boto3
        from botocore.config import Config

        # Short timeouts: a call that hangs holds account concurrency the workers share (the
        # stage throttle caps requests, not their duration); the client answers 5xx and posts
        # again, and a repeated id starts nothing new.
        config = Config(connect_timeout=2, read_timeout=5,
                        retries={"max_attempts": 3, "mode": "standard"})
        # No S3 client yet: one is made for the first event over 256 KB (S3Payloads).
        clients = {name: boto3.client(name, config=config) for name in ("dynamodb", "events")}
        return cls(app, os.environ, clients, config=config)

    def handle(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """Answer one API Gateway (HTTP API, payload 2.0) request.

        ``context`` is the Lambda's: its remaining time bounds the publish (see
        :meth:`publish`); without one (tests) the publish waits as long as it takes.
        """
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        self._answer_by = (time.monotonic() + remaining() / 1000 - ANSWER_MARGIN_S
                           if remaining is not None else None)
        try:
            request = request_of(event)
        except ValueError as exc:
            return response_of(Answer.error(400, str(exc)))
        return response_of(self.ingress.handle(request))

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Put ``events`` on the bus, in slices of one ``PutEvents`` each, side by side.

        A request of 1,000 events is 100 ``PutEvents`` calls: one after another, at 50-100
        ms each and more with the SDK's retries, they would outlast the Lambda's 10 s and
        the client would get API Gateway's 5xx without the ids. Eight at a time they take
        about a second; and a publish still running :data:`ANSWER_MARGIN_S` before the
        Lambda's end raises a :class:`PushbackError`, answered 429 with every id (a repost
        with them starts nothing twice).

        Raises:
            PushbackError: Out of time.
        """
        slices = [events[i:i + PUT_EVENTS_ENTRIES]
                  for i in range(0, len(events), PUT_EVENTS_ENTRIES)]
        if len(slices) == 1:
            self.bus.publish(slices[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="publish")
        futures = [self._pool.submit(self.bus.publish, part) for part in slices]
        timeout = (None if self._answer_by is None
                   else max(0.0, self._answer_by - time.monotonic()))
        done, pending = wait(futures, timeout=timeout, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()  # not started: nothing of it is on the bus
        for future in done:
            future.result()  # the first failure, as it was raised
        if pending:
            raise PushbackError(f"{len(events)} events were still being published when the "
                                "endpoint had to answer")


def request_of(event: Mapping[str, Any]) -> IngressRequest:
    """The request an API Gateway payload 2.0 event carries.

    Raises:
        ValueError: A body marked base64 that is not.
    """
    http = (event.get("requestContext") or {}).get("http") or {}
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the request body is not valid base64") from None
    else:
        raw = body.encode("utf-8", "surrogatepass")
    query = {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()}
    return IngressRequest(str(http.get("method") or "GET"), str(event.get("rawPath") or "/"),
                          headers, raw, query)


def response_of(answer: Answer) -> dict[str, Any]:
    """The payload 2.0 response of an answer (JSON)."""
    return {"statusCode": answer.status,
            "headers": {"content-type": "application/json", **answer.headers},
            "body": json.dumps(answer.body, separators=(",", ":")),
            "isBase64Encoded": False}


_entry: LambdaHandler | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry: the app and clients are built once per container."""
    global _entry
    if _entry is None:
        from aws_lambda_powertools import Logger
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        from runtime.discovery import load_app

        app = load_app(deployed=True)
        endpoint = IngressLambda.from_env(app)
        logger = Logger(service=app.id)
        copy_config_to_registered_loggers(source_logger=logger, include={"stepkit"})

        def entry(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return endpoint.handle(event, context)

        _entry = logger.inject_lambda_context(entry, clear_state=True, log_event=False)
    result: dict[str, Any] = _entry(event, context)
    return result
