"""The event shape ``{id, name, data, user, ts}`` and its validation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ulid import ULID

from runtime.errors import InvalidEventError
from runtime.values import problem

#: One event, as JSON (as Inngest allows). EventBridge takes 256 KB per entry, so on AWS a
#: larger event travels through the payload bucket (``runtime.backends.aws.bus``).
MAX_EVENT_BYTES = 4 * 1024 * 1024
#: ``step.invoke`` data: it becomes the child's triggering event.
MAX_INVOKE_BYTES = MAX_EVENT_BYTES
SYSTEM_PREFIX = "stepkit/"
FUNCTION_FAILED = "stepkit/function.failed"
FUNCTION_FINISHED = "stepkit/function.finished"
FUNCTION_CANCELLED = "stepkit/function.cancelled"
FUNCTION_INVOKED = "stepkit/function.invoked"
SCHEDULED_TIMER = "stepkit/scheduled.timer"
#: The longest event name: EventBridge's ``DetailType``, which carries the name, takes 128
#: characters (PutEvents refuses a longer one, so an event named so could never be sent).
MAX_NAME_CHARS = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$")  # and at most MAX_NAME_CHARS


def shown_name(name: object) -> str:
    """``name`` as an error message shows it: its repr, cut after 140 characters."""
    if isinstance(name, str) and len(name) > 140:
        return repr(name[:140] + "...")
    return repr(name)


def name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as an event name, or ``None`` when it is a valid one."""
    if not isinstance(name, str):
        return f"event name must be a string, got {type(name).__name__}"
    if len(name) > MAX_NAME_CHARS:
        return (f"event name is {len(name)} characters, over the {MAX_NAME_CHARS} that "
                "EventBridge takes as an event's DetailType")
    if not _NAME.match(name):
        return ("event name must start with a letter or digit and contain only letters, "
                f"digits and _ . : / - (max {MAX_NAME_CHARS} characters), e.g. 'user/signup'")
    return None


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
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return self.model_dump(mode="json")


MAX_TS_MS = 32_503_680_000_000  # year 3000
#: How far an event's ``ts`` may be ahead of the receiver's clock (clients' clock skew).
#: A later ``ts`` is refused: a wait matches events sent since it began, so an event
#: stamped in the future could answer a wait that started after it was really sent.
MAX_TS_SKEW_MS = 5 * 60 * 1000


def _check_fields(event: Mapping[Any, Any], where: str) -> None:
    """Refuse what stepkit cannot carry exactly (:mod:`runtime.values`), naming the path.

    Each field on its own, so ``data`` may nest as deep as a step's output (a step's output
    sent on as an event's data fits).

    Raises:
        InvalidEventError: Naming where, the path and the rule.
    """
    for key, value in event.items():
        if not isinstance(key, str):
            raise InvalidEventError(f"{where}: has the {type(key).__name__} key {key!r}; "
                                    "object keys must be strings")
        found = problem(value, f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]")
        if found is not None:
            raise InvalidEventError(str(found))


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
        _check_fields(raw.model_dump(), where)
    else:
        if not isinstance(raw, Mapping):
            raise InvalidEventError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        _check_fields(raw, where)
        ts = raw.get("ts")
        if ts is not None and (
            isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts <= MAX_TS_MS
        ):
            raise InvalidEventError(
                f"{where}.ts: must be milliseconds since the Unix epoch, between 0 and "
                f"{MAX_TS_MS} (the year 3000), got {ts!r}"
            )
        try:
            event = Event.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "event"
            message = str(first["msg"]).removeprefix("Value error, ")  # pydantic's wording
            raise InvalidEventError(f"{where}.{field}: {message}") from None
    if event.ts > now_ms + MAX_TS_SKEW_MS:
        raise InvalidEventError(
            f"{where}.ts: {event.ts} is {(event.ts - now_ms) / 1000:.0f} s ahead of the "
            f"receiver's clock; at most {MAX_TS_SKEW_MS // 1000} s of clock skew is allowed"
        )
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
