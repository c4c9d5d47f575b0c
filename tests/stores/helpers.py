"""Records the store tests build: one run, one step, one waiter, at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime

from runtime.records import RunRecord, StepKind, StepRecord, StepStatus, Waiter, WaiterKind

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 08:00 UTC
DAY = 86400.0


def make_run(run_id: str = "r1", function_id: str = "fn", created_at: float = START) -> RunRecord:
    return RunRecord(run_id=run_id, function_id=function_id, events=({"id": "e1", "name": "a"},),
                     created_at=created_at)


def step(key: str, status: StepStatus = StepStatus.COMPLETED, attempt: int = 0,
         output: object = None) -> StepRecord:
    return StepRecord(key=key, id=key, kind=StepKind.RUN, status=status, attempt=attempt,
                      output=output)


def waiter(run_id: str = "r1", key: str = "w", event: str = "order/paid") -> Waiter:
    return Waiter(event, run_id, "fn", key, WaiterKind.STEP, "async.data.x == 1", START + 500)
