"""Step keys: a user's id never reaches a key stepkit generates (issue 23)."""

from __future__ import annotations

import pytest

from runtime import App, Context, TriggerEvent
from runtime.engine import execute
from runtime.engine.decisions import RunCompleted
from runtime.engine.template import step_key
from runtime.errors import NonRetriableError
from runtime.records import RunRecord, RunState, StepKind, StepRecord, StepStatus


def test_keys_escape_only_the_characters_stepkit_generates_keys_with() -> None:
    assert step_key("fetch") == "fetch"
    assert step_key("user/42 ünïcode") == "user/42 ünïcode"
    assert step_key("fetch:1") == "fetch%3A1"
    assert step_key("a@0") == "a%400"
    assert step_key("100%") == "100%25"
    assert step_key("%3A") == "%253A"  # so no escaped id equals another id's key
    with pytest.raises(NonRetriableError, match="over the 256"):
        step_key("é" * 129)  # 258 bytes of UTF-8
    with pytest.raises(NonRetriableError, match="lone surrogate"):
        step_key("a\udc80")


def _done(key: str, step_id: str, output: str | None,
          kind: StepKind = StepKind.RUN) -> StepRecord:
    return StepRecord(key=key, id=step_id, kind=kind, status=StepStatus.COMPLETED,
                      output=output, started_at=1.0, ended_at=1.0)


def test_a_run_recorded_before_ids_were_escaped_replays_its_own_records() -> None:
    # Before the upgrade, "fetch:1" was recorded under its id as given; replaying it after
    # the upgrade must find it there (its record names it), not run the step again.
    app = App("ids")

    @app.function(id="ids", trigger=TriggerEvent("t/ids"))
    def ids(ctx: Context) -> list[str]:
        ctx.step.sleep("nap:1", "1h")  # a sleep that ended: it would sleep again
        return [ctx.step.run("fetch", lambda: "new"), ctx.step.run("fetch:1", lambda: "new")]

    event = {"id": "e1", "name": "t/ids", "data": {}, "user": {}, "ts": 1}
    history = {"nap:1": _done("nap:1", "nap:1", None, StepKind.SLEEP),
               "fetch": _done("fetch", "fetch", "old fetch"),
               "fetch:1": _done("fetch:1", "fetch:1", "old fetch:1")}
    state = RunState(RunRecord(run_id="r1", function_id="ids", events=(event,)), history)
    decision = execute(app.get("ids"), state, now=2.0)
    assert isinstance(decision, RunCompleted)
    assert decision.output == ["old fetch", "old fetch:1"]
