"""A deploy over existing state on the emulators: what is kept, updated, created and deleted."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.conftest import START

pytestmark = pytest.mark.aws


def _app(*, drip: str | None = "user/signup", cron: str = "0 9 * * *") -> App:
    """``welcome`` always; ``drip`` (sleeps an hour, on a cron too) when given a trigger."""
    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup"))
    def welcome(ctx: Context) -> str:
        return "hi"

    if drip is not None:

        @app.function(id="drip", trigger=[TriggerEvent(drip), TriggerCron(cron)])
        def drip_fn(ctx: Context) -> str:
            ctx.step.sleep("nap", "1h")  # past SQS's 900 s: a Scheduler timer
            return "awake"

    return app


def _backend(h: Harness) -> AwsBackend:
    assert isinstance(h.backend, AwsBackend)
    return h.backend


def _queue_exists(backend: AwsBackend, name: str) -> bool:
    try:
        backend.clients["sqs"].get_queue_url(QueueName=name)
    except ClientError:
        return False
    return True


def _waiting(backend: AwsBackend, name: str) -> int:
    sqs = backend.clients["sqs"]
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def _rules(backend: AwsBackend) -> set[str]:
    listed = backend.clients["events"].list_rules(EventBusName=backend.resources.bus)
    return {r["Name"] for r in listed["Rules"]}


def _crons(backend: AwsBackend) -> dict[str, str]:
    scheduler = backend.clients["scheduler"]
    names = [s["Name"] for s in scheduler.list_schedules(GroupName="default")["Schedules"]]
    return {n: scheduler.get_schedule(Name=n)["ScheduleExpression"] for n in names}


def test_a_harness_opens_over_state_another_one_deployed(aws: AwsEmulators) -> None:
    first = Harness.aws(_app(), aws, start=START)
    first.send("user/signup", {"user_id": "u1"})
    second = Harness.aws(_app(), aws, start=START)  # was ResourceInUseException
    assert second.only_run("welcome").status == "Completed"


def test_a_removed_function_loses_its_queues_rule_and_schedules(aws: AwsEmulators) -> None:
    h = Harness.aws(_app(), aws, start=START)
    drip = _backend(h).resources.function("drip")
    assert drip.trigger_rule in _rules(_backend(h))

    h = h.redeploy(_app(drip=None))

    backend = _backend(h)
    assert not _queue_exists(backend, drip.queue)
    assert not _queue_exists(backend, drip.dlq)
    assert _queue_exists(backend, backend.resources.function("welcome").queue)
    assert drip.trigger_rule not in _rules(backend)
    assert _crons(backend) == {}


def test_a_deploy_updates_trigger_patterns_and_cron_expressions(aws: AwsEmulators) -> None:
    h = Harness.aws(_app(), aws, start=START)
    h = h.redeploy(_app(drip="user/upgraded", cron="30 7 * * *"))
    (name,) = _backend(h).resources.function("drip").schedules
    assert _crons(_backend(h)) == {name.name: "cron(30 7 * * ? *)"}

    h.send("user/signup", {"user_id": "u1"})
    assert h.runs("drip") == []
    h.send("user/upgraded", {"user_id": "u1"})
    assert len(h.runs("drip")) == 1


def test_kept_queues_hold_a_removed_functions_runs_until_it_is_back(aws: AwsEmulators) -> None:
    h = Harness.aws(_app(), aws, start=START)
    h.send("user/signup", {"user_id": "u1"})
    run_id = h.only_run("drip").id

    queue = _backend(h).resources.function("drip").queue

    h = h.redeploy(_app(drip=None), keep_queues=True)
    h.advance("2h")  # the nap's timer fires into the kept queue, which nothing reads
    assert h.run(run_id).status == "Running"
    assert _waiting(_backend(h), queue) == 1

    h = h.redeploy(_app())
    h.settle()
    assert h.run(run_id).status == "Completed"
