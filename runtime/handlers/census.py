"""Lambda entry for the schedule census: count the app's schedules and publish the count.

Run hourly by a Scheduler schedule (``infra/constructs/schedule_census.py``). The count is
one EMF line (``stepkit`` / ``Schedules``, dimension ``service``), so publishing costs no API
call. A census that cannot finish publishes nothing and logs why: a throttled or partial
count published as a number would read as "few schedules", while no data point leaves the
alarm's missing-data treatment to say that the census is blind.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from runtime.backends.aws.census import (
    ENV_SCHEDULE_GROUP,
    SCHEDULES,
    Census,
    CensusError,
    count_schedules,
)
from runtime.backends.aws.resources import ENV_APP
from runtime.orchestration.metrics import NAMESPACE

_log = logging.getLogger("stepkit.census")
#: Throttling is retried inside the client (standard mode, with backoff) before a page fails.
_MAX_ATTEMPTS = 10
_client: Any = None


def _scheduler() -> Any:
    global _client
    if _client is None:
        import boto3
        from botocore.config import Config

        _client = boto3.client("scheduler", config=Config(
            retries={"mode": "standard", "max_attempts": _MAX_ATTEMPTS}))
    return _client


def publish(census: Census, *, service: str, namespace: str = NAMESPACE) -> None:
    """Print the count as one EMF document (stdout, which Lambda sends to its logs).

    ``capped`` is a property of the document, not a dimension: the alarm reads one series.
    """
    metrics = EphemeralMetrics(namespace=namespace, service=service)
    metrics.add_metric(name=SCHEDULES, unit=MetricUnit.Count, value=census.count)
    if census.capped:
        metrics.add_metadata(key="capped", value=True)
    metrics.flush_metrics()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduler entry: count the group's schedules up to the cap and publish the count.

    Never raises for a failed count (Lambda would retry it, at the same cost, for nothing
    the next hour's run does not do): it logs the failure and publishes nothing.
    """
    group, service = os.environ[ENV_SCHEDULE_GROUP], os.environ[ENV_APP]

    def time_left() -> float:
        return float(context.get_remaining_time_in_millis()) / 1000

    try:
        census = count_schedules(_scheduler(), group,
                                 time_left=time_left if context is not None else None)
    except CensusError as exc:
        _log.error("schedule census of %s failed, nothing published: %s", group, exc)
        return {"published": False}
    publish(census, service=service)
    _log.info("schedule census of %s: %d schedule(s)%s in %d page(s)", group, census.count,
              " (capped)" if census.capped else "", census.pages)
    return {"published": True, "schedules": census.count, "capped": census.capped,
            "pages": census.pages}
