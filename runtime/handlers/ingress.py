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
from collections.abc import Mapping
from typing import Any

from runtime.app import App
from runtime.backends.aws.bus import EventBridgeBus
from runtime.backends.aws.payloads import S3Payloads
from runtime.backends.aws.resources import ENV_BUS, ENV_PAYLOAD_BUCKET, ENV_TABLE
from runtime.backends.aws.store import DynamoStore
from runtime.errors import ConfigurationError
from runtime.ingress.endpoint import Answer, Ingress, IngressRequest
from runtime.ingress.keys import EventKeys
from runtime.orchestration.clock import SystemClock
from runtime.orchestration.protocols import Clock

LambdaHandler = Any


class IngressLambda:
    """The endpoint as one Lambda container runs it (built once, at cold start).

    Args:
        app: The deployed app (its webhook sources and ``data=`` models).
        env: The Lambda's environment (``AppResources.ingress_env``).
        clients: boto3 clients: ``dynamodb``, ``events``, and ``s3`` when events may be
            over 256 KB.
        clock: Time source (a fake one in tests).
    """

    def __init__(self, app: App, env: Mapping[str, str], clients: Mapping[str, Any],
                 clock: Clock | None = None) -> None:
        missing = [k for k in (ENV_TABLE, ENV_BUS) if not env.get(k)]
        if missing:
            raise ConfigurationError(f"missing environment variable(s) {', '.join(missing)}: "
                                     "the CDK app sets them on the event endpoint's Lambda")
        self.clock = clock or SystemClock()
        bucket = env.get(ENV_PAYLOAD_BUCKET)
        payloads = S3Payloads(bucket, clients.get("s3")) if bucket else None
        store = DynamoStore(env[ENV_TABLE], client=clients["dynamodb"], clock=self.clock)
        self.bus = EventBridgeBus(app.id, env[ENV_BUS], clients["events"], payloads=payloads)
        self.ingress = Ingress(app, keys=EventKeys(store, self.clock),
                               publish=lambda events: self.bus.publish(events),
                               clock=self.clock)

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
        return cls(app, os.environ, clients)

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one API Gateway (HTTP API, payload 2.0) request."""
        try:
            request = request_of(event)
        except ValueError as exc:
            return response_of(Answer.error(400, str(exc)))
        return response_of(self.ingress.handle(request))


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
            return endpoint.handle(event)

        _entry = logger.inject_lambda_context(entry, clear_state=True, log_event=False)
    result: dict[str, Any] = _entry(event, context)
    return result
