"""The event log in DynamoDB: ids received (``EVENT#<id>``) and the timeline by name."""

from __future__ import annotations

from typing import Any

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import DynamoTable, StoreError, aws_call
from runtime.backends.rules import dedup_cutoff, expired, seen_within


class DynamoEventLog(DynamoTable):
    """The :class:`~runtime.orchestration.protocols.EventLog` over DynamoDB."""

    def remember_event(self, event: dict[str, Any], *, now: float, ttl: float) -> bool:
        """Log ``event`` unless its id was received within ``ttl`` seconds; whether it is new."""
        try:
            with aws_call("PutItem (event log)"):
                self.client.put_item(
                    TableName=self.table,
                    Item=self._offload_attrs(event["id"], t.event_item(event, now, ttl)),
                    # TTL deletion is lazy (absent locally): an expired entry counts as absent.
                    ConditionExpression="attribute_not_exists(pk) OR received_ts <= :cutoff",
                    ExpressionAttributeValues={":cutoff": t.n(dedup_cutoff(now, ttl))},
                )
        except StoreError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def event_seen(self, event_id: str, *, now: float, ttl: float) -> bool:
        """Whether ``event_id`` was remembered (fully routed) within ``ttl`` seconds."""
        with aws_call("GetItem (event log)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.key(t.EVENT_PREFIX + event_id, t.EVENT_SK),
                ConsistentRead=True,
            ).get("Item")
        return row is not None and seen_within(float(row["received_ts"]["N"]), now=now, ttl=ttl)

    def log_event(self, event: dict[str, Any], *, now: float, ttl: float) -> None:
        """Keep ``event`` in its name's timeline for ``ttl`` seconds (an idempotent Put)."""
        with aws_call("PutItem (event timeline)"):
            self.client.put_item(TableName=self.table, Item=self._offload_attrs(
                event["id"], t.timeline_item(event, now, ttl)))

    def events_since(self, name: str, since_ms: int, *, now: float) -> list[dict[str, Any]]:
        """Timeline events named ``name`` with ``ts >= since_ms``: one consistent Query."""
        rows = self._query(
            KeyConditionExpression="pk = :pk AND sk >= :lo",
            ExpressionAttributeValues={
                ":pk": t.s(t.TIMELINE_PREFIX + name), ":lo": t.s(t.timeline_sk(since_ms, ""))},
            ConsistentRead=True,
        )
        return [t.event_from(r) for r in rows if not expired(t.expires_at(r), now)]

    def logged_event(self, name: str, ts: int, event_id: str) -> dict[str, Any] | None:
        """One timeline event by its key, or ``None``."""
        with aws_call("GetItem (event timeline)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.timeline_key(name, ts, event_id), ConsistentRead=True,
            ).get("Item")
        return t.event_from(self._inline_attrs(row)) if row else None

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recently received events, newest first: today's bucket, then yesterday's."""
        now = self.clock.now()
        events: list[dict[str, Any]] = []
        for day in (now, now - t.DAY):
            rows = self._query(
                IndexName=t.GSI_EVENTS_BY_DAY,
                KeyConditionExpression="gsi3pk = :p",
                ExpressionAttributeValues={":p": t.s(t.DAY_PREFIX + t.iso(day)[:10])},
                ScanIndexForward=False,
                PaginationConfig={"PageSize": max(limit, 1)},
            )
            for row in rows:
                if len(events) >= limit:
                    return events
                events.append(t.event_from(row))
        return events
