"""The harness delivers each queue as the stack deploys it (``QueueDelivery``).

Batch size per invocation, visibility timeout and redrive count are each queue's own: a
function's ``aws.sqs_batch_size`` (default 1) and six times its timeout, the router's ten
and six times its 30 s. A harness with one setting for every queue would run a burst of
keyed steps one after another in one invocation, which production never does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from runtime import App, AwsOptions, Context, TriggerEvent
from runtime.backends.aws.resources import MAX_RECEIVES, AppResources, QueueDelivery
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators

pytestmark = pytest.mark.aws


def _burst_app() -> App:
    app = App("burst")

    @app.function(id="keyed", trigger=TriggerEvent("sync/go"),
                  concurrency={"limit": 1, "key": "event.data.user"})
    def keyed(ctx: Context) -> str:
        return str(ctx.step.run("sync", lambda: ctx.event.data["user"]))

    @app.function(id="threes", trigger=TriggerEvent("sync/go"),
                  aws=AwsOptions(sqs_batch_size=3, timeout_s=20))
    def threes(ctx: Context) -> int:
        return int(ctx.step.run("count", lambda: 1))

    return app


def _count_records(backend: AwsBackend) -> dict[str, list[int]]:
    """Records per handler invocation, by function (``router`` for the router)."""
    sizes: dict[str, list[int]] = defaultdict(list)
    for c in backend.consumers:
        real, name = c.service.handle_batch, c.service.config.function_id or "router"

        def counting(event: Any, context: Any, *, router: bool, _real: Any = real,
                     _name: str = name) -> Any:
            sizes[_name].append(len(event["Records"]))
            return _real(event, context, router=router)

        c.service.handle_batch = counting  # type: ignore[method-assign]
    return sizes


def _backend(h: Harness) -> AwsBackend:
    assert isinstance(h.backend, AwsBackend)
    return h.backend


def test_each_queue_is_invoked_with_its_own_batch_size(aws: AwsEmulators) -> None:
    h = Harness.aws(_burst_app(), aws)
    sizes = _count_records(_backend(h))
    h.send([{"name": "sync/go", "data": {"user": f"u{i}"}} for i in range(7)])
    assert {r.status for r in h.runs()} == {"Completed"}
    # Seven keys, seven runs at once on AWS: each record is an invocation of its own.
    assert set(sizes["keyed"]) == {1}
    assert len(sizes["keyed"]) >= 7
    assert max(sizes["threes"]) == 3 and all(n <= 3 for n in sizes["threes"])
    assert max(sizes["router"]) > 3  # the router's 10


def test_queues_have_the_deployed_visibility_timeout_and_redrive(aws: AwsEmulators) -> None:
    app = _burst_app()
    backend = _backend(Harness.aws(app, aws))
    resources = AppResources.for_app(app)
    expected = {resources.router_queue: QueueDelivery(10, 180, MAX_RECEIVES),
                resources.function("keyed").queue: QueueDelivery(1, 360, MAX_RECEIVES),
                resources.function("threes").queue: QueueDelivery(3, 120, MAX_RECEIVES)}
    sqs = backend.clients["sqs"]
    found = {}
    for c in backend.consumers:
        attrs = sqs.get_queue_attributes(QueueUrl=c.url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(f":{c.dlq_url.rsplit('/', 1)[-1]}")
        found[c.url.rsplit("/", 1)[-1]] = QueueDelivery(
            c.delivery.batch_size, int(attrs["VisibilityTimeout"]),
            int(redrive["maxReceiveCount"]))
    assert found == expected


def test_a_failed_record_is_due_again_after_its_queue_s_visibility_timeout(
    aws: AwsEmulators,
) -> None:
    h = Harness.aws(_burst_app(), aws)
    backend = _backend(h)
    (threes,) = [c for c in backend.consumers if c.service.config.function_id == "threes"]
    real = threes.service.handle_batch
    failed: list[str] = []

    def fail_once(event: Any, context: Any, *, router: bool) -> Any:
        if failed:
            return real(event, context, router=router)
        failed.extend(r["messageId"] for r in event["Records"])
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed]}

    threes.service.handle_batch = fail_once  # type: ignore[method-assign]
    start = h.clock.now()
    h.send({"name": "sync/go", "data": {"user": "a"}})
    due = backend.next_due()
    assert failed and due is not None and due - start == pytest.approx(120)
    h.advance("2m")
    assert h.only_run("threes").status == "Completed"
