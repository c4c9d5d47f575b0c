"""Alarms, the topic they notify, and a dashboard for the app.

A message in a dead-letter queue is a run that stopped making progress (its message failed
``MAX_RECEIVES`` deliveries, or EventBridge or Scheduler could not deliver it), and a failed
rule or schedule delivery is an event or cron fire that may never reach its queue: all alarm
at the first occurrence; a queue's oldest message over a day old is a backlog. Failed runs
and sustained pushback alarm once per app (:mod:`infra.constructs.run_alarms`). Lambda
``Errors`` do not page: a batch reports its failed records instead of failing, so an error
is a crash or a timeout, and what it leaves undone shows as a failed run or a dead letter.
Every alarm of the stack (whoever adds it) notifies the app's alarm topic. The dashboard adds
what explains them: queue depth and the age of the oldest message (a backlog), invocations,
errors and throttles, runs and pushback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
import jsii
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra.constructs.function_runtime import QueueWorker
from runtime.orchestration.metrics import (
    NAMESPACE,
    PUSHBACK,
    RUNS_BLOCKED,
    RUNS_FINISHED,
    RUNS_STARTED,
)

PERIOD = cdk.Duration.minutes(5)
#: EventBridge Scheduler's failure metrics (namespace ``AWS/Scheduler``, per schedule group):
#: attempts the target refused, fires dropped after the retry policy, and fires that could
#: not even be put in the DLQ.
SCHEDULER_FAILURES = (
    "TargetErrorCount",
    "InvocationDroppedCount",
    "InvocationsFailedToBeSentToDeadLetterCount",
)

#: A queue's oldest message this old (s) is a backlog worth a page: a day, of 14 kept.
BACKLOG_AGE_S = 86_400
QUEUE_RETENTION_DAYS = 14

@jsii.implements(cdk.IAspect)
class NotifyTopic:
    """Adds the topic as an action of every CloudWatch alarm in the scope it is applied to."""

    def __init__(self, topic: sns.ITopic) -> None:
        self.action = actions.SnsAction(topic)

    def visit(self, node: IConstruct) -> None:
        """Add the action to an alarm."""
        if isinstance(node, cloudwatch.Alarm):
            node.add_alarm_action(self.action)


def _alarm_at_first(metric: cloudwatch.IMetric, scope: Construct, construct_id: str,
                    description: str) -> cloudwatch.Alarm:
    return metric.create_alarm(
        scope,
        construct_id,
        alarm_description=description,
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


class Monitoring(Construct):
    """Alarms and a dashboard of some of the app: the root stack's, or a group of functions'.

    Each function group (a nested stack) has its own, so neither the alarms nor the widgets
    of one template grow with the whole app; :class:`NotifyTopic`, applied once by the stack,
    makes every alarm notify the app's topic.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        dashboard_name: The dashboard's name.
        workers: The queue-fed Lambdas by label (function id, or ``router``).
        service: The app id (the run metrics' ``service`` dimension).
        function_ids: The functions, for their run widgets.
        delivery_dlq: The delivery DLQ of rules and schedules (root stack only).
        bus_name: The app's bus (the rule metrics' ``EventBusName``).
        rules: The app's rules.
        schedule_group: The app's schedule group (root stack only).
        app_alarms: Alarms made elsewhere to show on this dashboard (the app's run alarms).

    Attributes:
        dlq_alarms: By label (``delivery`` for the delivery DLQ): DLQ depth > 0.
        age_alarms: By label: the queue's oldest message older than a day (its backlog).
        rule_alarms: By rule name: failed invocations > 0.
        schedule_alarms: By Scheduler metric: > 0 in the app's schedule group.
        dashboard: The dashboard.
    """

    def __init__(self, scope: Construct, construct_id: str, *, dashboard_name: str,
                 workers: Mapping[str, QueueWorker], service: str,
                 function_ids: Sequence[str], delivery_dlq: sqs.IQueue | None, bus_name: str,
                 rules: Sequence[events.CfnRule], schedule_group: str | None,
                 app_alarms: Sequence[cloudwatch.Alarm] = ()) -> None:
        super().__init__(scope, construct_id)
        self.dlq_alarms: dict[str, cloudwatch.Alarm] = {}
        self.age_alarms: dict[str, cloudwatch.Alarm] = {}
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
            # A backlog older than a day: messages wait (max_concurrency, an outage, a stuck
            # consumer) and would be deleted unprocessed at the queue's 14-day retention.
            self.age_alarms[label] = worker.queue.metric_approximate_age_of_oldest_message(
                period=PERIOD, statistic="Maximum").create_alarm(
                self,
                f"AgeAlarm{i}",
                alarm_description=f"{label}: the oldest message of {worker.queue.queue_name} "
                f"waited over a day; past {QUEUE_RETENTION_DAYS} days SQS deletes it "
                "unprocessed: raise max_concurrency or find what holds the queue",
                threshold=BACKLOG_AGE_S,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                evaluation_periods=3,
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
        if delivery_dlq is not None:
            self.dlq_alarms["delivery"] = _alarm_at_first(
                delivery_dlq.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"),
                self, "DeliveryDlqAlarm",
                f"EventBridge or Scheduler could not deliver events or cron fires to a queue; "
                f"they are in {delivery_dlq.queue_name}, naming their target: inspect, fix, "
                "then redrive",
            )
        self.rule_alarms: dict[str, cloudwatch.Alarm] = {}
        for i, rule in enumerate(rules):
            name = str(rule.name)
            failed = cloudwatch.Metric(
                namespace="AWS/Events", metric_name="FailedInvocations",
                dimensions_map={"EventBusName": bus_name, "RuleName": name},
                period=PERIOD, statistic="Sum",
            )
            self.rule_alarms[name] = _alarm_at_first(
                failed, self, f"RuleAlarm{i}",
                f"rule {name}: EventBridge failed to deliver events to its queue after its "
                "retries; they are in the delivery DLQ",
            )
        self.schedule_alarms: dict[str, cloudwatch.Alarm] = {}
        if schedule_group is not None:
            for metric_name in SCHEDULER_FAILURES:
                metric = cloudwatch.Metric(
                    namespace="AWS/Scheduler", metric_name=metric_name,
                    dimensions_map={"ScheduleGroup": schedule_group},
                    period=PERIOD, statistic="Sum",
                )
                self.schedule_alarms[metric_name] = _alarm_at_first(
                    metric, self, f"Schedule{metric_name}",
                    f"schedule group {schedule_group}: {metric_name} (cron fires or long "
                    "timers not put on their queue; retried ones land in the delivery DLQ)",
                )
        run_widgets: list[cloudwatch.IWidget] = []
        for function_id in function_ids:
            def runs(name: str, fid: str = function_id) -> cloudwatch.Metric:
                return cloudwatch.Metric(
                    namespace=NAMESPACE, metric_name=name,
                    dimensions_map={"function_id": fid, "service": service},
                    period=PERIOD, statistic="Sum", label=name,
                )
            run_widgets.append(cloudwatch.GraphWidget(
                title=f"{function_id}: runs and pushback",
                left=[runs(n) for n in (RUNS_STARTED, *RUNS_FINISHED.values(), RUNS_BLOCKED)],
                right=[runs(PUSHBACK)],
                width=8,
            ))
        alarms = [*self.dlq_alarms.values(), *self.age_alarms.values(),
                  *self.rule_alarms.values(), *self.schedule_alarms.values(), *app_alarms]
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name,
            widgets=[
                [cloudwatch.AlarmStatusWidget(title="alarms", alarms=alarms, width=24)],
                # The app's alarms by function (their queries' series), where there are any.
                *([[cloudwatch.AlarmWidget(alarm=a, title=a.node.id, width=24 // len(app_alarms))
                    for a in app_alarms]] if app_alarms else []),
                *rows,
                *(run_widgets[i:i + 3] for i in range(0, len(run_widgets), 3)),
            ],
        )
