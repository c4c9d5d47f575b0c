"""The app's payload bucket: step and run outputs over 64 KiB, out of the state table's items.

``runtime.backends.aws.payloads.S3Payloads`` puts such an output as ``runs/<run_id>/<sha256>.json``
and the item keeps a reference to it. Objects are content-addressed and never rewritten, so
the bucket needs no versioning; nothing deletes them one by one either (a commit that loses
its race leaves an object no item refers to), so a lifecycle rule expires every object once
no run can still refer to it. The Lambdas may put and get objects under ``runs/``, and
list the bucket (only so that S3 tells them a key is missing, see :data:`LIST_ACTION`); no
deleting.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import nag

#: Where ``S3Payloads`` puts objects; the Lambdas' grant covers this prefix only.
OBJECTS = "runs/*"
#: What ``S3Payloads`` does, and nothing more: ``offload`` puts, ``resolve`` gets.
PAYLOAD_ACTIONS = ("s3:GetObject", "s3:PutObject")
#: Granted on the bucket itself, not for a call stepkit makes: S3 answers a GetObject of a
#: missing key with 404 ``NoSuchKey`` only to a caller allowed ``s3:ListBucket`` (403
#: ``AccessDenied`` otherwise; S3 API reference, GetObject, "Permissions"). With it a forged
#: or expired reference is told apart from a denial, which stays a retried failure.
LIST_ACTION = "s3:ListBucket"
#: Added to the retention: an object is written while its run runs, but the run's items only
#: start their retention when it ends, and a run may sleep up to 366 days
#: (``runtime.durations.MAX_SLEEP``). The same margin as the backstop TTL of log items
#: (written + retention + 366 days, ``runtime/backends/aws/run_store.py``), for the same reason:
#: an expiry counted from the write cannot know when the run will end.
RUN_MARGIN_DAYS = 366


class PayloadBucket(Construct):
    """One encrypted, private, TLS-only bucket whose objects expire after the retention.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        retention_days: How long a finished run is kept (``StackSettings.retention_days``);
            objects expire ``retention_days + RUN_MARGIN_DAYS`` days after they were written.
        retain: Keep the bucket (and its objects) when the stack is deleted, as the state
            table is; otherwise ``cdk destroy`` empties and deletes it.

    Attributes:
        bucket: The bucket (its name is generated: bucket names are global).
        policy: Put and get on ``runs/*``; attached to each Lambda by :meth:`grant_access`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, retention_days: int,
                 retain: bool) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            # SSE-S3: cdk-nag asks for encryption, not for a key of our own, and a KMS key
            # would add a kms:Decrypt/GenerateDataKey grant and a request charge per object.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            versioned=False,  # content-addressed, immutable objects: nothing to keep
            lifecycle_rules=[s3.LifecycleRule(
                id="expire-after-retention",
                expiration=cdk.Duration.days(retention_days + RUN_MARGIN_DAYS),
                # A put that failed half-way (the commit failed with it and is retried).
                abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
            )],
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
            # Without it a non-empty bucket fails the stack's deletion. It adds CDK's
            # custom-resource Lambda (its code ships inside aws-cdk-lib: no Docker, no
            # bundling), which only runs when the bucket is deleted.
            auto_delete_objects=not retain,
        )
        nag.acknowledge_payload_bucket(self.bucket)
        self.policy = iam.Policy(self, "Access", statements=[
            iam.PolicyStatement(actions=list(PAYLOAD_ACTIONS),
                                resources=[self.bucket.arn_for_objects(OBJECTS)]),
            iam.PolicyStatement(actions=[LIST_ACTION], resources=[self.bucket.bucket_arn]),
        ])
        cfn = self.bucket.node.default_child
        assert isinstance(cfn, s3.CfnBucket)
        nag.acknowledge_payload_objects(self.policy, cdk.Stack.of(self).get_logical_id(cfn))

    def grant_access(self, role: iam.IRole) -> None:
        """Let ``role`` put and get objects under ``runs/`` and list the bucket."""
        self.policy.attach_to_role(role)
