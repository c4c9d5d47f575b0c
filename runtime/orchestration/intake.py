"""Event intake: validate and publish events, and route each one to the runs it concerns.

Routing an event starts the functions it triggers (one START per function, the run id
derived from the event, so a repeated routing starts nothing more) and hands it to the
waiters it matches (:mod:`runtime.orchestration.matching`). A cron fire is a START of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runtime.app import App, FunctionDef
from runtime.errors import InvalidEventError
from runtime.events import SCHEDULED_TIMER, SYSTEM_PREFIX, Event, validate_events
from runtime.messages import StartPayload
from runtime.orchestration.ids import run_id_for_event
from runtime.orchestration.matching import match_messages
from runtime.orchestration.ports import Ports
from runtime.orchestration.timeline import keeps
from runtime.records import Message

#: How long an event id is remembered, so a re-sent event is routed once.
EVENT_DEDUP_SECONDS = 24 * 3600
#: How long events stay in the timeline that waits and cancel_on look back over.
LOOKBACK_SECONDS = 24 * 3600


def starts(fn: FunctionDef, event: dict[str, Any]) -> bool:
    """Whether ``event`` starts ``fn``.

    A trigger (with its CEL ``if``) must match, and it must not be a system event about
    ``fn`` itself (which would loop forever).
    """
    if not fn.triggered_by(event):
        return False
    about = event.get("data", {}).get("function_id")
    return not (event["name"].startswith(SYSTEM_PREFIX) and about == fn.id)


def start_message(fn: FunctionDef, event: dict[str, Any]) -> Message:
    """The START message for ``fn`` triggered by ``event`` (same run id on every delivery)."""
    return StartPayload((event,)).message(fn.id, run_id_for_event(fn.id, event["id"]))


def cron_message(fn: FunctionDef, cron: str, at: float) -> Message:
    """The START message of a cron fire: one run id per function and fire time."""
    ts_ms = int(at * 1000)
    event_id = f"cron-{fn.id}-{ts_ms}"
    event = {"id": event_id, "name": SCHEDULED_TIMER, "data": {"cron": cron}, "user": {},
             "ts": ts_ms}
    return StartPayload((event,), direct=True).message(fn.id, run_id_for_event(fn.id,
                                                                               event_id))


def check_typed(app: App, event: Event, index: int | None) -> None:
    """Validate ``event.data`` against every ``data=`` model declared for its name.

    Raises:
        InvalidEventError: It does not match one, naming the event, model and function.
    """
    where = "event" if index is None else f"event[{index}]"
    for fn, model in app.models_for(event.name):
        try:
            model.model_validate(event.data)
        except ValueError as exc:
            raise InvalidEventError(
                f"{where}.data: '{event.name}' does not match {model.__name__} "
                f"(declared by function '{fn.id}'): {exc}") from None


class Intake:
    """Takes events in: validation, typed-event checks, publication and routing."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports

    def send(
        self,
        events: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event],
        *,
        allow_system: bool = False,
    ) -> list[str]:
        """Validate and publish events (all or none); return their ids."""
        p = self.ports
        valid = validate_events(events, now_ms=int(p.clock.now() * 1000),
                                allow_system=allow_system)
        for i, e in enumerate(valid):
            self.check_typed(e, i if len(valid) > 1 else None)
        p.bus.publish([e.to_json() for e in valid])
        return [e.id for e in valid]

    def check_typed(self, event: Event, index: int | None) -> None:
        """Validate ``event.data`` against every ``data=`` model declared for its name.

        Raises:
            InvalidEventError: It does not match one (see :func:`check_typed`).
        """
        check_typed(self.ports.app, event, index)

    def route_event(self, event: dict[str, Any], *, start_runs: bool = True) -> None:
        """Handle one published event: start triggered runs, hand matched waiters their work.

        Safe to repeat until it returns: the event is remembered (and later copies ignored)
        only after everything else is done, and everything before is idempotent (one run id
        per function and event id; one MATCH message id per event and waiter).

        Args:
            event: A validated event.
            start_runs: False where the platform delivers triggers itself (EventBridge rules).
        """
        p = self.ports
        now = p.clock.now()
        if p.store.event_seen(event["id"], now=now, ttl=EVENT_DEDUP_SECONDS,
                              name=event["name"]):
            p.log.info("duplicate event %s ignored", event["id"])
            return
        # Logged before the waiters are read: a wait committed after that read finds the
        # event in the timeline (its lookback), one committed before is found by the read.
        # Only names a wait or cancel_on may look for are kept (timeline.keeps).
        if keeps(p.app, event["name"]):
            p.store.log_event(event, now=now, ttl=LOOKBACK_SECONDS)
        if start_runs:
            p.queue.send([start_message(fn, event) for fn in self.triggered(event)])
        p.queue.send(self.match_messages(event))
        p.store.remember_event(event, now=now, ttl=EVENT_DEDUP_SECONDS)

    def match_messages(self, event: dict[str, Any]) -> list[Message]:
        """One MATCH (wait) or CANCEL (cancel_on) message per live waiter ``event`` matches."""
        return match_messages(self.ports, event)

    def triggered(self, event: dict[str, Any]) -> list[FunctionDef]:
        """Functions that ``event`` starts."""
        return [fn for fn in self.ports.app if starts(fn, event)]
