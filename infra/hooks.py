"""Your own changes to the deployed stack: the escape hatch beyond ``AwsOptions``.

``StepkitStack`` calls :func:`on_function` once per durable function, after creating its
queue, dead-letter queue, Lambda and role, and before its rules and schedules. Edit it to
change anything CDK can: add a Lambda alias, tags, a bucket notification, a grant on a
resource defined here. ``worker.function`` is the ``aws_lambda.Function``, ``worker.role``
its ``aws_iam.Role``, ``worker.queue``/``worker.dlq`` its ``aws_sqs.Queue``s. They live in
the function's nested stack (``cdk.Stack.of(worker)``): create new resources there, not in
``stack``, or each costs a cross-stack reference.

Example (grant every function read access to one bucket)::

    from aws_cdk import aws_s3 as s3

    def on_function(stack, fn, worker):
        bucket = s3.Bucket.from_bucket_name(stack, f"Assets-{fn.id}", "my-assets")
        bucket.grant_read(worker.role)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.constructs.function_runtime import QueueWorker
    from infra.stack import StepkitStack
    from runtime.app import FunctionDef


def on_function(stack: StepkitStack, fn: FunctionDef, worker: QueueWorker) -> None:
    """Customise one function's resources; does nothing until you edit it."""
