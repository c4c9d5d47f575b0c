"""Probe DynamoDB Local: conditional writes, transactions, GSIs, TTL, limits, startup time.

Run: ``.venv/bin/python -m tests.aws_emulators.probe_dynamodb`` (prints what it finds;
the results are written up in FINDINGS.md).
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import ClientError

from stepkit_emulators.emulators import DynamoDBLocal


def show(title: str, value: Any) -> None:
    print(f"\n== {title}\n{json.dumps(value, indent=2, default=str)}")


def error_view(error: ClientError) -> dict[str, Any]:
    response = dict(error.response)
    response.pop("ResponseMetadata", None)
    return {"exception": type(error).__name__, "response": response}


def main() -> None:
    import boto3

    timings = []
    for _ in range(3):
        with DynamoDBLocal() as probe:
            assert probe.startup_seconds is not None
            timings.append(round(probe.startup_seconds, 2))
    show("startup seconds (spawn -> ListTables answers), 3 runs", timings)

    with DynamoDBLocal() as ddb:
        show("command", ddb.command(ddb.port or 0))
        client = boto3.client(
            "dynamodb",
            endpoint_url=ddb.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_table(
            TableName="runs",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "gsi1pk", "AttributeType": "S"},
                {"AttributeName": "gsi1sk", "AttributeType": "N"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "gsi1",
                    "KeySchema": [
                        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        desc = client.describe_table(TableName="runs")["Table"]
        show(
            "table status right after create",
            {
                "TableStatus": desc["TableStatus"],
                "GSI": [(g["IndexName"], g["IndexStatus"]) for g in desc["GlobalSecondaryIndexes"]],
            },
        )

        # --- conditional put -----------------------------------------------------------------
        item = {"pk": {"S": "run#1"}, "sk": {"S": "meta"}, "v": {"N": "1"}}
        client.put_item(TableName="runs", Item=item, ConditionExpression="attribute_not_exists(pk)")
        try:
            client.put_item(
                TableName="runs",
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            show("second conditional put_item", error_view(error))
            print(
                "is client.exceptions.ConditionalCheckFailedException:",
                isinstance(error, client.exceptions.ConditionalCheckFailedException),
            )

        # --- transactions --------------------------------------------------------------------
        def txn(token: str | None = None) -> None:
            kwargs: dict[str, Any] = {
                "TransactItems": [
                    {
                        "Put": {
                            "TableName": "runs",
                            "Item": {"pk": {"S": "run#2"}, "sk": {"S": "step#0001"}},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": "runs",
                            "Key": {"pk": {"S": "run#1"}, "sk": {"S": "meta"}},
                            "UpdateExpression": "SET v = v + :one",
                            "ConditionExpression": "v = :expected",
                            "ExpressionAttributeValues": {
                                ":one": {"N": "1"},
                                ":expected": {"N": "1"},
                            },
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                    {
                        "ConditionCheck": {
                            "TableName": "runs",
                            "Key": {"pk": {"S": "run#1"}, "sk": {"S": "lease"}},
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                ]
            }
            if token:
                kwargs["ClientRequestToken"] = token
            client.transact_write_items(**kwargs)

        client.put_item(TableName="runs", Item={"pk": {"S": "run#1"}, "sk": {"S": "lease"}})
        txn()
        print("\nfirst transact_write_items: ok")
        try:
            txn()
        except ClientError as error:
            show("second transact_write_items (both conditions now false)", error_view(error))
            print(
                "is client.exceptions.TransactionCanceledException:",
                isinstance(error, client.exceptions.TransactionCanceledException),
            )

        # idempotency token: same token + same request within 10 min -> success, no re-apply
        client.delete_item(TableName="runs", Key={"pk": {"S": "run#2"}, "sk": {"S": "step#0001"}})
        client.put_item(TableName="runs", Item=item)  # v back to 1
        txn("tok-1")
        try:
            txn("tok-1")
            print("\nClientRequestToken replay: succeeded (idempotent)")
        except ClientError as error:
            show("ClientRequestToken replay", error_view(error))
        v = client.get_item(TableName="runs", Key={"pk": {"S": "run#1"}, "sk": {"S": "meta"}})
        print("v after token replay:", v["Item"]["v"])

        # 101 actions (real limit is 100)
        try:
            client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": "runs", "Item": {"pk": {"S": f"x{i}"}, "sk": {"S": "s"}}}}
                    for i in range(101)
                ]
            )
            print("\n101-item transaction: accepted")
        except ClientError as error:
            show("101-item transaction", error_view(error))

        # 400 KB item limit
        try:
            client.put_item(
                TableName="runs",
                Item={"pk": {"S": "big"}, "sk": {"S": "s"}, "b": {"S": "x" * 410_000}},
            )
            print("\n410 kB item: accepted")
        except ClientError as error:
            show("410 kB item", error_view(error))

        # --- GSI -----------------------------------------------------------------------------
        for n in range(3):
            client.put_item(
                TableName="runs",
                Item={
                    "pk": {"S": f"timer#{n}"},
                    "sk": {"S": "t"},
                    "gsi1pk": {"S": "due"},
                    "gsi1sk": {"N": str(1000 + n)},
                },
            )
        result = client.query(
            TableName="runs",
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :p AND gsi1sk <= :t",
            ExpressionAttributeValues={":p": {"S": "due"}, ":t": {"N": "1001"}},
        )
        show("GSI query gsi1pk=due AND gsi1sk<=1001", [i["pk"]["S"] for i in result["Items"]])

        # --- TTL -----------------------------------------------------------------------------
        ttl = client.update_time_to_live(
            TableName="runs", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
        )
        show("update_time_to_live", ttl["TimeToLiveSpecification"])
        show(
            "describe_time_to_live",
            client.describe_time_to_live(TableName="runs")["TimeToLiveDescription"],
        )
        client.put_item(
            TableName="runs",
            Item={
                "pk": {"S": "old"},
                "sk": {"S": "s"},
                "expires": {"N": str(int(time.time()) - 3600)},
            },
        )
        time.sleep(5)
        still = client.get_item(TableName="runs", Key={"pk": {"S": "old"}, "sk": {"S": "s"}})
        print("\nitem with expires 1 h in the past, read 5 s later: present =", "Item" in still)


if __name__ == "__main__":
    main()
