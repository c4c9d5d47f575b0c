"""The Lambda entry point: the invocation's context on every log line, optional tracing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.resources import (
    ENV_APP,
    ENV_BUS,
    ENV_FUNCTION,
    ENV_QUEUE_URL,
    ENV_TABLE,
    ENV_TRACING,
)
from runtime.handlers.service import LambdaApp
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from stepkit_emulators.lambda_events import sqs_lambda_event

pytestmark = pytest.mark.aws


class FakeLambdaContext:
    def __init__(self, request_id: str) -> None:
        self.function_name = "stepkit-ctx-welcome"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:x"
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def stepkit_handlers() -> Iterator[None]:
    logger = logging.getLogger("stepkit")
    before = list(logger.handlers)
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)


def build(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch, app_id: str,
          tracing: bool) -> tuple[Harness, AwsBackend, Any]:
    # A service name no other test uses: Powertools keeps one logger per name, on the
    # stream it was first built with (this test's captured stdout).
    app = App(app_id)

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
    if tracing:
        monkeypatch.setenv(ENV_TRACING, "true")
        monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")  # no X-Ray daemon here
    return h, backend, consumer


def next_batch(h: Harness, backend: AwsBackend, consumer: Any, user: str) -> dict[str, Any]:
    h.send("user/signup", {"user_id": user}, settle=False)
    got = backend.clients["sqs"].receive_message(QueueUrl=consumer.url)["Messages"]
    return sqs_lambda_event(got, queue_arn=consumer.arn, region=backend.region)


def test_every_line_of_an_invocation_carries_its_request_id_and_cold_start(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    stepkit_handlers: None,
) -> None:
    h, backend, consumer = build(aws, monkeypatch, "ctxcheck", tracing=False)
    service = LambdaApp.from_env(h.app)
    assert service.tracer is None  # tracing is off unless the stack turns it on
    handler = service.lambda_handler(router=False)
    event = next_batch(h, backend, consumer, "ada")
    capsys.readouterr()
    result = handler(event, FakeLambdaContext("req-1"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{") and '"_aws"' not in line]
    assert result == {"batchItemFailures": []}
    assert "greeting ada" in [line["message"] for line in lines]
    for line in lines:
        assert line["function_request_id"] == "req-1", line
        assert line["function_name"] == "stepkit-ctx-welcome", line
        assert isinstance(line["cold_start"], bool), line
        assert line["run_id"] == h.only_run("welcome").id, line
    # The next invocation has its own request id; it is not a cold start any more.
    event = next_batch(h, backend, consumer, "bob")
    capsys.readouterr()
    handler(event, FakeLambdaContext("req-2"))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{") and '"_aws"' not in line]
    assert lines
    for line in lines:
        assert (line["function_request_id"], line["cold_start"]) == ("req-2", False), line


def test_tracing_context_wraps_the_handler_in_powertools_tracer(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch, stepkit_handlers: None,
) -> None:
    from aws_lambda_powertools import Tracer

    h, backend, consumer = build(aws, monkeypatch, "tracecheck", tracing=True)
    service = LambdaApp.from_env(h.app)
    assert isinstance(service.tracer, Tracer)
    handler = service.lambda_handler(router=False)
    event = next_batch(h, backend, consumer, "ada")
    assert handler(event, FakeLambdaContext("req-3")) == {"batchItemFailures": []}
    assert h.only_run("welcome").status == "Running"  # its first step ran: the work was done
    assert h.only_run("welcome").step("greet").status == "Completed"


def test_an_invocation_gives_its_checkpoint_chains_the_lambda_s_remaining_time(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch, stepkit_handlers: None,
) -> None:
    # Every record of a batch shares one Lambda timeout: the handler sets the invocation's
    # deadline (from the context's remaining time) for the chains to stop by, and clears it.
    h, backend, consumer = build(aws, monkeypatch, "deadlines", tracing=False)
    service = LambdaApp.from_env(h.app)
    ports = service.orchestrator.ports
    seen: list[float | None] = []
    real = service.orchestrator.handle

    def handle(msg: Any, **kwargs: Any) -> None:
        seen.append(ports.deadline)
        real(msg, **kwargs)

    monkeypatch.setattr(service.orchestrator, "handle", handle)
    before = time.monotonic()
    service.lambda_handler(router=False)(next_batch(h, backend, consumer, "ada"),
                                         FakeLambdaContext("req-1"))
    assert len(seen) == 1 and seen[0] is not None
    assert before + 59 <= seen[0] <= time.monotonic() + 60  # FakeLambdaContext: 60 s left
    assert ports.deadline is None
