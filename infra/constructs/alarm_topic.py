"""The SNS topic every alarm of the app notifies, with an optional email subscription.

An alarm without an action only changes colour in a console nobody watches. The topic is
encrypted with its own KMS key (cdk-nag AwsSolutions-SNS2): CloudWatch cannot publish to a
topic under the AWS-managed SNS key, since that key's policy cannot be changed to let it use
the key; this key's policy lets CloudWatch do exactly that. Publishing needs TLS.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class AlarmTopic(Construct):
    """An encrypted, TLS-only topic that the app's CloudWatch alarms publish to.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        display_name: Shown as the sender of notifications.
        email: Subscribe this address (AWS sends it a confirmation link first).

    Attributes:
        key: The topic's KMS key (rotated yearly).
        topic: The topic.
    """

    def __init__(self, scope: Construct, construct_id: str, *, display_name: str,
                 email: str | None = None) -> None:
        super().__init__(scope, construct_id)
        cloudwatch = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        self.key = kms.Key(
            self,
            "Key",
            description=f"{display_name}: encrypts the alarm topic",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.key.grant(cloudwatch, "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(
            self, "Topic", display_name=display_name, master_key=self.key, enforce_ssl=True
        )
        # A topic policy replaces SNS's default one: CloudWatch alarms of this account only.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[cloudwatch],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID},
                    "ArnLike": {"aws:SourceArn": f"arn:{cdk.Aws.PARTITION}:cloudwatch:"
                                f"{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:alarm:*"},
                },
            )
        )
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
