"""Shared fixtures: the behaviour suite runs every case against every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime import App
from runtime.testing import Harness
from runtime.testing.chaos import Chaos
from tests.aws_emulators.fixtures import aws, aws_session

__all__ = ["aws", "aws_session"]  # the emulator fixtures, defined once for every folder

# A Monday morning, fixed so cron and time assertions are exact.
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

MakeHarness = Callable[..., Harness]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        help="run the behaviour suite on this backend (local, aws); repeatable; default: all",
    )
    parser.addoption(
        "--mode",
        action="append",
        default=None,
        help="run the behaviour suite in this delivery mode (normal, chaos); default: both",
    )
    parser.addoption(
        "--chaos-seed",
        type=int,
        default=0,
        help="seed of chaos mode's fault dice; sweep it to hunt interleavings (default: 0)",
    )


def _modes(config: pytest.Config) -> list[str]:
    chosen: list[str] | None = config.getoption("--mode")
    return chosen or ["normal", "chaos"]


def _backends(config: pytest.Config) -> list[str]:
    chosen: list[str] | None = config.getoption("--backend")
    return chosen or ["local", "aws"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "make_harness" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", _backends(metafunc.config), scope="function")
        metafunc.parametrize("mode", _modes(metafunc.config), scope="function")


@pytest.fixture
def make_harness(
    backend_name: str, mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[MakeHarness]:
    """Build a harness for an app on the backend under test, in normal or chaos mode.

    Chaos mode (``runtime.testing.chaos``) settles with concurrent workers, shuffled and
    duplicated deliveries, crashes after commits and injected failures: every case must hold.

    A case deploys new code over a harness's state with ``h = h.redeploy(new_app)``: the new
    harness keeps the backend's file or emulators, the clock and the mode, and closing the
    first harness closes the one that replaced it.
    """
    made: list[Harness] = []
    emulators = request.getfixturevalue("aws") if backend_name == "aws" else None

    def make(app: App, *, duplicate_deliveries: bool = False, **options: Any) -> Harness:
        if backend_name == "local":
            h = Harness.local(app, path=tmp_path / f"db{len(made)}.sqlite3", start=START, **options)
        elif backend_name == "aws":
            assert emulators is not None
            h = Harness.aws(app, emulators, start=START, **options)
        else:
            raise pytest.UsageError(f"unknown backend {backend_name!r}")
        made.append(h)
        if duplicate_deliveries:
            h.duplicate_deliveries()
        if mode == "chaos":
            base: int = request.config.getoption("--chaos-seed")
            h.enable_chaos(Chaos(seed=base * 100 + len(made)))
        return h

    yield make
    for h in made:
        h.close()
