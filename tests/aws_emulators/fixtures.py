"""pytest fixtures for tests that need the AWS emulators.

Use them from another test folder by importing them into its ``conftest.py``::

    from tests.aws_emulators.fixtures import aws, aws_session  # noqa: F401

and mark those tests ``@pytest.mark.aws``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
