"""How a function is deployed on AWS: ``@app.function(..., aws=AwsOptions(...))``.

Declared next to the function and validated when it is registered, so a typo
(``memmory_mb``) or a value AWS would refuse is an error naming the function and the
setting, not a silent default or a failed deploy. The CDK app (``infra/``) reads them;
the local backend ignores them (:func:`runtime.secrets.secret` reads the process
environment there, so code that reads ``os.environ`` should give local defaults).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

__all__ = ["MIN_MEMORY_MB", "AwsOptions", "PolicyStatement", "VpcConfig"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = ("AWS_", "LAMBDA_", "STEPKIT_", "POWERTOOLS_", "_HANDLER", "_X_AMZN")
# secretsmanager:<name or ARN> | ssm:<parameter name, /path or ARN>
_SECRET_REF = re.compile(r"^(secretsmanager|ssm):(\S{1,2048})$")
_LAYER_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[\w-]+:\d+$")
_MANAGED = re.compile(r"^(arn:aws[a-zA-Z-]*:iam::(aws|\d{12}):policy/)?[\w+=,.@/-]{1,128}$")
_ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9*]+$")
_Id = Annotated[str, StringConstraints(pattern=r"^(subnet|sg)-[0-9a-f]{8,17}$")]

#: The least memory a function's Lambda may have, MB: a run at the output limits (32 MiB of
#: JSON, ``Limits.max_run_bytes``) must replay in it. ``bench/run_memory.py`` measured a warm
#: worker at 66 MB before its first record, and loading and replaying 32 MiB of API-like
#: records at 267 MB more (8x their JSON); the run cache may hold a quarter of the memory
#: besides: (66 + 267) * 4/3 = 443 MB, rounded up to 512. DynamoDB's cold load of the same
#: runs took less (234 MB; ``--aws``). A run of strings needs less (68 MB); one of tiny dicts
#: (``{"n":0}``, 26x their JSON: 888 MB) needs about 1280 MB: such a function must ask for it.
MIN_MEMORY_MB = 512
#: What replaying a run of API-like records at the 32 MiB limit adds, MB (the bench's figure).
RUN_AT_LIMIT_MB = 267


class PolicyStatement(BaseModel):
    """An IAM statement added to the function's role (its steps' own AWS calls).

    Attributes:
        actions: E.g. ``["s3:GetObject"]``.
        resources: ARNs, e.g. ``["arn:aws:s3:::my-bucket/*"]``.
        effect: ``Allow`` (default) or ``Deny``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: list[str] = Field(min_length=1)
    resources: list[str] = Field(min_length=1)
    effect: Literal["Allow", "Deny"] = "Allow"

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not _ACTION.match(a)]
        if bad:
            raise ValueError(f"not IAM actions (service:Action): {bad}")
        return value

    @field_validator("resources")
    @classmethod
    def _resources(cls, value: list[str]) -> list[str]:
        bad = [r for r in value if r != "*" and not r.startswith("arn:")]
        if bad:
            raise ValueError(f"not ARNs (or '*'): {bad}")
        return value


class VpcConfig(BaseModel):
    """Subnets and security groups to attach the function's Lambda to.

    The role also gets the network-interface permissions Lambda needs in a VPC.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    subnet_ids: list[_Id] = Field(min_length=1, max_length=16)
    security_group_ids: list[_Id] = Field(min_length=1, max_length=5)


class AwsOptions(BaseModel):
    """A function's AWS settings. Every field is optional.

    Attributes:
        memory_mb: Lambda memory, 512-10240 (default 512): a run at the output limits
            (32 MiB of JSON) takes about 270 MB to replay, on top of what the worker
            holds (:data:`MIN_MEMORY_MB`); refused below, at registration. Outputs of
            many tiny dicts take several times more: give such a function 1280 or more.
        timeout_s: Lambda timeout in seconds, 1-900 (default 60): the longest one step or
            one replay may take.
        max_concurrency: The most concurrent Lambda invocations its queue may start, 2-1000
            (SQS event source ``MaximumConcurrency``; unset: up to the account's limit).
            Unlike reserved concurrency, messages over it wait in the queue instead of
            being throttled (throttled receives count towards the dead-letter limit).
        sqs_batch_size: Queue records per invocation, 1-10 (default 1): the records of a
            batch run one after another within one timeout.
        ephemeral_storage_mb: ``/tmp`` size, 512-10240 (default 512).
        environment: Environment variables for its Lambda (names not reserved by AWS or
            stepkit).
        secrets: Name -> ``secretsmanager:<name or ARN>`` or ``ssm:<parameter>``; read in
            steps with :func:`runtime.secret` (cached); the role may read exactly these.
        policies: IAM statements for the function's own AWS calls.
        managed_policies: IAM managed policies by name (AWS managed) or ARN.
        vpc: Subnets and security groups.
        layers: Lambda layer version ARNs (at most 5).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # AWS's own range (128-10240); registration asks for MIN_MEMORY_MB (memory_too_small),
    # which the event router's Lambda, replaying no run, does not need.
    memory_mb: int = Field(default=MIN_MEMORY_MB, ge=128, le=10240, strict=True)
    timeout_s: int = Field(default=60, ge=1, le=900, strict=True)
    max_concurrency: int | None = Field(default=None, ge=2, le=1000, strict=True)
    sqs_batch_size: int = Field(default=1, ge=1, le=10, strict=True)
    ephemeral_storage_mb: int = Field(default=512, ge=512, le=10240, strict=True)
    environment: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    policies: list[PolicyStatement] = Field(default_factory=list)
    managed_policies: list[str] = Field(default_factory=list)
    vpc: VpcConfig | None = None
    layers: list[str] = Field(default_factory=list, max_length=5)

    def memory_too_small(self) -> str | None:
        """Why ``memory_mb`` cannot replay a run at the output limits, or ``None`` (it can)."""
        if self.memory_mb >= MIN_MEMORY_MB:
            return None
        return (
            f"aws.memory_mb: {self.memory_mb} MB cannot replay a run at the 32 MiB output "
            f"limit (about {RUN_AT_LIMIT_MB} MB decoded, on top of what the worker and its "
            f"run cache hold, measured by bench/run_memory.py); use at least {MIN_MEMORY_MB}"
        )

    @field_validator("environment", "secrets")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.startswith(_RESERVED_ENV):
                raise ValueError(f"{name!r} is reserved (AWS_, LAMBDA_, STEPKIT_, POWERTOOLS_)")
        return value

    @field_validator("secrets")
    @classmethod
    def _refs(cls, value: dict[str, str]) -> dict[str, str]:
        for name, ref in value.items():
            if not _SECRET_REF.match(ref):
                raise ValueError(
                    f"secret {name!r}: {ref!r} must be 'secretsmanager:<name or ARN>' or "
                    "'ssm:<parameter name or ARN>'"
                )
        return value

    @field_validator("managed_policies")
    @classmethod
    def _managed(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not _MANAGED.match(p)]
        if bad:
            raise ValueError(f"not managed policy names or ARNs: {bad}")
        return value

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: list[str]) -> list[str]:
        bad = [arn for arn in value if not _LAYER_ARN.match(arn)]
        if bad:
            raise ValueError(f"not layer version ARNs: {bad}")
        return value
