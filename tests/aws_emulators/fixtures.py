"""pytest fixtures for tests that need the AWS emulators.

Use them from another test folder by importing them into its ``conftest.py``::

    from tests.aws_emulators.fixtures import aws, aws_session  # noqa: F401

and mark those tests ``@pytest.mark.aws``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import App
from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_TABLE
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators, aws_emulators


@pytest.fixture(scope="session")
def aws_session() -> Iterator[AwsEmulators]:
    """DynamoDB Local + moto + an installed MotoClock for the whole session (~2.5 s to start)."""
    with aws_emulators() as emulators:
        yield emulators


@pytest.fixture
def aws(aws_session: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsEmulators]:
    """The session's emulators, wiped before the test, with the boto3 env vars set for it.

    Wiped = every DynamoDB table deleted, moto state reset, moto clock offset back to 0.
    """
    aws_session.reset()
    for key, value in aws_session.env().items():
        monkeypatch.setenv(key, value)
    yield aws_session


def deploy_for_cli(app: App, aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch, *,
                   functions: str | None = None) -> tuple[Harness, AwsBackend]:
    """``app`` deployed on the emulators, with the env the CLI's ``--aws`` reads.

    ``functions`` names the module defining ``app`` (``STEPKIT_FUNCTIONS``), for the
    commands that load this project's functions/.
    """
    h = Harness.aws(app, aws)
    assert isinstance(h.backend, AwsBackend)
    r = h.backend.resources
    for name, value in ((ENV_APP, r.app_id), (ENV_BUS, r.bus), (ENV_TABLE, r.table)):
        monkeypatch.setenv(name, value)
    if functions is not None:
        monkeypatch.setenv("STEPKIT_FUNCTIONS", functions)
    return h, h.backend
