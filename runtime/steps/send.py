"""``step.send_event``: publish events once, even when replayed; return their ids.

Plan: the memoized ids, else a :class:`SendOp` (ids derived from the run and step, so a
re-sent step's events are duplicates dropped downstream; validated, within one send's size).
Decide: :class:`SendEvents`. Commit: the step Completed with the ids, the events in the
outbox before the run's next CONTINUE. Never pending, so nothing resolves it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from runtime.engine.decisions import Decision, StepRef
from runtime.engine.template import Performing, StepTemplate
from runtime.errors import InvalidEventError, NonRetriableError
from runtime.events import MAX_EVENT_BYTES, Event, validate_events
from runtime.records import Commit, EventOut, Outgoing, StepKind, StepStatus
from runtime.steps.base import CommitContext, StepKindSpec

_EVENT_IDS = uuid.UUID("8b1c3f5e-2d4a-4c6b-9e7f-0a1b2c3d4e5f")


@dataclass(frozen=True)
class SendEvents:
    """Publish events (ids already assigned, deterministically) and record their ids."""

    step: StepRef
    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class SendOp:
    """Events to send, validated, with their ids."""

    events: tuple[dict[str, Any], ...]

    def decide(self, ref: StepRef, env: Performing) -> Decision:
        """Send them."""
        return SendEvents(ref, self.events)


class SendSteps(StepTemplate):
    """``ctx.step.send_event``."""

    def send_event(
        self, step_id: str, events: Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]]
    ) -> list[str]:
        """Send one or more events; return their ids. Sent once, even when replayed."""
        ref, rec = self._lookup(step_id, StepKind.SEND)
        if self._memo(rec):
            assert rec is not None
            return list(rec.output)
        items = [events] if isinstance(events, Event | Mapping) else list(events)
        prepared: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            raw = item.to_json() if isinstance(item, Event) else dict(item)
            if not raw.get("id"):
                # Deterministic ids make a re-sent step's events duplicates, dropped downstream.
                raw["id"] = uuid.uuid5(_EVENT_IDS, f"{self._s.run.run_id}/{ref.key}/{i}").hex
            prepared.append(raw)
        try:
            valid = validate_events(prepared, now_ms=int(self._s.now * 1000))
        except InvalidEventError as exc:
            raise InvalidEventError(f"step.send_event '{step_id}': {exc}") from None
        total = sum(len(json.dumps(e.to_json(), separators=(",", ":")).encode()) for e in valid)
        if total > MAX_EVENT_BYTES:
            raise NonRetriableError(
                f"step.send_event '{step_id}': {len(valid)} events total {total} bytes, over the "
                f"{MAX_EVENT_BYTES}-byte limit of one send; split them over several steps"
            )
        raise self._suspend(ref, rec, SendOp(tuple(e.to_json() for e in valid)))


def commit(d: SendEvents, cx: CommitContext) -> Commit:
    """The step Completed with the event ids; the events, then the run's next CONTINUE."""
    w = cx.write(d.step, status=StepStatus.COMPLETED, output=[e["id"] for e in d.events],
                 ended_at=cx.now)
    sends: tuple[Outgoing, ...] = tuple(EventOut(e) for e in d.events)
    return replace(cx.base, steps=(w,), outbox=(*sends, cx.next))


SPEC = StepKindSpec(StepKind.SEND, commits={SendEvents: commit})
