"""Event publication: app events to EventBridge, stepkit's own events to the router queue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from runtime.backends.aws.payloads import REF_KEY, S3Payloads
from runtime.backends.aws.queue import send_bodies
from runtime.errors import InvalidEventError, StepkitError
from runtime.events import SYSTEM_PREFIX
from runtime.records import EventOut

MAX_ENTRY_BYTES = 256 * 1024
MAX_BATCH = 10
_TRIES = 4


class PublishError(StepkitError):
    """EventBridge kept refusing entries.

    Attributes:
        codes: The codes it gave the entries it refused (throttling among them is pushback).
    """

    def __init__(self, message: str, *, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.codes = codes


def _entry_size(entry: dict[str, Any]) -> int:
    # How EventBridge sizes an entry: the UTF-8 bytes of Source, DetailType, Detail
    # (plus Time and Resources, which we don't set).
    return sum(len(str(entry.get(k, "")).encode()) for k in ("Source", "DetailType", "Detail"))


class EventBridgeBus:
    """Publishes app events to the app's bus (``DetailType`` = name, ``Detail`` = the event).

    An event whose entry would pass EventBridge's 256 KB is put to the payload bucket first
    (as ``runs/<event id>/<sha256>.json``) and travels as ``{id, name, ts,
    "$stepkit_payload"}``, which the handlers read back; without a bucket it is refused.

    Args:
        app_id: The entries' ``Source``.
        bus_name: The custom bus.
        client: A boto3 ``events`` client.
        payloads: Where events too large for an entry go (``None``: refused).
    """

    def __init__(self, app_id: str, bus_name: str, client: Any,
                 payloads: S3Payloads | None = None) -> None:
        self.app_id = app_id
        self.bus_name = bus_name
        self.client = client
        self.payloads = payloads

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish events: ``DetailType`` = event name, ``Detail`` = the event JSON."""
        self._put([self._event_entry(e) for e in events])

    def _event_entry(self, event: dict[str, Any]) -> dict[str, Any]:
        what = f"event '{event['name']}' ({event['id']})"
        if self.payloads is None or _entry_size(self._raw(event["name"], event)) \
                <= MAX_ENTRY_BYTES:
            return self._entry(event["name"], event, what)
        ref = self.payloads.offload(event["id"], event)
        stub = {"id": event["id"], "name": event["name"], "ts": event.get("ts"),
                REF_KEY: ref[REF_KEY]}
        return self._entry(event["name"], stub, what)

    def _raw(self, detail_type: str, detail: dict[str, Any]) -> dict[str, Any]:
        return {
            "Source": self.app_id,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, separators=(",", ":")),
            "EventBusName": self.bus_name,
        }

    def _entry(self, detail_type: str, detail: dict[str, Any], what: str) -> dict[str, Any]:
        entry = self._raw(detail_type, detail)
        size = _entry_size(entry)
        if size > MAX_ENTRY_BYTES:
            raise InvalidEventError(
                f"{what}: the EventBridge entry is {size} bytes, over the {MAX_ENTRY_BYTES}-byte "
                "limit; with a payload bucket (STEPKIT_PAYLOAD_BUCKET, the stack's "
                "PayloadBucketName) events up to 4 MiB travel through S3"
            )
        return entry

    def _batches(self, entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        size = 0
        for e in entries:
            s = _entry_size(e)
            if batch and (len(batch) == MAX_BATCH or size + s > MAX_ENTRY_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(e)
            size += s
        if batch:
            yield batch

    def _put(self, entries: list[dict[str, Any]]) -> None:
        for batch in self._batches(entries):
            pending = batch
            for attempt in range(_TRIES):
                result = self.client.put_events(Entries=pending)
                if not result.get("FailedEntryCount"):
                    break
                # Retry only the entries that failed (results are in request order).
                failed = [
                    (e, r)
                    for e, r in zip(pending, result["Entries"], strict=True)
                    if r.get("ErrorCode")
                ]
                pending = [e for e, _ in failed]
                if attempt == _TRIES - 1:
                    codes = sorted({str(r.get("ErrorCode")) for _, r in failed})
                    raise PublishError(
                        f"EventBridge refused {len(pending)} entr(y/ies) on bus "
                        f"'{self.bus_name}' after {_TRIES} tries: {', '.join(codes)}",
                        codes=tuple(codes))
                time.sleep(0.05 * 2**attempt)


class AppBus:
    """The ``Bus`` protocol on AWS: where each event a run emits goes.

    App events (``step.send_event``) go to the app's EventBridge bus, where trigger rules
    and outside consumers see them. stepkit's own events (``stepkit/function.finished``,
    ``.failed``, ``.cancelled``, ``.invoked``) go straight to the router's queue, which only
    stepkit's roles may write: they start ``on_failure`` handlers and resolve waits, so
    they must not be forgeable through the bus, which any producer with ``PutEvents`` can
    write to (the router refuses system events that arrive from it).

    Args:
        events: The app's EventBridge bus.
        router_queue_url: The router's queue.
        sqs: A boto3 ``sqs`` client.
    """

    def __init__(self, events: EventBridgeBus, router_queue_url: str, sqs: Any) -> None:
        self.events = events
        self.router_queue_url = router_queue_url
        self.sqs = sqs

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish: system events to the router queue, the rest to EventBridge."""
        system = [e for e in events if e["name"].startswith(SYSTEM_PREFIX)]
        if system:
            send_bodies(self.sqs, self.router_queue_url, [
                {"MessageBody": json.dumps(EventOut(e).to_json(), separators=(",", ":"))}
                for e in system
            ])
        rest = [e for e in events if not e["name"].startswith(SYSTEM_PREFIX)]
        if rest:
            self.events.publish(rest)
