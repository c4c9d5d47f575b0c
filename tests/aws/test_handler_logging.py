"""The Lambda entry path: configuration from the environment and structured log lines."""

from __future__ import annotations

import json
import logging

import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_FUNCTION, ENV_QUEUE_URL, ENV_TABLE
from runtime.handlers.service import LambdaApp
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from stepkit_emulators.lambda_events import sqs_lambda_event

pytestmark = pytest.mark.aws


def test_every_log_line_of_an_invocation_names_run_and_function(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Powertools keeps one logger per service name, with the stream it was first built on:
    # a name no other test uses, so its output goes to this test's captured stdout.
    app = App("logcheck")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup"))
    def welcome(ctx: Context) -> str:
        ctx.logger.info("greeting %s", ctx.event.data["user_id"])
        return ctx.step.run("greet", lambda: "hi")

    h = Harness.aws(app, aws)
    backend = h.backend
    assert isinstance(backend, AwsBackend)
    consumer = next(c for c in backend.consumers if c.service.config.function_id == "welcome")
    r = backend.resources
    for key, value in {ENV_APP: r.app_id, ENV_TABLE: r.table, ENV_BUS: r.bus,
                       ENV_QUEUE_URL: consumer.url, ENV_FUNCTION: "welcome"}.items():
        monkeypatch.setenv(key, value)
    stepkit_logger = logging.getLogger("stepkit")
    before = list(stepkit_logger.handlers)
    try:
        service = LambdaApp.from_env(app)  # what the Lambda's cold start does
        h.send("user/signup", {"user_id": "ada"}, settle=False)
        got = backend.clients["sqs"].receive_message(QueueUrl=consumer.url)["Messages"]
        capsys.readouterr()
        result = service.handle_batch(
            sqs_lambda_event(got, queue_arn=consumer.arn, region=backend.region), None,
            router=False,
        )
        # Log lines, not the run metrics' EMF documents printed at the end of the batch.
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                 if line and '"_aws"' not in line]
    finally:
        for handler in stepkit_logger.handlers[:]:
            if handler not in before:
                stepkit_logger.removeHandler(handler)
    assert result == {"batchItemFailures": []}
    messages = [line["message"] for line in lines]
    assert "greeting ada" in messages
    assert any("started" in m for m in messages)
    run_id = h.only_run("welcome").id
    for line in lines:
        assert line["run_id"] == run_id, line
        assert line["function_id"] == "welcome", line
        assert line["service"] == "logcheck", line
