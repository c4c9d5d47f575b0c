"""The README's AWS examples run as written, against the emulators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import stepkit_emulators.emulators
from runtime import App, Context, TriggerEvent
from runtime.testing import Harness
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli
from tests.unit.test_readme_examples import example, run_example

pytestmark = pytest.mark.aws


def _app() -> App:
    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup"))
    def welcome(ctx: Context) -> str:
        return str(ctx.event.data["user_id"])

    return app


def test_sending_to_a_deployed_app(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real clock: the deployed bus stamps events with it.
    h, _ = deploy_for_cli(_app(), aws, monkeypatch)
    run_example(example("runtime.send("))
    h.settle()
    assert h.only_run("welcome").output == "ada"


def test_the_emulator_harness_example(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def running() -> Iterator[AwsEmulators]:  # the session's emulators, not a second pair
        yield aws

    monkeypatch.setattr(stepkit_emulators.emulators, "aws_emulators", running)
    scope = run_example(example("Harness.aws(app, emulators)"), app=_app())
    h: Harness = scope["h"]
    h.send("user/signup", {"user_id": "grace"})
    assert h.only_run("welcome").output == "grace"
