"""The app's DynamoDB state table, mirrored from ``runtime.backends.aws.table``.

``table_spec`` (the ``CreateTable`` arguments the emulator tests use) is the one description
of keys, attribute types, indexes and projections; this construct translates it instead of
restating it, so the deployed table cannot drift from the one the store is tested against.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from runtime.backends.aws.table import table_spec, ttl_spec

_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}

#: What ``DynamoStore`` does, and nothing more: its Query (table and indexes), BatchGetItem,
#: PutItem, and the Put/Update/Delete parts of TransactWriteItems (which has no IAM action of
#: its own). tests/infra/test_stack.py checks this list against the store's calls.
STATE_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
)


class StateTable(Construct):
    """One on-demand, encrypted, point-in-time-recoverable table holding every run's state.

    Args:
        scope: Parent construct.
        construct_id: Construct id.
        table_name: ``AppResources.table``.
        retain: Keep the table (and its data) when the stack is deleted, with deletion
            protection on; otherwise ``cdk destroy`` deletes it.

    Attributes:
        table: The table.
        index_names: Its global secondary indexes, as in ``table_spec``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, table_name: str,
                 retain: bool) -> None:
        super().__init__(scope, construct_id)
        spec = table_spec(table_name)
        ttl = ttl_spec(table_name)["TimeToLiveSpecification"]
        types = {a["AttributeName"]: _TYPES[a["AttributeType"]]
                 for a in spec["AttributeDefinitions"]}

        def keys(schema: list[dict[str, str]]) -> dict[str, dynamodb.Attribute]:
            return {k["KeyType"]: dynamodb.Attribute(name=k["AttributeName"],
                                                     type=types[k["AttributeName"]])
                    for k in schema}

        table_keys = keys(spec["KeySchema"])
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=spec["TableName"],
            partition_key=table_keys["HASH"],
            sort_key=table_keys.get("RANGE"),
            billing_mode=dynamodb.BillingMode[spec["BillingMode"]],
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=ttl["AttributeName"] if ttl["Enabled"] else None,
            # Keys only: the run reaper needs no more to find an expired run's partition.
            stream=dynamodb.StreamViewType.KEYS_ONLY,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
            deletion_protection=retain,
        )
        indexes: list[dict[str, Any]] = spec.get("GlobalSecondaryIndexes", [])
        for index in indexes:
            index_keys = keys(index["KeySchema"])
            projection = index["Projection"]
            self.table.add_global_secondary_index(
                index_name=index["IndexName"],
                partition_key=index_keys["HASH"],
                sort_key=index_keys.get("RANGE"),
                projection_type=dynamodb.ProjectionType[projection["ProjectionType"]],
                non_key_attributes=projection.get("NonKeyAttributes"),
            )
        self.index_names = tuple(str(i["IndexName"]) for i in indexes)

    def grant_state_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow :data:`STATE_ACTIONS` on the table and each of its indexes, by ARN."""
        arn = self.table.table_arn
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(STATE_ACTIONS),
            resource_arns=[arn, *(f"{arn}/index/{name}" for name in self.index_names)],
        )
