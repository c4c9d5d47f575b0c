"""The app's alarms on stepkit's own run metrics: runs failed or blocked, and lasting pushback.

One alarm per app for each, not one per function: each is a CloudWatch Metrics Insights
query grouped by ``function_id``, so every function is its own contributor (the alarm says
which one; ``DescribeAlarmContributors`` lists them) while a function costs no resource in
its group's template, and a function added later is watched from its first data point.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from runtime.orchestration.blocking import BLOCKED_RETRY
from runtime.orchestration.metrics import NAMESPACE, PUSHBACK, RUNS_BLOCKED, RUNS_FINISHED
from runtime.records import RunStatus

PERIOD = cdk.Duration.minutes(5)
#: Pushback pages once every period of this many in a row saw some: 15 minutes. A few
#: minutes of throttling (a hot key, a burst) is what the backoff absorbs; pushback that
#: lasts is a quota too low or a hot spot by design. Five-minute periods, not one-minute
#: ones: a pushed-back delivery comes back after a growing, jittered delay, so a function
#: under steady pushback can have a quiet minute, rarely a quiet five.
PUSHBACK_PERIODS = 3
#: The blocked-runs alarm's period: longer than a blocked run's retry (which reports it
#: again), so every period has a data point while any run is blocked and the alarm stays
#: raised until none is (a 5-minute period would flap between them).
BLOCKED_PERIOD = cdk.Duration.minutes(15)
assert BLOCKED_PERIOD.to_seconds() > BLOCKED_RETRY


def by_function(metric_name: str, service: str) -> str:
    """A Metrics Insights query: the metric's sum per function of the app (``service``).

    Every name double-quoted (a reserved word must be, any may be). Ordered by the sum, so
    that past the 500 series a query returns, the ones kept are the ones that alarm.
    """
    return (f'SELECT SUM("{metric_name}") FROM SCHEMA("{NAMESPACE}", "function_id", "service") '
            f"WHERE \"service\" = '{service}' GROUP BY \"function_id\" ORDER BY SUM() DESC")


class RunAlarms(Construct):
    """The app's failed-run and sustained-pushback alarms (root stack).

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        service: The app id (the run metrics' ``service`` dimension).

    Attributes:
        runs_failed: Any function's failed runs > 0 in a 5-minute period.
        runs_blocked: Any function's blocked runs > 0 in a 15-minute period.
        pushback: Any function's pushback > 0 in each of 3 consecutive 5-minute periods.
    """

    def __init__(self, scope: Construct, construct_id: str, *, service: str) -> None:
        super().__init__(scope, construct_id)
        failed = RUNS_FINISHED[RunStatus.FAILED]
        self.runs_failed = self._alarm(
            "RunsFailed", by_function(failed, service), periods=1,
            description=f"{service}: runs failed for good (on_failure ran); the alarm's "
            "contributors name the functions; see the runs in `stepkit runs` or the state "
            "table",
        )
        self.runs_blocked = self._alarm(
            "RunsBlocked", by_function(RUNS_BLOCKED, service), periods=1,
            period=BLOCKED_PERIOD,
            description=f"{service}: runs are blocked: the deployed code cannot go on with "
            "them (it no longer replays their history, or their function was removed). They "
            "are held, not failed: deploy code that replays them (they go on within 10 "
            "minutes), or cancel or rerun them; `stepkit runs --status Blocked` lists them "
            "with the step and the cause",
        )
        self.pushback = self._alarm(
            "Pushback", by_function(PUSHBACK, service), periods=PUSHBACK_PERIODS,
            description=f"{service}: AWS has pushed back a function's deliveries (throttled, "
            f"conflicted) for {PUSHBACK_PERIODS * 5} minutes running; runs are delayed, not "
            "failed: raise the throttled quota (Lambda concurrency, DynamoDB, EventBridge, "
            "Scheduler) or spread the hot key",
        )

    def _alarm(self, construct_id: str, query: str, *, periods: int, description: str,
               period: cdk.Duration = PERIOD) -> cloudwatch.Alarm:
        return cloudwatch.MathExpression(expression=query, period=period).create_alarm(
            self,
            construct_id,
            alarm_description=description,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
