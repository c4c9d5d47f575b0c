"""The run reaper in the synthesized template: stream, filter, mapping, grants, handler."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from infra.constructs.run_reaper import HANDLER, RETRY_ATTEMPTS
from runtime import App, TriggerEvent
from runtime.backends.aws.reaper import stream_filter
from tests.infra.test_stack import (
    Resources,
    actions,
    as_list,
    of_type,
    props,
    role_statements,
    synth,
)

# One worker synthesizes every stack (scripts/test.sh: --dist loadgroup): aws-cdk-lib and
# its jsii Node process load once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("cdk")

app = App("reapshop")


@app.function(id="one", trigger=TriggerEvent("a/b"))
def one(ctx: Any) -> None:
    return None


@pytest.fixture(scope="module")
def resources() -> Resources:
    return synth(app)[1]


def reaper(resources: Resources) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, props(v)) for k, v in of_type(resources, "AWS::Lambda::Function").items()
                if props(v)["Handler"] == HANDLER]
    return found


def test_the_table_streams_keys_to_a_filtered_mapping_with_bisect_retries_and_a_failure_queue(
    resources: Resources,
) -> None:
    ((table_id, table),) = of_type(resources, "AWS::DynamoDB::Table").items()
    assert props(table)["StreamSpecification"] == {"StreamViewType": "KEYS_ONLY"}
    logical_id, _ = reaper(resources)
    (m,) = [props(m) for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
            if props(m)["FunctionName"] == {"Ref": logical_id}]
    assert m["EventSourceArn"] == {"Fn::GetAtt": [table_id, "StreamArn"]}
    assert m["StartingPosition"] == "TRIM_HORIZON"
    assert m["BisectBatchOnFunctionError"] is True
    assert m["MaximumRetryAttempts"] == RETRY_ATTEMPTS
    (pattern,) = m["FilterCriteria"]["Filters"]
    assert json.loads(pattern["Pattern"]) == stream_filter() == {
        "eventName": ["REMOVE"],
        "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
        "dynamodb": {"Keys": {"sk": {"S": ["RUN"]}}},
    }
    failed = m["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert props(resources[failed])["SqsManagedSseEnabled"] is True
    alarms = [props(a) for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
              if a["Properties"].get("Dimensions", [{}])[0].get("Value") ==
              {"Fn::GetAtt": [failed, "QueueName"]}]
    assert [(a["MetricName"], a["Threshold"], a["ComparisonOperator"]) for a in alarms] == [
        ("ApproximateNumberOfMessagesVisible", 0, "GreaterThanThreshold")
    ]


def test_the_reaper_may_only_read_keys_and_delete_on_the_table(resources: Resources) -> None:
    ((table_id, _),) = of_type(resources, "AWS::DynamoDB::Table").items()
    _, p = reaper(resources)
    assert p["Environment"]["Variables"]["STEPKIT_TABLE"] == {"Ref": table_id}
    granted: dict[str, list[Any]] = {}
    for s in role_statements(resources, p["Role"]):
        assert s["Effect"] == "Allow"
        for a in actions(s):
            granted.setdefault(a, []).extend(as_list(s["Resource"]))
    table_arn = {"Fn::GetAtt": [table_id, "Arn"]}
    stream_arn = {"Fn::GetAtt": [table_id, "StreamArn"]}
    dynamodb = {a: r for a, r in granted.items() if a.startswith("dynamodb:")}
    assert dynamodb == {
        "dynamodb:Query": [table_arn],  # the table only: no index
        "dynamodb:GetItem": [table_arn],
        "dynamodb:BatchWriteItem": [table_arn],
        "dynamodb:DescribeStream": [stream_arn],
        "dynamodb:GetRecords": [stream_arn],
        "dynamodb:GetShardIterator": [stream_arn],
        "dynamodb:ListStreams": [stream_arn],
    }
    others = {a.split(":")[0] for a in granted} - {"dynamodb"}
    assert others == {"logs", "sqs"}  # its log group; sending to its failure queue
    assert all(a in ("sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl")
               for a in granted if a.startswith("sqs:"))


def test_the_handler_the_template_names_exists() -> None:
    module, name = HANDLER.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name))
