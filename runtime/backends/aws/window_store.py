"""Batch windows in DynamoDB: a small header per key, an item per seat, an item per event id.

Item layout (every item well under 1 KB but a seat, which is about its event's size):

* header ``WIN#<scope>`` / the key (as gates encode it): the open window's run, its seat
  counter and byte total, when it is due, its timer round, ``closed``, ``started`` and a
  version. A seat is taken with one conditional ``UpdateItem`` (``count + 1``); nothing
  else is written to it per event.
* seat ``WINSEAT#<scope>#<run id>#<n>`` / ``SEAT``: the event in seat ``n`` of window
  ``<run id>``, or a tombstone. One partition per seat: a window's events never share a
  partition, so no key takes more than one write per event.
* member ``WINMEM#<scope>#<event id>`` / ``MEMBER``: the run the event joined, until it lapses
  (TTL). Written in one transaction with the seat; refused when the id is a member already.

A transaction cancelled for a condition or a conflict, and a single write caught in another
write's transaction, are "moved": the method says so and the caller reads the window again.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from runtime.backends.aws import table as t
from runtime.backends.aws.dynamo import REFUSED, DynamoTable, StoreError, aws_call, chunks
from runtime.backends.rules import expired
from runtime.flow import Joined, Window

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

WINDOW_PREFIX, SEAT_PREFIX, MEMBER_PREFIX = "WIN#", "WINSEAT#", "WINMEM#"
SEAT_SK, MEMBER_SK = "SEAT", "MEMBER"
#: A single write refused, or caught in another write's transaction: read again.
_MOVED = ("ConditionalCheckFailedException", "TransactionConflictException")


def header_key(scope: str, key: str) -> t.Item:
    """The primary key of ``(scope, key)``'s window header."""
    return t.key(WINDOW_PREFIX + scope, t.gate_sk(key))


def seat_key(scope: str, run_id: str, seat: int) -> t.Item:
    """The primary key of seat ``seat`` of window ``run_id``."""
    return t.key(f"{SEAT_PREFIX}{scope}#{run_id}#{seat}", SEAT_SK)


def member_key(scope: str, event_id: str) -> t.Item:
    """The primary key of an event id's membership."""
    return t.key(f"{MEMBER_PREFIX}{scope}#{event_id}", MEMBER_SK)


def header_item(scope: str, key: str, w: Window) -> t.Item:
    """Encode a window header (``key`` kept, cut to 512 characters, for the console)."""
    assert w.run_id is not None
    item: t.Item = {
        **header_key(scope, key), "scope": t.s(scope), "key": t.s(key[:512]),
        "run_id": t.s(w.run_id), "count": t.n(w.count), "cap": t.n(w.cap),
        "bytes": t.n(w.bytes),
        "first_ts": t.n(w.first_at), "due_ts": t.n(w.due), "due": t.s(t.iso(w.due)),
        "round": t.n(w.round), "closed": {"BOOL": w.closed}, "started": {"BOOL": w.started},
        "version": t.n(w.version),
    }
    return item


def window_from(row: t.Item) -> Window:
    """Inverse of :func:`header_item`."""
    return Window(
        row["run_id"]["S"], int(row["count"]["N"]), int(row["cap"]["N"]), int(row["bytes"]["N"]),
        float(row["first_ts"]["N"]), float(row["due_ts"]["N"]), int(row["round"]["N"]),
        bool(row["closed"]["BOOL"]), bool(row["started"]["BOOL"]), int(row["version"]["N"]),
    )


class DynamoWindowStore(DynamoTable):
    """The :class:`~runtime.orchestration.protocols.WindowStore` over DynamoDB."""

    def window(self, scope: str, key: str) -> Window:
        """The header: one strongly consistent GetItem (``Window()``: none)."""
        row = self._get(header_key(scope, key), f"GetItem (window {scope})")
        return window_from(row) if row is not None else Window()

    def open_window(self, scope: str, key: str, window: Window) -> bool:
        """Put a new header on condition of the stored version: one conditional PutItem."""
        before = window.version - 1
        if before == 0:
            put = self.put_action(header_item(scope, key, window), "attribute_not_exists(pk)")
        else:
            put = self.put_action(header_item(scope, key, window), "#v = :v",
                                  {"#v": "version"}, {":v": t.n(before)})
        return self._write(partial(self.client.put_item, **put["Put"]),
                           f"PutItem (window {scope})")

    def take_seat(self, scope: str, key: str, run_id: str, size: int,
                  max_bytes: int) -> int | None:
        """Take the next seat: one conditional UpdateItem of the header (a counter)."""
        found: dict[str, Any] = {}

        def update() -> None:
            found.update(self.client.update_item(
                TableName=self.table, Key=header_key(scope, key),
                UpdateExpression="SET #c = #c + :one, #b = #b + :size",
                ConditionExpression="run_id = :r AND closed = :no AND #c < cap"
                                    " AND (#c = :zero OR #b <= :room)",
                ExpressionAttributeNames={"#c": "count", "#b": "bytes"},
                ExpressionAttributeValues={
                    ":one": t.n(1), ":size": t.n(size), ":r": t.s(run_id),
                    ":no": {"BOOL": False}, ":zero": t.n(0),
                    ":room": t.n(max_bytes - size)},
                ReturnValues="UPDATED_NEW"))

        if not self._write(update, f"UpdateItem (window {scope} seat)"):
            return None
        return int(found["Attributes"]["count"]["N"])

    def join_window(self, scope: str, run_id: str, seat: int, event: dict[str, Any], *,
                    member_until: float, seat_until: float) -> Joined:
        """Put the membership and the seat: one transaction of two items.

        The membership is refused while the id is a member (of any window); the seat when it
        is tombstoned. Any other cancellation (a conflict with the window's close) is "lost".
        """
        now = self.clock.now()
        member = self.put_action(
            {**member_key(scope, event["id"]), "run_id": t.s(run_id),
             "expires_ts": t.n(member_until), t.TTL_ATTRIBUTE: t.n(math.ceil(member_until))},
            "attribute_not_exists(pk) OR expires_ts < :now", values={":now": t.n(now)})
        actions: list[TransactWriteItemTypeDef] = [
            member, self.put_action(self._seat(scope, run_id, seat, event, seat_until),
                                    "attribute_not_exists(pk)")]
        codes = self._transact_codes(f"window {run_id}", actions)
        if codes is None:
            return Joined(run_id)
        if codes and codes[0] == REFUSED:
            ran = self.window_member(scope, event["id"])
            return Joined(ran, duplicate=True) if ran is not None else Joined(None, lost=True)
        return Joined(None, lost=True)

    def window_member(self, scope: str, event_id: str) -> str | None:
        """The run the event joined: one strongly consistent GetItem."""
        row = self._get(member_key(scope, event_id), f"GetItem (window {scope} member)")
        if row is None or expired(float(row["expires_ts"]["N"]), self.clock.now()):
            return None
        return row["run_id"]["S"]

    def window_seats(self, scope: str, run_id: str, count: int) -> dict[int, dict[str, Any]]:
        """Seats ``1..count``: strongly consistent BatchGetItem, 100 keys a call."""
        found: dict[int, dict[str, Any]] = {}
        keys = [seat_key(scope, run_id, n) for n in range(1, count + 1)]
        for chunk in chunks(keys, 100):  # BatchGetItem's limit; max_size is at most 100
            pending: dict[str, Any] = {self.table: {"Keys": chunk, "ConsistentRead": True}}
            for attempt in range(8):
                with aws_call(f"BatchGetItem (window {run_id} seats)"):
                    out = self.client.batch_get_item(RequestItems=pending)
                for row in out["Responses"].get(self.table, []):
                    n = int(row["seat"]["N"])
                    found[n] = t.event_from(row) if "event" in row else {}
                pending = dict(out.get("UnprocessedKeys") or {})
                if not pending:
                    break
                time.sleep(0.01 * 2**attempt)  # throttled: back off, as AWS advises
            else:
                raise StoreError("BatchGetItem kept returning unprocessed keys",
                                 code="UnprocessedKeys")
        return found

    def kill_seat(self, scope: str, run_id: str, seat: int, until: float) -> bool:
        """Tombstone an empty seat: one conditional PutItem (and a read when refused)."""
        put = self.put_action(self._seat(scope, run_id, seat, None, until),
                              "attribute_not_exists(pk)")
        if self._write(partial(self.client.put_item, **put["Put"]),
                       f"PutItem (window {run_id} tombstone)"):
            return True
        row = self._get(seat_key(scope, run_id, seat), f"GetItem (window {run_id} seat)")
        return row is not None and "event" not in row  # tombstoned already: still given up

    def close_window(self, scope: str, key: str, run_id: str) -> Window | None:
        """Close the window: one conditional UpdateItem of the header, read back whole."""
        return self._update(scope, key, "SET closed = :yes, version = version + :one",
                            "run_id = :r AND closed = :no", {":r": t.s(run_id)})

    def mark_window(self, scope: str, key: str, run_id: str, *, started: bool = False,
                    round: int | None = None, expect_round: int | None = None,
                    cap: int | None = None) -> bool:
        """Mark the window started, move its round or raise its cap: one conditional update."""
        if cap is not None:
            return self._update(scope, key, "SET cap = :c, version = version + :one",
                                "run_id = :r AND closed = :no AND cap < :c",
                                {":r": t.s(run_id), ":c": t.n(cap)}) is not None
        if started:
            return self._update(scope, key, "SET started = :yes, version = version + :one",
                                "run_id = :r AND closed = :yes",
                                {":r": t.s(run_id)}) is not None
        assert round is not None and expect_round is not None
        return self._update(
            scope, key, "SET #n = :n, version = version + :one",
            "run_id = :r AND closed = :no AND #n = :o",
            {":r": t.s(run_id), ":n": t.n(round), ":o": t.n(expect_round)},
            {"#n": "round"}) is not None

    def adopt_members(self, scope: str, members: Sequence[tuple[str, str, float]]) -> None:
        """Record memberships one conditional PutItem each, keeping any that exist."""
        for event_id, run_id, until in members:
            put = self.put_action(
                {**member_key(scope, event_id), "run_id": t.s(run_id),
                 "expires_ts": t.n(until), t.TTL_ATTRIBUTE: t.n(math.ceil(until))},
                "attribute_not_exists(pk)")
            self._write(partial(self.client.put_item, **put["Put"]),
                        f"PutItem (window {scope} member)")

    def list_windows(self, scope: str, limit: int = 100) -> list[tuple[str, Window]]:
        """Up to ``limit`` open windows: one paginated Query of the scope's headers.

        Headers are small (about 250 bytes), so a 1 MB page holds thousands; sort keys
        encode the keys, so the open ones are sorted by their ``key`` attribute here.
        """
        if limit <= 0:
            return []

        def live() -> Iterator[tuple[str, str, Window]]:
            for row in self._query(
                KeyConditionExpression="pk = :pk", FilterExpression="closed = :no",
                ExpressionAttributeValues={":pk": t.s(WINDOW_PREFIX + scope),
                                           ":no": {"BOOL": False}},
                ConsistentRead=True,
            ):
                yield row["key"]["S"], row["sk"]["S"], window_from(row)

        smallest = heapq.nsmallest(limit, live(), key=lambda g: (g[0], g[1]))
        return [(k, w) for k, _, w in smallest]

    # -- the calls ---------------------------------------------------------------------------

    def _seat(self, scope: str, run_id: str, seat: int, event: dict[str, Any] | None,
              until: float) -> t.Item:
        item: t.Item = {**seat_key(scope, run_id, seat), "seat": t.n(seat),
                        t.TTL_ATTRIBUTE: t.n(math.ceil(until))}
        if event is not None:
            item["event"] = t.js(event)
        return item

    def _get(self, key: t.Item, what: str) -> t.Item | None:
        with aws_call(what):
            return self.client.get_item(TableName=self.table, Key=key,
                                        ConsistentRead=True).get("Item")

    def _write(self, call: Callable[[], Any], what: str) -> bool:
        """Run one single-item write: ``False`` when refused or caught in a transaction."""
        try:
            with aws_call(what):
                call()
        except StoreError as exc:
            if exc.code in _MOVED:
                return False
            raise
        return True

    def _update(self, scope: str, key: str, expression: str, condition: str,
                values: t.Item, names: dict[str, str] | None = None) -> Window | None:
        """One conditional UpdateItem of the header; the header after it, or ``None``."""
        found: dict[str, Any] = {}
        extra: dict[str, Any] = {"ExpressionAttributeNames": names} if names else {}
        given = {":yes": {"BOOL": True}, ":no": {"BOOL": False}, ":one": t.n(1), **values}
        used = set(re.findall(r":\w+", expression + " " + condition))  # DynamoDB refuses others

        def update() -> None:
            found.update(self.client.update_item(
                TableName=self.table, Key=header_key(scope, key), UpdateExpression=expression,
                ConditionExpression=condition, ReturnValues="ALL_NEW",
                ExpressionAttributeValues={k: v for k, v in given.items() if k in used},
                **extra))

        if not self._write(update, f"UpdateItem (window {scope})"):
            return None
        return window_from(found["Attributes"])
