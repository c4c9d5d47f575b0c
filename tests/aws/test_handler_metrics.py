"""Run metrics leave the Lambda handlers as CloudWatch EMF lines, one flush per invocation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.handlers.metrics import CloudWatchMetrics
from runtime.testing import Harness
from stepkit_emulators.emulators import AwsEmulators

pytestmark = pytest.mark.aws


def emf_documents(out: str) -> list[dict[str, Any]]:
    docs = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def test_handlers_print_run_metrics_as_emf_with_service_and_function_dimensions(
    aws: AwsEmulators, capsys: pytest.CaptureFixture[str]
) -> None:
    app = App("emfcheck")
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("once")
        return "ok"

    @app.function(id="flaky", trigger=TriggerEvent("go/flaky"), retries=2)
    def flaky_fn(ctx: Context) -> Any:
        return ctx.step.run("call", flaky)

    @app.function(id="doomed", trigger=TriggerEvent("go/doomed"), retries=0)
    def doomed(ctx: Context) -> Any:
        def fail() -> None:
            raise ValueError("never")

        return ctx.step.run("fail", fail)

    h = Harness.aws(app, aws)
    capsys.readouterr()
    try:
        h.send("go/flaky")
        h.send("go/doomed")
        h.advance("1m")
    finally:
        h.close()
    docs = emf_documents(capsys.readouterr().out)
    assert docs, "no EMF output"
    totals: dict[tuple[str, str], float] = {}
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "stepkit"
        assert directive["Dimensions"] == [["function_id", "service"]] or \
            sorted(directive["Dimensions"][0]) == ["function_id", "service"]
        assert doc["service"] == "emfcheck"
        for metric in directive["Metrics"]:
            values = doc[metric["Name"]]
            values = values if isinstance(values, list) else [values]
            key = (doc["function_id"], metric["Name"])
            totals[key] = totals.get(key, 0) + (len(values) if metric["Name"] == "StepDuration"
                                                else sum(values))
            if metric["Name"] == "StepDuration":
                assert metric["Unit"] == "Milliseconds"
    assert totals == {
        ("flaky", "RunsStarted"): 1, ("flaky", "StepRetries"): 1, ("flaky", "StepDuration"): 1,
        ("flaky", "RunsCompleted"): 1,
        ("doomed", "RunsStarted"): 1, ("doomed", "StepDuration"): 1, ("doomed", "RunsFailed"): 1,
    }


def test_a_pushback_is_one_count_of_the_functions_pushback_metric(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = CloudWatchMetrics(service="emfcheck")
    metrics.pushback("flaky")
    metrics.pushback("flaky")
    metrics.pushback("doomed")
    metrics.flush()
    docs = {doc["function_id"]: doc for doc in emf_documents(capsys.readouterr().out)}
    assert sorted(docs) == ["doomed", "flaky"]
    for function_id, count in (("flaky", 2), ("doomed", 1)):
        doc = docs[function_id]
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert (directive["Namespace"], doc["service"]) == ("stepkit", "emfcheck")
        assert sorted(directive["Dimensions"][0]) == ["function_id", "service"]
        assert directive["Metrics"] == [{"Name": "Pushback", "Unit": "Count"}]
        values = doc["Pushback"]
        assert sum(values if isinstance(values, list) else [values]) == count
