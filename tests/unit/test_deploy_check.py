"""``stepkit deploy-check``: a deploy that would strand runs in flight is refused (issue 24)."""

from __future__ import annotations

from typing import Any

from runtime.cli.deploys import MAX_LISTED, in_flight, review
from runtime.orchestration.protocols import RunQuery


def _run(run_id: str, fn: str, status: str = "Running",
         blocked: str | None = None) -> dict[str, Any]:
    return {"run_id": run_id, "function_id": fn, "status": status, "blocked": blocked}


class _Plane:
    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        self.queries: list[RunQuery] = []

    def list_runs(self, query: RunQuery) -> list[dict[str, Any]]:
        self.queries.append(query)
        assert query.status is not None
        return [r for r in self.runs if r["status"] == query.status.value][:query.limit]


def test_a_removed_function_with_runs_in_flight_is_an_error_naming_them() -> None:
    plane = _Plane([_run(f"r{i}", "old") for i in range(7)] + [_run("k1", "kept")])
    runs, more = in_flight(plane)  # type: ignore[arg-type]
    errors, notes = review({"kept": False}, runs, more)
    (error,) = errors
    assert "function 'old' has 7 runs in flight (r0, r1, r2, r3, r4 and 2 more)" in error
    assert "retired=True" in error and "stepkit cancel" in error
    assert notes == []
    assert [q.limit for q in plane.queries] == [MAX_LISTED, MAX_LISTED]  # bounded reads


def test_a_retired_function_is_drained_then_may_go() -> None:
    errors, notes = review({"old": True}, {"old": [_run("r1", "old")]}, False)
    assert errors == [] and notes == ["function 'old' is retired: 1 runs still in flight (r1)"]
    errors, notes = review({"old": True}, {}, False)
    assert errors == [] and notes == [
        "function 'old' is retired and has no run in flight: it may be removed"]


def test_blocked_runs_are_named_with_their_cause() -> None:
    blocked = _run("b1", "f", "Blocked", "NondeterminismError: nondeterminism at step 'a'")
    plane = _Plane([blocked])
    runs, more = in_flight(plane)  # type: ignore[arg-type]
    errors, notes = review({"f": False}, runs, more)
    assert errors == []
    assert notes == ["run b1 of 'f' is blocked: NondeterminismError: nondeterminism at step 'a'"]
