"""`stepkit ... --aws` failures are one-line errors that say what to do, never tracebacks."""

from __future__ import annotations

import socket
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner, Result

from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_TABLE
from runtime.cli import cli
from stepkit_emulators.emulators import AwsEmulators

_AWS_ENV = (
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_EVENTBRIDGE",
)


def stepkit(*args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--aws"], prog_name="stepkit")


def one_line_error(result: Result) -> str:
    """The error, asserting it is one line with exit code 1 and no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No AWS configuration at all: no region, no credentials, no profile files."""
    for key in _AWS_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe instance metadata
    # A fresh process, as the CLI runs in: boto3's default session caches credentials and
    # region that earlier tests resolved from their environment.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv(ENV_APP, "demo")
    monkeypatch.setenv(ENV_BUS, "demo-bus")
    monkeypatch.setenv(ENV_TABLE, "demo-state")
    return monkeypatch


@pytest.mark.parametrize("command", [["runs"], ["run", "r1"], ["send", "user/signup"]])
def test_no_region(bare_env: pytest.MonkeyPatch, command: list[str]) -> None:
    error = one_line_error(stepkit(*command))
    assert error.startswith("Error: no AWS region: set AWS_DEFAULT_REGION")


@pytest.mark.parametrize("command", [["runs"], ["run", "r1"], ["send", "user/signup"]])
def test_no_credentials(bare_env: pytest.MonkeyPatch, command: list[str]) -> None:
    bare_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    error = one_line_error(stepkit(*command))
    assert error.startswith("Error: no AWS credentials: run `aws configure`")


@pytest.mark.aws
def test_missing_table(aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_APP, "demo")
    monkeypatch.setenv(ENV_BUS, "demo-bus")
    monkeypatch.setenv(ENV_TABLE, "nope-state")
    for command in (["runs"], ["run", "r1"]):
        error = one_line_error(stepkit(*command))
        assert error.startswith("Error: table nope-state not found in this account and region")


def test_unreachable_endpoint(bare_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bare_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    bare_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    bare_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bare_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # nothing listens there
    bare_env.setenv("AWS_MAX_ATTEMPTS", "1")
    bare_env.setenv("STEPKIT_FUNCTIONS", "tests.aws.test_dlq_aws")
    for command in (["runs"], ["send", "user/signup"], ["dlq", "list"]):
        error = one_line_error(stepkit(*command))
        assert error.startswith("Error: cannot reach AWS (Could not connect to the endpoint URL")


@pytest.mark.parametrize("region", [None, "eu-west-1"])
def test_fire_without_region_or_credentials(
    bare_env: pytest.MonkeyPatch, region: str | None
) -> None:
    bare_env.chdir(Path(__file__).resolve().parents[2])  # the example app: a cron function
    if region:
        bare_env.setenv("AWS_DEFAULT_REGION", region)
    error = one_line_error(stepkit("fire", "daily-digest"))
    assert error.startswith("Error: no AWS credentials" if region else "Error: no AWS region")
