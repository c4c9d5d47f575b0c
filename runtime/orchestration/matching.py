"""Matching events to waiters: as an event arrives, and looking back when a waiter appears.

An event arriving is matched against the live waiters of its name (:func:`match_messages`);
a waiter committed after its event was sent finds it in the event timeline
(:func:`wait_lookback`, :func:`cancel_lookback`). Either way the match becomes one queue
message whose id is derived from the event, the run and the waiter, so a match found twice
(by both paths, or by a repeated routing) is one message: a MATCH for a wait, a CANCEL for
``cancel_on``.
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


def match_messages(ports: Ports, event: dict[str, Any]) -> list[Message]:
    """One MATCH (wait) or CANCEL (cancel_on) message per live waiter ``event`` matches."""
    now = ports.clock.now()
    out = []
    for w in ports.store.waiters_for(event):
        if w.expires_at is not None and w.expires_at < now:
            continue
        if matches(w.expression, event):
            out.append(waiter_message(w.function_id, w.run_id, w.key, w.kind, event))
    return out


def wait_lookback(ports: Ports, state: RunState, rec: StepRecord) -> list[Message]:
    """A MATCH message for a timeline event a just-committed wait may have missed."""
    query = lookback(state, rec)
    if query is None:
        return []
    run = state.run
    now = ports.clock.now()
    for event in ports.store.events_since(query.event, query.since_ms, now=now):
        if event["id"] not in query.exclude and matches(query.expression, event):
            return [waiter_message(run.function_id, run.run_id, rec.key, WaiterKind.STEP,
                                   event)]
    return []


def cancel_lookback(ports: Ports, fn: FunctionDef, state: RunState) -> list[Message]:
    """A CANCEL message if a cancel_on event arrived since the run's trigger was sent."""
    run = state.run
    if not fn.cancel_on:
        return []
    own = {e["id"] for e in run.events}
    since = int(run.events[0].get("ts") or 0)
    now = ports.clock.now()
    for i, w in enumerate(cancel_waiters(fn, run, run.created_at)):
        if w.expires_at is not None and w.expires_at < now:
            continue
        for event in ports.store.events_since(w.event_name, since, now=now):
            if event["id"] not in own and matches(w.expression, event):
                return [waiter_message(fn.id, run.run_id, f"cancel:{i}", WaiterKind.CANCEL,
                                       event)]
    return []
