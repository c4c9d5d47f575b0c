"""Talk to a deployed app: send events to its bus, read its runs from its table.

Names come from arguments, else the ``STEPKIT_APP`` / ``STEPKIT_BUS`` / ``STEPKIT_TABLE``
environment variables, else the names the CDK app derives from ``functions/`` (with the
deployment stage from ``STEPKIT_STAGE``, if any).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_STAGE, ENV_TABLE
from runtime.events import Event, validate_events


@dataclass(frozen=True)
class Deployment:
    """Where a deployed app lives."""

    app_id: str
    bus: str
    table: str

    @classmethod
    def resolve(
        cls, *, app_id: str | None = None, bus: str | None = None, table: str | None = None
    ) -> Deployment:
        """Fill in missing names from the environment, then from ``functions/``."""
        app_id = app_id or os.environ.get(ENV_APP)
        bus = bus or os.environ.get(ENV_BUS)
        table = table or os.environ.get(ENV_TABLE)
        if not (app_id and bus and table):
            from runtime.backends.aws.resources import AppResources
            from runtime.discovery import load_app

            derived = AppResources.for_app(load_app(), stage=os.environ.get(ENV_STAGE) or None)
            app_id, bus, table = (
                app_id or derived.app_id,
                bus or derived.bus,
                table or derived.table,
            )
        return cls(app_id, bus, table)


def send(
    events: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event],
    *,
    app_id: str | None = None,
    bus: str | None = None,
    client: Any = None,
    payload_bucket: str | None = None,
    s3_client: Any = None,
) -> list[str]:
    """Send events to a deployed app's EventBridge bus; return their ids.

    Events are validated first (all or none is sent), then published as PutEvents entries
    (``Source`` = app id, ``DetailType`` = event name, ``Detail`` = the event JSON). An event
    over EventBridge's 256 KB (up to 4 MiB) is put to the app's payload bucket first
    (``payload_bucket``, default ``STEPKIT_PAYLOAD_BUCKET``: the stack output
    ``PayloadBucketName``; the sender needs ``s3:PutObject`` on its ``runs/*``).

    Raises:
        InvalidEventError: An event is invalid, or its entry is over 256 KB and no payload
            bucket is given.
    """
    from runtime.backends.aws.bus import EventBridgeBus
    from runtime.backends.aws.payloads import S3Payloads
    from runtime.backends.aws.resources import ENV_PAYLOAD_BUCKET

    target = Deployment.resolve(app_id=app_id, bus=bus, table="-")
    if client is None:
        import boto3

        client = boto3.client("events")
    valid = validate_events(events, now_ms=int(time.time() * 1000))
    bucket = payload_bucket or os.environ.get(ENV_PAYLOAD_BUCKET)
    payloads = S3Payloads(bucket, s3_client) if bucket else None
    EventBridgeBus(target.app_id, target.bus, client, payloads=payloads).publish(
        [e.to_json() for e in valid])
    return [e.id for e in valid]
