"""The schedule census: how many schedules the app's group holds, counted up to a cap.

Every timer due beyond SQS's 900 s is a one-time schedule in the app's group
(``runtime.backends.aws.timers``), and the account's schedules are capped (10,000,000 per
Region by default, shared by every app): past the quota every ``CreateSchedule`` fails, so
every new long timer fails. Scheduler publishes no metric of how many schedules exist (its
``AWS/Usage`` metric counts API calls), so a small hourly Lambda pages through
``ListSchedules`` and publishes the count (``runtime.handlers.census``), and an alarm fires at
:data:`CAP`.

The count stops at the cap, so a run costs at most ``CAP / PAGE_SIZE`` calls whatever the
backlog: at the cap the alarm already fires, and counting further would only make the run
slower and more likely to fail. Calls are paced to :data:`CALLS_PER_SECOND`, well under the
account's ``ListSchedules`` rate, which other tools share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runtime.errors import StepkitError

#: The app's schedule group, on the census Lambda.
ENV_SCHEDULE_GROUP = "STEPKIT_SCHEDULE_GROUP"
#: The metric (namespace ``stepkit``, dimension ``service`` = the app id).
SCHEDULES = "Schedules"
#: The alarm's threshold and where the count stops: a tenth of the account's default quota
#: of 10,000,000 schedules, since every app (and anything else) in the Region shares it.
CAP = 1_000_000
#: ``ListSchedules``' largest page (its ``MaxResults``).
PAGE_SIZE = 100
#: The census's own pace: two fifths of ``ListSchedules``' default 50 requests per second,
#: so a census at the cap (10,000 calls, ~500 s) leaves the rest to whoever else lists.
CALLS_PER_SECOND = 20
#: Stop (and publish nothing) when less than this much of the invocation is left.
MARGIN_S = 10.0


class CensusError(StepkitError):
    """The count could not be finished: nothing is published, so the alarm sees no data."""


@dataclass(frozen=True)
class Census:
    """What one census found.

    Attributes:
        count: Schedules counted: all of the group's, or at least :data:`CAP` when ``capped``.
        capped: The count stopped at the cap (the group holds at least that many).
        pages: ``ListSchedules`` calls made.
    """

    count: int
    capped: bool
    pages: int


def count_schedules(client: Any, group: str, *, cap: int = CAP,
                    time_left: Callable[[], float] | None = None,
                    pace_s: float = 1 / CALLS_PER_SECOND) -> Census:
    """Page through the group's schedules, counting, until the last page or the cap.

    Args:
        client: A boto3 ``scheduler`` client.
        group: The app's schedule group.
        cap: Stop once this many are counted.
        time_left: Seconds left in the invocation; the count gives up under
            :data:`MARGIN_S` rather than be killed mid-way.
        pace_s: The least time between the starts of two calls.

    Raises:
        CensusError: A call failed after the client's retries (throttled, denied), or time
            ran out: a partial count is no count.
    """
    count, pages, token = 0, 0, None
    while True:
        if time_left is not None and time_left() < MARGIN_S:
            raise CensusError(f"out of time after {pages} pages ({count} schedules so far)")
        started = time.monotonic()
        page = _page(client, group, token)
        pages += 1
        count += len(page.get("Schedules", []))
        token = page.get("NextToken")
        if count >= cap or not token:
            return Census(count=count, capped=count >= cap, pages=pages)
        time.sleep(max(0.0, pace_s - (time.monotonic() - started)))


def _page(client: Any, group: str, token: str | None) -> dict[str, Any]:
    request: dict[str, Any] = {"GroupName": group, "MaxResults": PAGE_SIZE}
    if token:
        request["NextToken"] = token
    try:
        return dict(client.list_schedules(**request))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise CensusError(f"ListSchedules refused on group {group}: {code}: {exc}") from None
    except BotoCoreError as exc:
        raise CensusError(f"Scheduler unreachable to list group {group}: {exc}") from None
