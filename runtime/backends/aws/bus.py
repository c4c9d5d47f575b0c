"""EventBridge adapter: events and cross-function queue messages as PutEvents entries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from runtime.backends.aws.resources import MESSAGE_DETAIL_TYPE
from runtime.errors import InvalidEventError, StepkitError
from runtime.records import Message

MAX_ENTRY_BYTES = 256 * 1024
MAX_BATCH = 10
_TRIES = 4


class PublishError(StepkitError):
    """EventBridge kept refusing entries."""


def _entry_size(entry: dict[str, Any]) -> int:
    # How EventBridge sizes an entry: the UTF-8 bytes of Source, DetailType, Detail
    # (plus Time and Resources, which we don't set).
    return sum(len(str(entry.get(k, "")).encode()) for k in ("Source", "DetailType", "Detail"))


class EventBridgeBus:
    """Publishes to the app's bus (the ``Bus`` protocol), and routes messages to other queues.

    Args:
        app_id: The entries' ``Source``.
        bus_name: The custom bus.
        client: A boto3 ``events`` client.
    """

    def __init__(self, app_id: str, bus_name: str, client: Any) -> None:
        self.app_id = app_id
        self.bus_name = bus_name
        self.client = client

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish events: ``DetailType`` = event name, ``Detail`` = the event JSON."""
        self._put([self._entry(e["name"], e, f"event '{e['name']}' ({e['id']})") for e in events])

    def send_messages(self, messages: Sequence[Message]) -> None:
        """Route queue messages to other functions' queues through their message rules."""
        self._put(
            [
                self._entry(
                    MESSAGE_DETAIL_TYPE, m.to_json(), f"message {m.kind.value} for {m.run_id}"
                )
                for m in messages
            ]
        )

    def _entry(self, detail_type: str, detail: dict[str, Any], what: str) -> dict[str, Any]:
        entry = {
            "Source": self.app_id,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, separators=(",", ":")),
            "EventBusName": self.bus_name,
        }
        size = _entry_size(entry)
        if size > MAX_ENTRY_BYTES:
            raise InvalidEventError(
                f"{what}: the EventBridge entry is {size} bytes, over the {MAX_ENTRY_BYTES}-byte "
                "limit; send a reference to large data instead"
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
                        f"'{self.bus_name}' after {_TRIES} tries: {', '.join(codes)}"
                    )
                time.sleep(0.05 * 2**attempt)
