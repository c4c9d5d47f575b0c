"""Matching events to waiters: as an event arrives, and looking back when a waiter appears.

An event arriving is matched against the live waiters of its name (:func:`match_messages`);
a waiter committed after its event was sent finds it in the event timeline
(:func:`wait_lookback`, :func:`cancel_lookback`). Either way the match becomes one queue
message whose id is derived from the event, the run and the waiter, so a match found twice
(by both paths, or by a repeated routing) is one message: a MATCH for a wait, a CANCEL for
``cancel_on``.

Whether an event came in time for a waiter is judged by when it was sent (its ``ts``), never
by when the match is made (:func:`in_time`): a routing retried after an ambiguous write, or a
lookback done by a redelivery, may come minutes later. For the same reason a wait's timeout
first looks back too (:func:`wait_timeout`): an event sent before it, whose routing or MATCH
comes late, still answers the wait.
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from typing import Any

from runtime.app import FunctionDef
from runtime.expressions import Expression
from runtime.messages import CancelPayload, EventRef, MatchPayload
from runtime.orchestration.commits import cancel_waiters
from runtime.orchestration.ports import Ports
from runtime.records import Message, MessageKind, RunState, StepRecord, WaiterKind
from runtime.steps.base import Resolution
from runtime.steps.wait import lookback

_MATCH_IDS = uuid.UUID("5d7e0c1b-9a34-4c2e-b8f6-3e1a7d9c0b42")
_INLINE_EVENT_BYTES = 64 * 1024  # larger matched events travel as a timeline reference


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Expression:
    return Expression.compile(source, where="waiter")


def matches(expression: str, event: dict[str, Any]) -> bool:
    """Whether ``event`` (as ``async``) satisfies a waiter's ``expression`` (empty: any)."""
    return not expression or _compiled(expression).matches_vars({"async": event})


def waiter_message(
    function_id: str, run_id: str, key: str, kind: WaiterKind, event: dict[str, Any]
) -> Message:
    """The message an event matching a waiter sends (same id however often it is sent)."""
    mid = uuid.uuid5(_MATCH_IDS, f"{event['id']}/{run_id}/{key}").hex
    if kind is WaiterKind.CANCEL:
        reason = f"cancelled by event '{event['name']}' ({event['id']})"
        return Message(MessageKind.CANCEL, function_id, run_id, id=mid,
                       payload=CancelPayload(reason).to_json())
    return Message(MessageKind.MATCH, function_id, run_id, id=mid, key=key,
                   payload=_match_payload(event).to_json())


def _match_payload(event: dict[str, Any]) -> MatchPayload:
    """The event itself when small, else its timeline key (the worker reads it back)."""
    if len(json.dumps(event, separators=(",", ":"))) <= _INLINE_EVENT_BYTES:
        return MatchPayload(event=event)
    return MatchPayload(ref=EventRef(event["name"], int(event["ts"]), event["id"]))


def in_time(expires_at: float | None, event: dict[str, Any]) -> bool:
    """Whether ``event`` was sent while a waiter ending at ``expires_at`` was live.

    By the event's own time, not the clock: the routing of an event may be retried (its
    timeline append or its sends landed unreported) and a redelivery's lookback may run
    minutes after its commit, both past the waiter's end for an event sent well before it.
    """
    return expires_at is None or int(event.get("ts") or 0) <= expires_at * 1000


def match_messages(ports: Ports, event: dict[str, Any]) -> list[Message]:
    """One MATCH (wait) or CANCEL (cancel_on) message per waiter ``event`` came in time for.

    Each waiter is matched on its own: one whose expression cannot be evaluated (a value a
    run planted in it that the evaluator cannot take) is no match, logged with its run, and
    never stops the event from reaching the other runs' waiters.
    """
    out = []
    for w in ports.store.waiters_for(event):
        if not in_time(w.expires_at, event):
            continue
        try:
            hit = matches(w.expression, event)
        except Exception as exc:
            ports.log.warning("waiter %s of run %s cannot be matched, taken as no match: %s",
                              w.key, w.run_id, f"{type(exc).__name__}: {exc}"[:300])
            continue
        if hit:
            out.append(waiter_message(w.function_id, w.run_id, w.key, w.kind, event))
    return out


def missed_event(ports: Ports, state: RunState, rec: StepRecord,
                 until: float | None = None) -> dict[str, Any] | None:
    """The oldest timeline event that answers waiting step ``rec`` (sent by ``until``)."""
    query = lookback(state, rec)
    if query is None:
        return None
    for event in ports.store.events_since(query.event, query.since_ms, now=ports.clock.now()):
        if (event["id"] not in query.exclude and in_time(until, event)
                and matches(query.expression, event)):
            return event
    return None


def wait_lookback(ports: Ports, state: RunState, rec: StepRecord) -> list[Message]:
    """A MATCH message for a timeline event a just-committed wait may have missed."""
    event = missed_event(ports, state, rec)
    if event is None:
        return []
    run = state.run
    return [waiter_message(run.function_id, run.run_id, rec.key, WaiterKind.STEP, event)]


def wait_timeout(ports: Ports, state: RunState, rec: StepRecord) -> Resolution:
    """How waiting step ``rec`` ends at its timeout: with an event sent in time, else ``None``.

    Its WAKE may be handled before the MATCH of an event sent before the timeout: that
    event's routing was retried late, or a redelivery re-sent the timer (due by then) with
    its lookback's MATCH. The event is in the timeline either way (routing logs it first).
    """
    event = missed_event(ports, state, rec, until=rec.wake_at)
    return Resolution() if event is None else Resolution(output=event)


def cancel_lookback(ports: Ports, fn: FunctionDef, state: RunState) -> list[Message]:
    """A CANCEL message if a cancel_on event arrived since the run's trigger was sent."""
    run = state.run
    if not fn.cancel_on:
        return []
    own = {e["id"] for e in run.events}
    since = int(run.events[0].get("ts") or 0)
    now = ports.clock.now()
    for w in cancel_waiters(fn, run, run.created_at, strict=False):
        for event in ports.store.events_since(w.event_name, since, now=now):
            if event["id"] not in own and in_time(w.expires_at, event) and matches(
                    w.expression, event):
                return [waiter_message(fn.id, run.run_id, w.key, WaiterKind.CANCEL, event)]
    return []
