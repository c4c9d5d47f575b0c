"""Secrets a function declares in ``aws=AwsOptions(secrets=...)``, read in its steps.

On AWS, the CDK app passes the function's declared references in ``STEPKIT_SECRETS`` and
grants its role read access to exactly those; :func:`secret` fetches them with Powertools
Parameters (Secrets Manager or SSM Parameter Store, decrypted), cached for five minutes per
Lambda container. Locally (dev server, tests) a secret is the environment variable of the
same name, so no AWS account is needed to develop.
"""

from __future__ import annotations

import json
import os
from typing import Any

from runtime.errors import ConfigurationError

__all__ = ["ENV_SECRETS", "secret"]

#: JSON object: secret name -> "secretsmanager:<id>" | "ssm:<name>" (set by the CDK app).
ENV_SECRETS = "STEPKIT_SECRETS"
CACHE_SECONDS = 300
_UNSET: Any = object()


def secret(name: str, default: Any = _UNSET) -> Any:
    """The value of the secret ``name``.

    Read it inside a step (``ctx.step.run``), not in the handler's body: a step's result is
    recorded, a secret should only be used, so return what you did with it, not the secret.

    Args:
        name: As declared in ``AwsOptions(secrets={name: ref})``.
        default: Returned when the secret is not available locally (the environment
            variable ``name`` is unset). Ignored on AWS, where a declared secret must exist.

    Raises:
        ConfigurationError: On AWS, ``name`` is not declared for this function; locally, the
            variable is unset and there is no default.
    """
    declared = os.environ.get(ENV_SECRETS)
    if declared is None:  # local backend: the process environment
        value = os.environ.get(name)
        if value is not None:
            return value
        if default is not _UNSET:
            return default
        raise ConfigurationError(
            f"secret {name!r} is not set: locally, secrets are environment variables; "
            f"export {name}=... before starting the dev server or tests"
        )
    refs = json.loads(declared)
    ref = refs.get(name)
    if ref is None:
        raise ConfigurationError(
            f"secret {name!r} is not declared for this function; declared: "
            f"{', '.join(sorted(refs)) or 'none'} (add it to aws=AwsOptions(secrets=...))"
        )
    from aws_lambda_powertools.utilities import parameters

    store, _, ident = ref.partition(":")
    if store == "secretsmanager":
        return parameters.get_secret(ident, max_age=CACHE_SECONDS)
    return parameters.get_parameter(ident, decrypt=True, max_age=CACHE_SECONDS)
