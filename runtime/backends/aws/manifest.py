"""The step manifest of the deployed stack, read from CloudFormation (``stepkit check --aws``).

The root template's ``Metadata`` carries it (:data:`runtime.manifest.METADATA_KEY`);
``GetTemplate`` returns the template as deployed (stage ``Original``).
"""

from __future__ import annotations

from typing import Any

from runtime.errors import ConfigurationError
from runtime.manifest import Manifest, from_template


def deployed_manifest(stack: str, client: Any = None) -> Manifest | None:
    """The manifest of stack ``stack``; ``None`` if the stack does not exist or carries none.

    Raises:
        ConfigurationError: CloudFormation refused the call (credentials, permissions), or
            the template's manifest cannot be read.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    cfn = client or boto3.client("cloudformation")
    try:
        body = cfn.get_template(StackName=stack, TemplateStage="Original")["TemplateBody"]
    except ClientError as exc:
        if "does not exist" in str(exc):  # a ValidationError, the code every bad input gets
            return None
        raise ConfigurationError(f"cannot read the template of stack '{stack}': {exc}") from None
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot read the template of stack '{stack}': {exc}") from None
    try:
        return from_template(body)
    except ValueError as exc:
        raise ConfigurationError(f"stack '{stack}': {exc}") from None
