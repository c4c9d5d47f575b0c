"""Alarms and a dashboard for every queue-fed Lambda of the app.

A message in a dead-letter queue is a run that stopped making progress (its message failed
``MAX_RECEIVES`` deliveries), and a Lambda error is a batch the handler could not even report
on, so both alarm at the first occurrence. The dashboard adds what explains them: queue depth
and the age of the oldest message (a backlog), invocations and throttles.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.constructs.function_runtime import QueueWorker

PERIOD = cdk.Duration.minutes(5)


class Monitoring(Construct):
    """A DLQ-depth alarm and an Errors alarm per Lambda, and one dashboard with them.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        dashboard_name: The dashboard's name.
        workers: The queue-fed Lambdas by label (function id, or ``router``).

    Attributes:
        dlq_alarms: By label: DLQ depth > 0.
        error_alarms: By label: Lambda errors > 0.
        dashboard: The dashboard.
    """

    def __init__(self, scope: Construct, construct_id: str, *, dashboard_name: str,
                 workers: Mapping[str, QueueWorker]) -> None:
        super().__init__(scope, construct_id)
        self.dlq_alarms: dict[str, cloudwatch.Alarm] = {}
        self.error_alarms: dict[str, cloudwatch.Alarm] = {}
        rows: list[list[cloudwatch.IWidget]] = []
        for i, (label, worker) in enumerate(workers.items()):
            dlq_depth = worker.dlq.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"
            )
            errors = worker.function.metric_errors(period=PERIOD, statistic="Sum")
            self.dlq_alarms[label] = dlq_depth.create_alarm(
                self,
                f"DlqAlarm{i}",
                alarm_description=f"{label}: messages in the dead-letter queue "
                f"({worker.dlq.queue_name}) failed every delivery; inspect, fix, then redrive",
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            self.error_alarms[label] = errors.create_alarm(
                self,
                f"ErrorAlarm{i}",
                alarm_description=f"{label}: the Lambda failed (crash, timeout or bad config); "
                "see its log group",
                threshold=0,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            rows.append([
                cloudwatch.GraphWidget(
                    title=f"{label}: invocations",
                    left=[worker.function.metric_invocations(period=PERIOD), errors,
                          worker.function.metric_throttles(period=PERIOD)],
                    width=8,
                ),
                cloudwatch.GraphWidget(
                    title=f"{label}: queue depth",
                    left=[
                        worker.queue.metric_approximate_number_of_messages_visible(
                            period=PERIOD, statistic="Maximum", label="waiting"),
                        worker.queue.metric_approximate_number_of_messages_not_visible(
                            period=PERIOD, statistic="Maximum", label="in flight"),
                        dlq_depth.with_(label="dead-lettered"),
                    ],
                    width=8,
                ),
                cloudwatch.GraphWidget(
                    title=f"{label}: age of oldest message (s)",
                    left=[worker.queue.metric_approximate_age_of_oldest_message(
                        period=PERIOD, statistic="Maximum")],
                    width=8,
                ),
            ])
        alarms = [*self.dlq_alarms.values(), *self.error_alarms.values()]
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name,
            widgets=[
                [cloudwatch.AlarmStatusWidget(title="alarms", alarms=alarms, width=24)],
                *rows,
            ],
        )
