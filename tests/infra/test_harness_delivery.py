"""The emulator harness delivers every queue as the synthesized stack deploys it.

Batch size (the event source mapping's), visibility timeout and redrive count (the queue's),
read from the template and from the queues and consumers the harness creates.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from infra.stack import StackSettings, StepkitStack
from runtime import App, AwsOptions, Context, TriggerEvent
from runtime.orchestration.clock import FakeClock
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.infra.templates import flat

# One worker synthesizes every stack (see test_stack.py); the harness needs the emulators.
pytestmark = [pytest.mark.xdist_group("cdk"), pytest.mark.aws]

#: Queue name -> (batch size, visibility timeout, max receives).
Deliveries = dict[str, tuple[int, int, int]]


def _app() -> App:
    app = App("shop")

    def noop(ctx: Context) -> None:
        return None

    app.function(id="plain", trigger=TriggerEvent("a/b"))(noop)
    app.function(id="batched", trigger=TriggerEvent("a/b"),
                 aws=AwsOptions(sqs_batch_size=3, timeout_s=20))(noop)
    return app


def _deployed(app: App) -> Deliveries:
    """Each stepkit queue's delivery, from the synthesized template."""
    stack = StepkitStack(cdk.App(), "test", app=app, settings=StackSettings(bundle=False))
    resources: dict[str, Any] = flat(stack)["Resources"]
    batch = {}
    for r in resources.values():
        arn = r.get("Properties", {}).get("EventSourceArn", {})
        if r["Type"] == "AWS::Lambda::EventSourceMapping" and "Fn::GetAtt" in arn:
            batch[arn["Fn::GetAtt"][0]] = r["Properties"]["BatchSize"]
    found = {}
    for logical_id, r in resources.items():
        p = r.get("Properties", {})
        if r["Type"] == "AWS::SQS::Queue" and logical_id in batch:
            found[p["QueueName"]] = (batch[logical_id], p["VisibilityTimeout"],
                                     p["RedrivePolicy"]["maxReceiveCount"])
    return found


def _played(app: App, emulators: AwsEmulators) -> Deliveries:
    """Each queue's delivery as the harness plays it."""
    backend = AwsBackend(app, emulators, FakeClock())
    sqs = backend.clients["sqs"]
    found = {}
    for c in backend.consumers:
        attrs = sqs.get_queue_attributes(QueueUrl=c.url, AttributeNames=["All"])["Attributes"]
        found[c.url.rsplit("/", 1)[-1]] = (
            c.delivery.batch_size, int(attrs["VisibilityTimeout"]),
            int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"]))
    return found


def test_the_harness_delivers_each_queue_as_the_stack_deploys_it(aws: AwsEmulators) -> None:
    app = _app()
    deployed = _deployed(app)
    assert deployed == _played(app, aws)
    assert deployed["shop-batched"] == (3, 120, 5)  # the check saw a function's own options
    assert deployed["shop-router"][0] == 10
