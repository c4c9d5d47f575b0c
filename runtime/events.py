"""The event shape ``{id, name, data, user, ts}`` and its validation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ulid import ULID

from runtime.errors import InvalidEventError

MAX_EVENT_BYTES = 256 * 1024
SYSTEM_PREFIX = "stepkit/"
FUNCTION_FAILED = "stepkit/function.failed"
FUNCTION_FINISHED = "stepkit/function.finished"
FUNCTION_CANCELLED = "stepkit/function.cancelled"
FUNCTION_INVOKED = "stepkit/function.invoked"
SCHEDULED_TIMER = "stepkit/scheduled.timer"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,255}$")


class Event(BaseModel):
    """An event: what happened (``name``), its payload (``data``) and who caused it (``user``).

    Attributes:
        id: Unique id; generated when absent. Sending the same id again within 24 hours
            starts nothing new.
        name: Dotted or slashed name such as ``user/signup``.
        data: JSON object payload.
        user: JSON object describing the actor (optional).
        ts: Milliseconds since the Unix epoch; set on receipt when absent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default="", max_length=128)
    name: str
    data: dict[str, Any] = Field(default_factory=dict)
    user: dict[str, Any] = Field(default_factory=dict)
    ts: int = 0

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "event name must start with a letter or digit and contain only letters, digits "
                "and _ . : / - (max 256 characters), e.g. 'user/signup'"
            )
        return value

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return self.model_dump(mode="json")


def _where(index: int | None) -> str:
    return "event" if index is None else f"event[{index}]"


def validate_event(
    raw: Mapping[str, Any] | Event,
    *,
    now_ms: int,
    index: int | None = None,
    allow_system: bool = False,
) -> Event:
    """Validate one incoming event and fill in ``id`` and ``ts`` when absent.

    Args:
        raw: The event as sent.
        now_ms: The receive time in milliseconds, used when ``ts`` is absent.
        index: Position in a batch, named in errors.
        allow_system: Whether names under the reserved ``stepkit/`` prefix are accepted.

    Raises:
        InvalidEventError: Naming the event's position, the field and the problem.
    """
    where = _where(index)
    if isinstance(raw, Event):
        event = raw
    else:
        if not isinstance(raw, Mapping):
            raise InvalidEventError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        try:
            event = Event.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "event"
            message = str(first["msg"]).removeprefix("Value error, ")  # pydantic's wording
            raise InvalidEventError(f"{where}.{field}: {message}") from None
    if event.name.startswith(SYSTEM_PREFIX) and not allow_system:
        raise InvalidEventError(
            f"{where}.name: '{event.name}' is reserved; names starting with "
            f"'{SYSTEM_PREFIX}' are sent by stepkit itself"
        )
    try:
        size = len(json.dumps(event.to_json(), separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"{where}: payload is not JSON-serialisable: {exc}") from None
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"{where} '{event.name}': {size} bytes is over the {MAX_EVENT_BYTES}-byte event limit"
        )
    updates: dict[str, Any] = {}
    if not event.id:
        updates["id"] = str(ULID())
    if not event.ts:
        updates["ts"] = now_ms
    return event.model_copy(update=updates) if updates else event


def validate_events(
    raw: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event],
    *,
    now_ms: int,
    allow_system: bool = False,
) -> list[Event]:
    """Validate one event or a list of them; every event must be valid or none is accepted."""
    if isinstance(raw, Mapping | Event):
        return [validate_event(raw, now_ms=now_ms, allow_system=allow_system)]
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise InvalidEventError(
            f"events: expected an event object or a list of them, got {type(raw).__name__}"
        )
    if not raw:
        raise InvalidEventError("events: the list is empty")
    items: Sequence[Mapping[str, Any] | Event] = raw
    return [
        validate_event(item, now_ms=now_ms, index=i, allow_system=allow_system)
        for i, item in enumerate(items)
    ]
