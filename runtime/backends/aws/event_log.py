"""The event log in DynamoDB: ids received (``EVENT#<id>``) and the timeline by name."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import chain, islice
from typing import Any

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import DynamoTable, aws_call
from runtime.backends.rules import dedup_cutoff, expired, same_name, seen_within


class DynamoEventLog(DynamoTable):
    """The :class:`~runtime.orchestration.protocols.EventLog` over DynamoDB."""

    def remember_event(self, event: dict[str, Any], *, now: float, ttl: float) -> bool:
        """Log ``event`` unless its id was received within ``ttl`` seconds; whether it is new."""
        item = self._offload_attrs(event["id"], t.event_item(event, now, ttl))
        # TTL deletion is lazy (absent locally): an expired entry counts as absent.
        put = self.put_action(item, "attribute_not_exists(pk) OR received_ts <= :cutoff",
                              values={":cutoff": t.n(dedup_cutoff(now, ttl))})["Put"]
        return self.put_if("PutItem (event log)", put)

    def event_seen(self, event_id: str, *, now: float, ttl: float,
                   name: str | None = None) -> bool:
        """Whether ``event_id`` was remembered (fully routed) within ``ttl`` seconds.

        With ``name``, only as an event of that name (the entry's ``name``).
        """
        with aws_call("GetItem (event log)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.key(t.EVENT_PREFIX + event_id, t.EVENT_SK),
                ConsistentRead=True,
            ).get("Item")
        return (row is not None and same_name(row["name"]["S"], name)
                and seen_within(float(row["received_ts"]["N"]), now=now, ttl=ttl))

    def received_event(self, event_id: str) -> dict[str, Any] | None:
        """The event received with id ``event_id``, or ``None``: what :meth:`list_events` lists.

        One eventually consistent GetItem (a lookup for people, like :meth:`list_events`,
        which also shows an entry past its TTL until DynamoDB deletes it).
        """
        with aws_call("GetItem (event log)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.key(t.EVENT_PREFIX + event_id, t.EVENT_SK),
            ).get("Item")
        return t.event_from(self._inline_attrs(row)) if row is not None else None

    def log_event(self, event: dict[str, Any], *, now: float, ttl: float) -> None:
        """Keep ``event`` in its name's timeline for ``ttl`` seconds (an idempotent Put)."""
        with aws_call("PutItem (event timeline)"):
            self.client.put_item(TableName=self.table, Item=self._offload_attrs(
                event["id"], t.timeline_item(event, now, ttl)))

    def events_since(self, name: str, since_ms: int, *, now: float) -> list[dict[str, Any]]:
        """Timeline events named ``name`` with ``ts >= since_ms``, oldest first.

        One consistent Query per shard of the name, merged by ``ts``.
        """
        shards = (self._query(
            KeyConditionExpression="pk = :pk AND sk >= :lo",
            ExpressionAttributeValues={":pk": t.s(pk), ":lo": t.s(t.timeline_sk(since_ms, ""))},
            ConsistentRead=True,
        ) for pk in t.timeline_pks(name))
        rows = heapq.merge(*shards, key=lambda r: r["sk"]["S"])
        return [t.event_from(r) for r in rows if not expired(t.expires_at(r), now)]

    def logged_event(self, name: str, ts: int, event_id: str) -> dict[str, Any] | None:
        """One timeline event by its key, or ``None``."""
        with aws_call("GetItem (event timeline)"):
            row = self.client.get_item(
                TableName=self.table, Key=t.timeline_key(name, ts, event_id), ConsistentRead=True,
            ).get("Item")
        return t.event_from(self._inline_attrs(row)) if row else None

    def list_events(self, limit: int = 50, *,
                    summary: bool = False) -> list[dict[str, Any]]:
        """Recently received events, newest first: today's bucket, then yesterday's.

        Each day's shards are merged newest first from the index (keys only, a page of
        ``limit`` at a time), yesterday's read only if today's fall short. The page shown is
        then read with one ``BatchGetItem`` (eventually consistent: a listing for people),
        unless only a ``summary`` is asked for: that is in the index's sort key
        (:func:`table.event_summary`), and only entries written before it was are read.
        """
        if limit <= 0:
            return []
        now = self.clock.now()
        newest = chain.from_iterable(
            heapq.merge(*(self._day_shard(pk, limit)
                          for pk in t.shard_pks(t.DAY_PREFIX + t.iso(day)[:10])), reverse=True)
            for day in (now, now - t.DAY))
        page = list(islice(newest, limit))
        short = {i: t.event_summary(sk) for sk, i in page} if summary else {}
        keys = [t.key(t.EVENT_PREFIX + i, t.EVENT_SK) for _, i in page if short.get(i) is None]
        rows = {r["pk"]["S"].removeprefix(t.EVENT_PREFIX): r
                for r in self._batch_get(keys, consistent=False)} if keys else {}
        found = [short.get(i) or (t.event_from(rows[i]) if i in rows else None)
                 for _, i in page]
        return [e for e in found if e is not None]

    def _day_shard(self, pk: str, page: int) -> Iterator[tuple[str, str]]:
        """``(sort key, event id)`` of one shard of a day, newest first."""
        rows = self._query(
            IndexName=t.GSI_EVENTS_BY_DAY, KeyConditionExpression="gsi3pk = :p",
            ExpressionAttributeValues={":p": t.s(pk)}, ScanIndexForward=False,
            PaginationConfig={"PageSize": page},
        )
        for row in rows:
            yield row["gsi3sk"]["S"], row["pk"]["S"].removeprefix(t.EVENT_PREFIX)
