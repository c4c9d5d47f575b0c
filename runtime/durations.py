"""Parse the duration and time arguments users pass to steps and options."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
MAX_SLEEP = timedelta(days=366)


def parse_duration(value: str | float | timedelta, *, where: str) -> timedelta:
    """Parse ``"30s"``, ``"15m"``, ``"1h30m"``, ``"3d"``, ``"1w"``, seconds or a ``timedelta``.

    Args:
        value: The duration.
        where: What the duration belongs to, named in the error message.

    Raises:
        ValueError: The value is not a non-negative duration.
    """
    try:
        result = _duration(value, where)
    except OverflowError:
        raise ValueError(f"{where}: duration {value!r} is too large") from None
    if result < timedelta(0):
        raise ValueError(f"{where}: duration must not be negative, got {value!r}")
    return result


def user_duration(value: object, *, where: str) -> timedelta:
    """Parse a duration a user wrote: like :func:`parse_duration`, but no bare number.

    A bare number is a trap: Inngest reads ``5000`` as milliseconds, Python APIs as seconds
    (``sleep("nap", 5000)`` would sleep 1 h 23 min here). The error shows both readings.

    Raises:
        ValueError: The value is a bare number, or not a non-negative duration.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(
            f"{where}: {value!r} is a bare number, which reads as seconds in Python and as "
            f"milliseconds in Inngest; write the unit: '{value}s' ({_spoken(value)}) or "
            f"'{value}ms' ({_spoken(value / 1000)}), or pass a timedelta"
        )
    return parse_duration(value, where=where)  # type: ignore[arg-type]  # it names bad types


def _spoken(seconds: float) -> str:
    """``5000`` -> ``1h23m20s``: a number of seconds the way the parser writes it."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return str(seconds)
    whole, out = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(whole) >= size:
            out.append(f"{whole // size}{unit}")
            whole %= size
    rest = whole + (seconds - int(seconds))
    if rest or not out:
        out.append(f"{rest:g}s")
    return "".join(out)


def _duration(value: str | float | timedelta, where: str) -> timedelta:
    if isinstance(value, float) and value != value:
        raise ValueError(f"{where}: duration must be a number of seconds, got NaN")
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError(f"{where}: duration must be a string like '30s' or a timedelta, got bool")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, total = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(
                f"{where}: invalid duration {value!r}; use a number with a unit "
                "(ms, s, m, h, d, w), e.g. '30s', '15m', '1h30m', '3d'"
            )
        result = timedelta(seconds=total)
    else:
        raise ValueError(
            f"{where}: duration must be a string like '30s' or a timedelta, "
            f"got {type(value).__name__}"
        )
    return result


def format_instant(ts: float, *, timespec: str = "milliseconds") -> str:
    """Epoch seconds as ISO-8601 UTC: ``2026-03-02T08:00:00.000Z``.

    The one form times take in JSON, DynamoDB items and messages; ``timespec`` as in
    :meth:`datetime.isoformat`.
    """
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_instant(value: str | datetime, *, where: str) -> datetime:
    """Parse an aware ``datetime`` or an ISO 8601 string; naive values are taken as UTC.

    Raises:
        ValueError: The value is not a time.
    """
    if isinstance(value, datetime):
        result = value
    elif isinstance(value, str):
        try:
            result = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{where}: invalid time {value!r}; use ISO 8601, e.g. '2026-12-01T09:00:00Z'"
            ) from None
    else:
        raise ValueError(f"{where}: expected a datetime or ISO string, got {type(value).__name__}")
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result
