"""Cron triggers: a 5-field cron in a time zone, its fire times, and its AWS form.

A spec is ``"M H DOM MON DOW"`` (croniter syntax: lists, ranges, steps, ``JAN``-``DEC``,
``SUN``-``SAT``, ``L`` in day-of-month, ``L5``/``1#2`` in day-of-week), or one of
``@yearly @annually @monthly @weekly @daily @midnight @hourly``, optionally prefixed
``TZ=Area/City `` or ``CRON_TZ=Area/City ``. Without a prefix the zone is UTC. Rejected:
6/7-field forms (seconds, years), ``@reboot``, and the non-deterministic or unportable
``H`` (hashed), ``R`` (random) and ``W`` (nearest weekday). When both day-of-month and
day-of-week are restricted, either may match (Unix cron's OR).

Time zones and daylight saving time. The fields describe wall-clock times in the zone:

* A wall-clock time that happens twice (fall back) fires once, at its first occurrence,
  whatever the schedule: ``30 1 * * *`` in America/New_York fires at 05:30 UTC on
  2026-11-01, not again at 06:30 UTC; ``0 * * * *`` has one firing for the repeated hour.
* A wall-clock time that does not exist (spring forward) fires once, at the instant the
  gap ends: ``30 2 * * *`` in America/New_York fires at 03:00 EDT (07:00 UTC) on
  2026-03-08; all skipped times of one gap collapse into that one firing.
  Note: EventBridge Scheduler skips such times instead, so a deployed schedule omits
  that one firing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from runtime.checks import parser_checks

__all__ = ["CronError", "CronSchedule"]

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_PREFIX = re.compile(r"^(?:CRON_)?TZ=(\S*)(?:\s+(.*))?$", re.DOTALL | re.IGNORECASE)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# H/R alone (not inside a name like THU, MAR) and W after a day number (not WED).
_UNSUPPORTED = re.compile(r"(?<![A-Z])[HR](?![A-Z])|W(?![A-Z])")


class CronError(ValueError):
    """A cron spec that cannot be parsed, or has no EventBridge Scheduler equivalent."""


def _check_fields(spec: str, expression: str) -> None:
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"cron {spec!r} has {len(fields)} fields; expected 5: {' '.join(_FIELDS)}")
    if _UNSUPPORTED.search(expression.upper()):
        raise CronError(
            f"cron {spec!r}: H (hashed), R (random) and W (nearest weekday) are not supported"
        )
    if not parser_checks():  # a Lambda's app, checked by `cdk synth` (runtime.checks)
        return
    from croniter import CroniterBadDateError, croniter  # only where a cron is evaluated

    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise CronError(f"cron {spec!r} never fires (no date matches)") from None
    except ValueError as exc:  # every CroniterError is one
        for i, name in enumerate(_FIELDS):  # name the first field croniter rejects alone
            probe = ["*"] * 5
            probe[i] = fields[i]
            if not croniter.is_valid(" ".join(probe)):
                raise CronError(f"cron {spec!r}: bad {name} field {fields[i]!r}") from None
        raise CronError(f"cron {spec!r}: {exc}") from None


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """Return the first instant the naive wall-clock time ``wall`` shows in ``zone``.

    A time inside a gap (spring forward) maps to the instant the gap ends.
    """
    utc = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc
    # In a gap, fold=0 applies the offset from before the transition (landing after it)
    # and fold=1 the offset from after it (landing before it): bisect in between.
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(utc.timestamp())
    offset_after = utc.astimezone(zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _render(values: list[Any], high: int, *, steps: bool = True) -> str:
    """Write expanded field values in AWS syntax: ``*``, ``a/step``, ``a-b`` and lists."""
    if values == ["*"]:
        return "*"
    nums = sorted(set(cast(list[int], values)))
    gaps = {b - a for a, b in itertools.pairwise(nums)}
    # AWS's a/step runs to the end of the field, so only such progressions qualify.
    step = gaps.pop() if len(gaps) == 1 else 0
    if steps and len(nums) >= 3 and step > 1 and nums[-1] + step > high:
        return f"{nums[0]}/{step}"
    parts: list[str] = []
    start = prev = nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        run = range(start, prev + 1)
        parts.append(f"{start}-{prev}" if len(run) >= 3 else ",".join(map(str, run)))
        if n is not None:
            start = prev = n
    return ",".join(parts)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron trigger. Build it with :meth:`parse`.

    Attributes:
        spec: The text as given, e.g. ``"TZ=Europe/Paris 0 9 * * 1-5"``.
        expression: The 5 cron fields, macros expanded, e.g. ``"0 9 * * 1-5"``.
        tz: The IANA time zone the fields are read in, e.g. ``"Europe/Paris"``.

    """

    spec: str
    expression: str
    tz: str = "UTC"

    @classmethod
    def parse(cls, spec: str) -> CronSchedule:
        """Parse and validate a cron spec.

        Args:
            spec: E.g. ``"0 9 * * *"``, ``"TZ=Europe/Paris 0 9 * * MON-FRI"``, ``"@daily"``.

        Returns:
            The schedule.

        Raises:
            CronError: Naming the spec and the problem: an unknown time zone, a field count
                other than 5, an unsupported macro or feature, a bad field, or no date ever
                matching.

        """
        if not isinstance(spec, str):
            raise CronError(f"cron spec must be a string, got {type(spec).__name__}")
        text, tz = spec.strip(), "UTC"
        if prefix := _PREFIX.match(text):
            tz, text = prefix[1], (prefix[2] or "").strip()
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise CronError(f"unknown time zone {tz!r} in cron {spec!r}") from None
        expression = " ".join(text.split())
        if expression.startswith("@"):
            if expression.lower() not in _MACROS:
                raise CronError(
                    f"cron {spec!r}: {expression!r} is not supported; use 5 fields or one of "
                    + ", ".join(_MACROS)
                )
            expression = _MACROS[expression.lower()]
        _check_fields(spec, expression)
        return cls(spec=spec, expression=expression, tz=tz)

    def _fires(self, after: datetime) -> Iterator[datetime]:
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"cron {self.spec!r}: {after!r} must be timezone-aware")
        zone = ZoneInfo(self.tz)
        last = after.astimezone(UTC)
        # croniter walks naive wall-clock times; _instant maps each one to UTC. (Given aware
        # times, croniter fires fall-back times twice and misses 30-minute DST shifts.) The
        # map is monotonic, so skipping instants not after the last one drops repeats (fall
        # back, collapsed gaps) and times already passed when ``after`` is in a fold.
        from croniter import croniter

        walls = croniter(self.expression, last.astimezone(zone).replace(tzinfo=None))
        while True:
            instant = _instant(walls.get_next(datetime), zone)
            if instant > last:
                last = instant
                yield instant

    def next_after(self, after: datetime) -> datetime:
        """Return the next fire time strictly after ``after``.

        Args:
            after: A timezone-aware datetime.

        Returns:
            An aware datetime in UTC. DST handling is described in the module docstring.

        Raises:
            ValueError: If ``after`` is naive.

        """
        return next(self._fires(after))

    def fire_times(self, start: datetime, end: datetime) -> list[datetime]:
        """Return every fire time in ``(start, end]``, in order, as aware UTC datetimes.

        Raises:
            ValueError: If ``start`` or ``end`` is naive.

        """
        if end.tzinfo is None or end.utcoffset() is None:
            raise ValueError(f"cron {self.spec!r}: {end!r} must be timezone-aware")
        times: list[datetime] = []
        for fire in self._fires(start):
            if fire > end:
                break
            times.append(fire)
        return times

    def to_aws_scheduler(self) -> tuple[str, str]:
        """Translate to an EventBridge Scheduler schedule expression and time zone.

        Day-of-week numbers move from 0-6 (Sunday 0 or 7) to AWS's 1-7 (Sunday 1), and
        whichever of day-of-month/day-of-week is unrestricted becomes ``?``. Values are
        written from croniter's expansion, so names, steps and ranges all translate;
        steps in day-of-week become lists, since AWS has no steps there.

        Returns:
            E.g. ``("cron(0 9 ? * 2-6 *)", "Europe/Paris")`` for
            ``"TZ=Europe/Paris 0 9 * * 1-5"``.

        Raises:
            CronError: If both day-of-month and day-of-week are restricted (Unix cron fires
                when either matches; AWS cannot express that), or the spec uses ``L`` or
                ``#`` in a way AWS does not accept.

        """
        from croniter import croniter

        expanded, nth_raw = croniter.expand(self.expression)
        minute, hour, dom, month, dow = (list(field) for field in expanded)
        nth = cast(Mapping[int, set[Any]], nth_raw)
        dom_any, dow_any = dom == ["*"], dow == ["*"] and not nth
        fields = self.expression.split()
        if not dom_any and not dow_any:
            raise CronError(
                f"cron {self.spec!r}: day-of-month {fields[2]!r} and day-of-week {fields[4]!r} "
                "are both restricted; cron fires when either matches, which EventBridge "
                "Scheduler cannot express (it needs '?' in one of them)"
            )
        if "l" in dom:
            if dom != ["l"]:
                raise CronError(f"cron {self.spec!r}: AWS accepts 'L' in day-of-month only alone")
            aws_dom = "L"
        else:
            aws_dom = "?" if dom_any and not dow_any else _render(dom, 31)
        if dow_any:
            aws_dow = "?"
        elif nth:
            (day, which), *others = nth.items()
            if others or len(which) != 1 or dow != [day]:
                raise CronError(f"cron {self.spec!r}: AWS accepts one 'L' or '#' weekday only")
            (n,) = which
            aws_dow = f"{day + 1}L" if n == "l" else f"{day + 1}#{n}"
        else:
            aws_dow = _render([cast(int, d) + 1 for d in dow], 7, steps=False)
        expression = f"{_render(minute, 59)} {_render(hour, 23)} {aws_dom} {_render(month, 12)}"
        return f"cron({expression} {aws_dow} *)", self.tz
