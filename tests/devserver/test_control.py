"""The control plane: the in-process and the dev-server HTTP implementations answer alike,
and the harness offers it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.control import (
    Cancelled,
    ControlError,
    ControlPlane,
    DeadLetterNotFoundError,
    EventNotFoundError,
    NotAllowedError,
    NotFoundError,
    RunNotFoundError,
    StepNotFoundError,
)
from runtime.control.http import HttpControl
from runtime.devserver.background import serve_in_background
from runtime.errors import FunctionNotFoundError, InvalidEventError
from runtime.orchestration.protocols import RunQuery
from runtime.testing import Harness

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
app = App("controltest")


@app.function(id="nap", trigger=TriggerEvent("user/signup"))
def nap(ctx: Context) -> str:
    ctx.step.sleep("rest", "1h")
    return ctx.step.run("wake", lambda: f"awake {ctx.event.name}")


@app.function(id="tick", trigger=TriggerCron("0 9 * * *"))
def tick(ctx: Context) -> str:
    return str(ctx.event.name)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness.local(app, path=tmp_path / "db.sqlite3", start=START)
    yield h
    h.close()


@pytest.fixture(params=["in-process", "http"])
def plane(request: pytest.FixtureRequest, harness: Harness) -> Iterator[ControlPlane]:
    if request.param == "in-process":
        yield harness.control
        return
    with serve_in_background(harness.backend) as url:  # type: ignore[arg-type]
        yield HttpControl(url)


def test_actions_and_listings(plane: ControlPlane, harness: Harness) -> None:
    sent = plane.send({"name": "user/signup", "data": {}, "id": "e-1"})
    assert sent.ids == ["e-1"] and sent.duplicates == []
    assert plane.send({"name": "user/signup", "data": {}, "id": "e-1"}).duplicates == ["e-1"]
    harness.settle()
    (run,) = plane.list_runs(RunQuery(function_id="nap"))
    assert run["status"] == "Running"
    assert plane.skip_sleep(run["run_id"], "rest") is True
    assert plane.skip_sleep(run["run_id"], "nope") is False
    harness.settle()
    assert plane.run(run["run_id"])["output"] == "awake user/signup"
    assert plane.cancel(run["run_id"]) == Cancelled(False, "Completed")
    assert "e-1" in [e["id"] for e in plane.events()]
    assert [r["run_id"] for r in plane.event("e-1")["runs"]] == [run["run_id"]]

    invoked = plane.invoke("nap", {"x": 1})
    harness.settle()
    assert plane.cancel(invoked) == Cancelled(True, "Cancelled")
    fork = plane.rerun(run["run_id"], "wake")
    fired = plane.fire_cron("tick")
    harness.settle()
    assert plane.run(fork)["rerun_of"]["run_id"] == run["run_id"]
    assert plane.run(fired)["output"] == "stepkit/scheduled.timer"
    assert [f["id"] for f in plane.functions()["functions"]] == ["nap", "tick"]
    assert plane.dead_letters() == [] and plane.dead_letter_count() == 0


def test_ids_with_reserved_characters_reach_the_event_they_name(
    plane: ControlPlane, harness: Harness
) -> None:
    odd = ["order/42", "50% off", "a#b?c", "x/cancel"]
    assert plane.send([{"name": "user/signup", "id": i} for i in odd]).ids == odd
    harness.settle()
    for event_id in odd:
        shown = plane.event(event_id)
        assert shown["id"] == event_id
        (run,) = shown["runs"]
        assert plane.run(run["run_id"])["events"][0]["id"] == event_id


def test_errors_are_the_control_planes(plane: ControlPlane, harness: Harness) -> None:
    in_process = not isinstance(plane, HttpControl)  # over HTTP, a 404 is a NotFoundError
    harness.send("user/signup", {})
    (run,) = harness.runs("nap")
    cases = [
        (lambda: plane.cancel("r-none"), RunNotFoundError if in_process else NotFoundError),
        (lambda: plane.run("r-none"), RunNotFoundError if in_process else NotFoundError),
        (lambda: plane.rerun(run.id, "nope"), StepNotFoundError if in_process else NotFoundError),
        (lambda: plane.event("e-none"), EventNotFoundError if in_process else NotFoundError),
        (lambda: plane.redrive(message_id="m-none"),
         DeadLetterNotFoundError if in_process else NotFoundError),
        (lambda: plane.invoke("none"), FunctionNotFoundError if in_process else NotFoundError),
        (lambda: plane.fire_cron("nap"), NotAllowedError),
        (lambda: plane.send({"name": ""}), InvalidEventError if in_process else ControlError),
    ]
    for call, error in cases:
        with pytest.raises(error):
            call()


def test_the_harness_invokes_fires_and_skips_and_settles(harness: Harness) -> None:
    invoked = harness.invoke("nap", {"x": 1})
    assert harness.run(invoked).status == "Running"
    assert harness.skip_sleep(invoked, "rest") is True
    assert harness.run(invoked).output == "awake stepkit/function.invoked"
    fired = harness.fire_cron("tick")
    assert harness.run(fired).output == "stepkit/scheduled.timer"
