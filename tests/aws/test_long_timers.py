"""Timers beyond SQS's 900 s delay go on one-time EventBridge Scheduler schedules, not hops."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.resources import AppResources, HandlerConfig
from runtime.backends.aws.timers import (
    MAX_INPUT_BYTES,
    SchedulerTimers,
    TimerError,
    at_expression,
    schedule_name,
)
from runtime.records import Message, MessageKind
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import AwsEmulators
from tests.conftest import START

pytestmark = pytest.mark.aws


def _napper(sleep: str) -> App:
    app = App("nap")

    @app.function(id="nap", trigger=TriggerEvent("nap/go"))
    def nap(ctx: Context) -> str:
        ctx.step.sleep("nap", sleep)
        return "awake"

    return app


class Calls:
    """Every request through the harness's clients, by ``service.Operation``.

    Receives that return nothing are left out: a real event source polls the same whether or
    not anyone sleeps.
    """

    def __init__(self, backend: AwsBackend) -> None:
        self.made: Counter[str] = Counter()
        for client in backend.clients.values():
            client.meta.events.register("after-call", self._count)

    def _count(self, model: Any, parsed: dict[str, Any], event_name: str, **_: Any) -> None:
        if model.name == "ReceiveMessage" and not parsed.get("Messages"):
            return
        self.made[f"{event_name.split('.')[1]}.{model.name}"] += 1


def _schedules(backend: AwsBackend) -> list[dict[str, Any]]:
    scheduler, group = backend.clients["scheduler"], backend.resources.schedule_group
    return [scheduler.get_schedule(Name=s["Name"], GroupName=group)
            for s in scheduler.list_schedules(GroupName=group)["Schedules"]]


def test_a_one_day_sleep_is_one_schedule_and_no_timer_hops(aws: AwsEmulators) -> None:
    h = Harness.aws(_napper("1d"), aws, start=START)
    backend = h.backend
    assert isinstance(backend, AwsBackend)
    calls = Calls(backend)
    h.send("nap/go")
    (schedule,) = _schedules(backend)
    due = START.timestamp() + 86400
    nap = backend.resources.function("nap")
    assert schedule["ScheduleExpression"] == at_expression(due)
    assert (schedule["ScheduleExpressionTimezone"], schedule["ActionAfterCompletion"]) == \
        ("UTC", "DELETE")
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    target = schedule["Target"]
    assert backend._urls_by_arn[target["Arn"]].endswith(f"/{nap.queue}")
    assert target["RoleArn"] == backend.timer_role_arn
    assert target["DeadLetterConfig"]["Arn"].endswith(f":{backend.resources.delivery_dlq}")
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400,
                                     "MaximumRetryAttempts": 185}
    wake = Message.from_json(json.loads(target["Input"]))
    assert (wake.kind, wake.due, wake.key) == (MessageKind.WAKE, due, "nap")
    assert schedule["Name"] == schedule_name(wake)
    sends_before = calls.made["sqs.SendMessageBatch"]
    invocations_before = calls.made["sqs.ReceiveMessage"]  # one per handler invocation

    h.advance("23h59m59s")
    assert h.only_run("nap").status == "Running"
    # Not one timer hop: no SQS send, no delivery, so no Lambda invocation, in the whole day.
    assert calls.made["sqs.SendMessageBatch"] == sends_before
    assert calls.made["sqs.ReceiveMessage"] == invocations_before
    assert calls.made["scheduler.CreateSchedule"] == 1
    h.advance("1s")
    assert h.only_run("nap").status == "Completed"
    assert _schedules(backend) == []  # deleted after it fired
    # The wake-up: the schedule's delivery, received by one invocation, which continues the run.
    assert calls.made["sqs.SendMessage"] == 1
    assert calls.made["scheduler.CreateSchedule"] == 1


def test_a_re_sent_message_creates_no_second_schedule(aws: AwsEmulators) -> None:
    h = Harness.aws(_napper("1d"), aws, start=START)
    backend = h.backend
    assert isinstance(backend, AwsBackend)
    h.send("nap/go")
    (schedule,) = _schedules(backend)
    wake = Message.from_json(json.loads(schedule["Target"]["Input"]))
    queue = next(c.service for c in backend.consumers
                 if c.service.config.function_id == "nap").orchestrator.queue
    answers: list[str] = []
    backend.clients["scheduler"].meta.events.register(
        "after-call.scheduler.CreateSchedule",
        lambda parsed, **_: answers.append(parsed.get("Error", {}).get("Code", "created")))
    # A redelivery re-sends its commit's outbox: the same message, to the same schedule,
    # whose ConflictException counts as sent.
    queue.send([wake])
    queue.send([wake])
    assert answers == ["ConflictException", "ConflictException"]
    assert len(_schedules(backend)) == 1
    h.advance("1d")
    assert h.only_run("nap").status == "Completed"


def test_a_ten_minute_sleep_stays_on_sqs(aws: AwsEmulators) -> None:
    h = Harness.aws(_napper("10m"), aws, start=START)
    backend = h.backend
    assert isinstance(backend, AwsBackend)
    delays: list[int] = []
    backend.clients["sqs"].meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **_: delays.extend(e.get("DelaySeconds", 0) for e in params["Entries"]))
    h.send("nap/go")
    assert _schedules(backend) == []
    assert 600 in delays
    h.advance("10m")
    assert h.only_run("nap").status == "Completed"


def test_a_message_too_large_for_a_schedule_hops_on_sqs(aws: AwsEmulators) -> None:
    h = Harness.aws(_napper("1d"), aws, start=START)
    backend = h.backend
    assert isinstance(backend, AwsBackend)
    queue = backend.consumers[-1].service.orchestrator.queue
    big = Message(MessageKind.WAKE, "nap", "r1", key="nap", due=START.timestamp() + 7200,
                  payload={"blob": "x" * MAX_INPUT_BYTES})
    delays: list[int] = []
    backend.clients["sqs"].meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **_: delays.extend(e["DelaySeconds"] for e in params["Entries"]))
    queue.send([big])
    assert _schedules(backend) == [] and delays == [900]


def test_scheduler_refusals_other_than_conflict_raise() -> None:
    class Throttled:
        def create_schedule(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}},
                              "CreateSchedule")

    timers = SchedulerTimers(Throttled, group="g", role_arn="arn:aws:iam::1:role/r",
                             queue_arn=lambda f: f"arn:aws:sqs:r:1:{f}", dlq_arn="arn:dlq")
    msg = Message(MessageKind.WAKE, "nap", "r1", key="nap", due=START.timestamp() + 7200)
    with pytest.raises(TimerError, match="ThrottlingException"):
        timers.schedule(msg, "{}")


@pytest.mark.parametrize("ident", ["0f" * 16, "flush-01JABCDEF-3", "x" * 200, "a/b:c d"])
def test_schedule_names_are_what_scheduler_accepts(ident: str) -> None:
    # moto accepts any name; AWS: 1-64 of [0-9a-zA-Z-_.].
    due = START.timestamp() + 86400.2
    name = schedule_name(Message(MessageKind.WAKE, "f", "r", id=ident, due=due))
    assert 1 <= len(name) <= 64
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
    assert name.endswith(f"-{int(START.timestamp()) + 86401}")
    assert name != schedule_name(Message(MessageKind.WAKE, "f", "r", id=ident, due=due + 5))


def test_at_expressions_are_utc_and_never_early() -> None:
    assert at_expression(START.timestamp() + 0.2) == "at(2026-03-02T08:00:01)"
    assert at_expression(START.timestamp()) == "at(2026-03-02T08:00:00)"


def test_handlers_without_a_timer_role_keep_hopping() -> None:
    app = _napper("1d")
    config = HandlerConfig("nap", "t", "b", "https://sqs/q", "nap", 30)
    assert SchedulerTimers.for_handler(AppResources.for_app(app), config, {}) is None
    config = HandlerConfig("nap", "t", "b", "https://sqs/q", "nap", 30,
                           queue_arn="arn:aws:sqs:eu-west-1:123456789012:nap-nap",
                           timer_role_arn="arn:aws:iam::123456789012:role/timers")
    timers = SchedulerTimers.for_handler(AppResources.for_app(app), config, {})
    assert timers is not None
    assert timers.queue_arn("nap") == "arn:aws:sqs:eu-west-1:123456789012:nap-nap"
    assert timers.dlq_arn == "arn:aws:sqs:eu-west-1:123456789012:nap-delivery-dlq"
    assert timers.group == "nap-schedules"
