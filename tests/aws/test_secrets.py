"""``secret()`` on AWS: the declared Secrets Manager / SSM references, read through Powertools
Parameters against moto, cached, and nothing undeclared."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime import ConfigurationError, secret

pytestmark = pytest.mark.aws


def test_declared_secrets_are_read_from_secrets_manager_and_ssm(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    aws.client("secretsmanager").create_secret(Name="prod/smtp", SecretString="hunter2")
    ssm = aws.client("ssm")
    ssm.put_parameter(Name="/shop/api-key", Value="k-123", Type="SecureString")
    monkeypatch.setenv("STEPKIT_SECRETS", json.dumps(
        {"SMTP_PASSWORD": "secretsmanager:prod/smtp", "API_KEY": "ssm:/shop/api-key"}))
    monkeypatch.setenv("SMTP_PASSWORD", "the local value, not used on AWS")
    assert secret("SMTP_PASSWORD") == "hunter2"
    assert secret("API_KEY") == "k-123"
    ssm.put_parameter(Name="/shop/api-key", Value="k-456", Type="SecureString", Overwrite=True)
    assert secret("API_KEY") == "k-123"  # cached for CACHE_SECONDS per container
    parameters.clear_caches()
    assert secret("API_KEY") == "k-456"
    with pytest.raises(ConfigurationError, match="'OTHER' is not declared"):
        secret("OTHER")
