"""Run metrics as CloudWatch embedded metric format (EMF), through Powertools Metrics.

Lambda's log agent turns the EMF lines into metrics, so publishing costs no API call and no
latency. One EMF document per function id and invocation, each with the dimensions
``service`` (the app id) and ``function_id``, which the CDK app's alarms use.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from runtime.orchestration.metrics import (
    NAMESPACE,
    PUSHBACK,
    RUNS_BLOCKED,
    RUNS_FINISHED,
    RUNS_STARTED,
    STEP_DURATION,
    STEP_RETRIES,
)
from runtime.records import RunStatus


class CloudWatchMetrics:
    """The Lambda handlers' run :class:`~runtime.orchestration.protocols.Metrics`, per invocation.

    ``EphemeralMetrics``, not ``Metrics``: Powertools' ``Metrics`` shares one buffer (and one
    dimension set) across instances, and an invocation may touch several functions' runs.

    Args:
        service: The app id (the ``service`` dimension).
        namespace: The CloudWatch namespace.
    """

    def __init__(self, service: str, namespace: str = NAMESPACE) -> None:
        self.service = service
        self.namespace = namespace
        self._by_function: dict[str, EphemeralMetrics] = {}

    def _of(self, function_id: str) -> EphemeralMetrics:
        found = self._by_function.get(function_id)
        if found is None:
            found = EphemeralMetrics(namespace=self.namespace, service=self.service)
            found.add_dimension(name="function_id", value=function_id)
            self._by_function[function_id] = found
        return found

    def run_started(self, function_id: str) -> None:
        """Count a run started."""
        self._of(function_id).add_metric(name=RUNS_STARTED, unit=MetricUnit.Count, value=1)

    def run_finished(self, function_id: str, status: RunStatus) -> None:
        """Count a run completed, failed or cancelled."""
        name = RUNS_FINISHED[status]
        self._of(function_id).add_metric(name=name, unit=MetricUnit.Count, value=1)

    def step_ended(self, function_id: str, duration_s: float, *, failed: bool) -> None:
        """Record how long a step took from its first attempt to its result."""
        self._of(function_id).add_metric(
            name=STEP_DURATION, unit=MetricUnit.Milliseconds, value=round(duration_s * 1000, 3)
        )

    def step_retried(self, function_id: str) -> None:
        """Count a failed step attempt that will be retried."""
        self._of(function_id).add_metric(name=STEP_RETRIES, unit=MetricUnit.Count, value=1)

    def run_blocked(self, function_id: str) -> None:
        """Count a run blocked, or tried again while blocked (the blocked-runs alarm's metric)."""
        self._of(function_id).add_metric(name=RUNS_BLOCKED, unit=MetricUnit.Count, value=1)

    def pushback(self, function_id: str) -> None:
        """Count a delivery pushed back by AWS (the sustained-pushback alarm's metric)."""
        self._of(function_id).add_metric(name=PUSHBACK, unit=MetricUnit.Count, value=1)

    def flush(self) -> None:
        """Print the buffered metrics as EMF lines (stdout, which Lambda sends to its logs)."""
        buffered, self._by_function = self._by_function, {}
        for metrics in buffered.values():
            metrics.flush_metrics(raise_on_empty_metrics=False)
