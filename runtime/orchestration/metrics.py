"""What a landed commit tells the run metrics, and the metrics' names.

One rule, used after every commit and run creation of the orchestrator, so a new commit path
cannot forget to report. The names are shared with the CDK app, which alarms on them.
"""

from __future__ import annotations

from runtime.orchestration.protocols import Metrics
from runtime.records import Commit, RunRecord, RunStatus, StepKind, StepStatus

#: The CloudWatch namespace of run metrics; each carries ``service`` (the app id) and
#: ``function_id`` dimensions.
NAMESPACE = "stepkit"
RUNS_STARTED = "RunsStarted"
RUNS_FINISHED = {
    RunStatus.COMPLETED: "RunsCompleted",
    RunStatus.FAILED: "RunsFailed",
    RunStatus.CANCELLED: "RunsCancelled",
    RunStatus.SKIPPED: "RunsSkipped",
}
#: A run blocked: its code cannot go on with it (nondeterminism, a removed function). Each
#: try again while blocked counts too, so the CDK app's alarm stays raised until none is.
RUNS_BLOCKED = "RunsBlocked"
STEP_DURATION = "StepDuration"  # milliseconds, from a step's first attempt to its result
STEP_RETRIES = "StepRetries"
#: Deliveries pushed back: AWS said "slow down" or "conflict", and the message waits to be
#: tried again (counted per delivery, not per run: the CDK app alarms when it never stops).
PUSHBACK = "Pushback"


def observe_created(metrics: Metrics, run: RunRecord) -> None:
    """Report a run just created (one created already finished also reports its end).

    A run flow control skipped never started: it reports only ``RunsSkipped``.
    """
    if run.status is not RunStatus.SKIPPED:
        metrics.run_started(run.function_id)
    if run.status.finished:
        metrics.run_finished(run.function_id, run.status)


def observe_commit(metrics: Metrics, function_id: str, commit: Commit) -> None:
    """Report what a commit that just landed did to ``step.run`` steps and to its run."""
    for write in commit.steps:
        rec = write.record
        if rec.kind is not StepKind.RUN:
            continue
        if rec.status is StepStatus.RETRYING:
            metrics.step_retried(function_id)
        elif rec.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            began = rec.started_at if rec.started_at is not None else rec.ended_at
            duration = (rec.ended_at or 0.0) - (began or 0.0)
            metrics.step_ended(function_id, max(duration, 0.0),
                               failed=rec.status is StepStatus.FAILED)
    status = commit.run.status if commit.run is not None else None
    if status is RunStatus.BLOCKED:
        metrics.run_blocked(function_id)
    elif status is not None and status.finished:
        metrics.run_finished(function_id, status)
