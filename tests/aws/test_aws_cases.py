"""AWS-path cases: races, poison messages, crashes around the write, SQS delay limits, sizes."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from runtime import App, Context, InvalidEventError, TriggerEvent
from runtime.backends.aws.bus import EventBridgeBus
from runtime.backends.aws.resources import ENV_APP, ENV_BUS, ENV_QUEUE_URL, ENV_TABLE, HandlerConfig
from runtime.errors import ConfigurationError
from runtime.messages import Deferral, deferred
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend, aws_cron_to_unix
from stepkit_emulators.emulators import AwsEmulators
from stepkit_emulators.lambda_events import sqs_lambda_event
from tests.conftest import START

pytestmark = pytest.mark.aws


def _harness(app: App, aws: AwsEmulators, **options: Any) -> Harness:
    return Harness.aws(app, aws, start=START, **options)


def _backend(h: Harness) -> AwsBackend:
    assert isinstance(h.backend, AwsBackend)
    return h.backend


def test_two_lambdas_racing_the_same_step_record_it_once(aws: AwsEmulators) -> None:
    app = App("race")
    entered = threading.Barrier(2, timeout=10)
    calls: list[str] = []

    def charge() -> str:
        calls.append(threading.current_thread().name)
        entered.wait()  # both Lambdas are inside the step at the same time
        return "charged"

    @app.function(id="pay", trigger=TriggerEvent("pay/go"))
    def pay(ctx: Context) -> str:
        return ctx.step.run("charge", charge)

    h = _harness(app, aws)
    h.send("pay/go", settle=False)
    backend = _backend(h)
    consumer = next(c for c in backend.consumers if c.service.config.function_id == "pay")
    got = backend.clients["sqs"].receive_message(QueueUrl=consumer.url, MaxNumberOfMessages=1)
    event = sqs_lambda_event(got["Messages"], queue_arn=consumer.arn, region=backend.region)
    # The same record delivered to two concurrent invocations (two Lambda containers), as a
    # redelivery (a first copy that finds the run created leaves it to its creator).
    # (sent again after a pushback: a receive count of 2 would say a delivery died in it)
    rivals = [backend._service("pay", consumer.url) for _ in range(2)]
    for record in event["Records"]:
        msg = rivals[0].message_from_body(record["body"])
        again = deferred(msg, Deferral(pushbacks=1), h.clock.now())
        record["body"] = json.dumps(again.to_json())
    results: list[dict[str, Any]] = []

    def invoke(service: Any) -> None:
        results.append(service.handle_batch(event, None, router=False))

    threads = [
        threading.Thread(target=invoke, args=(s,), name=f"lambda-{i}") for i, s in enumerate(rivals)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(calls) == 2
    assert all(r["batchItemFailures"] == [] for r in results)
    h.settle()
    run = h.only_run("pay")
    assert run.status == "Completed" and run.output == "charged"
    assert run.state.run.version == 2  # one commit for the step, one for the completion
    assert run.step("charge").attempt == 0


def test_poison_message_reaches_the_dead_letter_queue(aws: AwsEmulators) -> None:
    app = App("poison")

    @app.function(id="f", trigger=TriggerEvent("a/b"))
    def f(ctx: Context) -> None:
        return None

    h = _harness(app, aws)
    backend = _backend(h)
    consumer = next(c for c in backend.consumers if c.service.config.function_id == "f")
    backend.clients["sqs"].send_message(QueueUrl=consumer.url, MessageBody='{"not": "stepkit"}')
    h.settle()  # a record that can never succeed goes to the DLQ at once, not after 5 tries
    assert backend.dead_letter_bodies() == ['{"not": "stepkit"}']
    # and the queue goes on working
    h.send("a/b")
    assert h.only_run("f").status == "Completed"


class CrashAfterStep(BaseException):
    """The Lambda dies between running a step and writing its result."""


def test_handler_crash_after_the_step_ran_before_the_write(aws: AwsEmulators) -> None:
    app = App("crash")
    calls: list[int] = []

    @app.function(id="f", trigger=TriggerEvent("a/b"))
    def f(ctx: Context) -> int:
        return ctx.step.run("side-effect", lambda: calls.append(1) or len(calls))

    h = _harness(app, aws)
    backend = _backend(h)
    service = next(c.service for c in backend.consumers if c.service.config.function_id == "f")
    store = service.orchestrator.store
    real_commit = store.commit
    crashed: list[bool] = []

    def commit_then_maybe_crash(run_id: str, commit: Any) -> bool:
        if commit.steps and not crashed:
            crashed.append(True)
            raise CrashAfterStep
        return real_commit(run_id, commit)

    store.commit = commit_then_maybe_crash  # type: ignore[method-assign]
    h.send("a/b", settle=False)
    with pytest.raises(CrashAfterStep):
        h.settle()
    assert h.only_run("f").steps == {}
    h.advance("6m")  # the batch's visibility timeout passes; the record is delivered again
    run = h.only_run("f")
    assert run.status == "Completed"
    assert calls == [1, 1]  # the step ran again (at least once) ...
    assert run.output == 2 and run.step("side-effect").output == 2  # ... and was recorded once


def test_twenty_minute_sleep_crosses_the_sqs_delay_limit_by_hops(aws: AwsEmulators) -> None:
    app = App("nap")

    @app.function(id="nap", trigger=TriggerEvent("nap/go"))
    def nap(ctx: Context) -> str:
        ctx.step.sleep("twenty", "20m")
        return "awake"

    # Without a timer role (timers on Scheduler: tests/aws/test_long_timers.py).
    h = _harness(app, aws, timers=False)
    backend = _backend(h)
    sent: list[int] = []
    service = next(c.service for c in backend.consumers if c.service.config.function_id == "nap")
    queue: Any = service.orchestrator.queue
    original = queue.client.send_message_batch

    def spy(**kwargs: Any) -> Any:
        # (the bus sends stepkit's own events to the router queue through this client too)
        sent.extend(e["DelaySeconds"] for e in kwargs["Entries"] if "DelaySeconds" in e)
        return original(**kwargs)

    queue.client.send_message_batch = spy
    h.send("nap/go")
    h.advance("19m")
    assert h.only_run("nap").status == "Running"
    h.advance("2m")
    assert h.only_run("nap").status == "Completed"
    # The wake-up: one full SQS delay (the 900 s cap), then one hop for what was left of the
    # 1200 s (less than 300 s, as the hop ran when the harness reached it), then the continue.
    assert sent[0] == 900
    assert 0 < sent[1] <= 300
    assert sent[2:] == [0]


def test_an_event_over_eventbridges_256_kb_needs_the_payload_bucket(aws: AwsEmulators) -> None:
    app = App("big")
    h = _harness(app, aws)
    backend = _backend(h)
    # Just under 256 KB of event, but the EventBridge entry (plus Source and DetailType) is over.
    event = {"id": "e1", "name": "big/event", "data": {"blob": ""}, "user": {}, "ts": 1}
    event["data"]["blob"] = "x" * (262_144 - len(json.dumps(event, separators=(",", ":"))))
    bare = EventBridgeBus(app.id, backend.resources.bus, backend.clients["events"])
    with pytest.raises(InvalidEventError, match=r"EventBridge entry is .* over the 262144-byte "
                                                r"limit; with a payload bucket"):
        bare.publish([event])
    # With the bucket (as deployed), the entry is a reference and the object the event.
    sent: list[dict[str, Any]] = []
    backend.clients["events"].meta.events.register(
        "provide-client-params.events.PutEvents",
        lambda params, **_: sent.extend(params["Entries"]))
    backend.router.bus.publish([event])
    detail = json.loads(sent[0]["Detail"])
    assert sorted(detail) == ["$stepkit_payload", "id", "name", "ts"]
    assert detail["$stepkit_payload"]["key"].startswith("runs/e1/")


def test_plain_put_events_with_the_documented_entry_shape_starts_a_run(
    aws: AwsEmulators,
) -> None:
    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup"))
    def welcome(ctx: Context) -> str:
        return ctx.event.data["user_id"]

    h = _harness(app, aws)
    backend = _backend(h)
    entry = {
        "Source": "shop",
        "DetailType": "user/signup",
        "Detail": json.dumps(
            {
                "id": "evt-42",
                "name": "user/signup",
                "data": {"user_id": "ada"},
                "user": {},
                "ts": int(START.timestamp() * 1000),
            }
        ),
        "EventBusName": backend.resources.bus,
    }
    backend.clients["events"].put_events(Entries=[entry])
    h.settle()
    assert h.only_run("welcome").output == "ada"


def test_handler_batches_hold_several_records(aws: AwsEmulators) -> None:
    app = App("batch")
    batch_sizes: list[int] = []

    @app.function(id="f", trigger=TriggerEvent("a/b"))
    def f(ctx: Context) -> None:
        return None

    h = _harness(app, aws)
    backend = _backend(h)
    for c in backend.consumers:
        real = c.service.handle_batch

        def counting(event: Any, context: Any, *, router: bool, _real: Any = real) -> Any:
            batch_sizes.append(len(event["Records"]))
            return _real(event, context, router=router)

        c.service.handle_batch = counting  # type: ignore[method-assign]
    h.send([{"name": "a/b", "data": {"i": i}} for i in range(8)])
    assert len(h.runs("f")) == 8
    assert max(batch_sizes) > 1


def test_missing_configuration_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=f"{ENV_TABLE}, {ENV_BUS}"):
        HandlerConfig.from_env({ENV_APP: "shop", ENV_QUEUE_URL: "https://q"})


def test_scheduler_expressions_round_trip_to_unix_cron() -> None:
    assert aws_cron_to_unix("cron(0 9 ? * 2-6 *)") == "0 9 * * 1-5"
    assert aws_cron_to_unix("cron(0/15 * * * ? *)") == "0-59/15 * * * *"
    assert aws_cron_to_unix("cron(0 8 1 * ? *)") == "0 8 1 * *"
    assert aws_cron_to_unix("cron(30 7 ? * 1,7 *)") == "30 7 * * 0,6"


def test_put_events_with_only_data_in_the_detail_starts_one_run(aws: AwsEmulators) -> None:
    app = App("shop")

    @app.function(id="welcome", trigger=TriggerEvent("user/signup"))
    def welcome(ctx: Context) -> str:
        return ctx.event.id

    @app.function(id="await-pay", trigger=TriggerEvent("order/created"))
    def await_pay(ctx: Context) -> Any:
        got = ctx.step.wait_for_event("pay", event="user/signup", timeout="1h")
        return got.id if got else None

    h = _harness(app, aws)
    h.send("order/created")
    backend = _backend(h)
    entry = {"Source": "shop", "DetailType": "user/signup", "Detail": json.dumps({"data": {}}),
             "EventBusName": backend.resources.bus}
    out = backend.clients["events"].put_events(Entries=[entry])
    h.settle()
    # The function's queue and the router got the same envelope and agreed on the event id.
    run = h.only_run("welcome")
    assert run.output == out["Entries"][0]["EventId"]
    assert h.only_run("await-pay").output == run.output


def test_timer_hops_of_a_long_sleep_never_touch_run_state(aws: AwsEmulators) -> None:
    app = App("nap")

    @app.function(id="nap", trigger=TriggerEvent("nap/go"))
    def nap(ctx: Context) -> str:
        ctx.step.sleep("long", "2h")
        return "awake"

    h = _harness(app, aws, timers=False)  # hops: a Lambda without a timer role
    backend = _backend(h)
    h.send("nap/go")
    ddb_calls: list[str] = []
    backend.clients["dynamodb"].meta.events.register(
        "before-call.dynamodb", lambda model, **_: ddb_calls.append(model.name)
    )
    handled = 0
    for _ in range(7):  # the wake-up is delivered every 900 s and hops on, 7 times
        h.clock.advance("900s")
        handled += h.settle()
    assert handled == 7
    assert ddb_calls == []  # not one read or write of run state while it hops
    h.clock.advance("900s")  # 7200 s: the 8th delivery is due and ends the sleep
    h.settle()
    assert "TransactWriteItems" in ddb_calls
    assert h.only_run("nap").status == "Completed"


def test_forged_control_messages_and_system_events_on_the_bus_start_and_resolve_nothing(
    aws: AwsEmulators,
) -> None:
    # Anyone allowed to PutEvents on the app's bus tries to start a run by a forged START
    # message, trigger an on_failure handler by a forged function.failed, and smuggle a
    # system event under an app event's DetailType.
    app = App("shop")
    failures: list[str] = []

    def notify(ctx: Context) -> None:
        failures.append(ctx.event.data["run_id"])

    @app.function(id="charge", trigger=TriggerEvent("order/paid"), on_failure=notify)
    def charge(ctx: Context) -> str:
        return ctx.step.run("charge", lambda: "charged")

    h = _harness(app, aws)
    backend = _backend(h)
    ts = int(START.timestamp() * 1000)
    start = {"type": "message", "kind": "start", "function_id": "charge", "run_id": "forged-1",
             "id": "start-forged-1", "payload": {"events": [
                 {"id": "x", "name": "order/paid", "data": {}, "user": {}, "ts": ts}]}}
    failed = {"id": "f1", "name": "stepkit/function.failed", "ts": ts, "user": {},
              "data": {"function_id": "charge", "run_id": "victim", "error": {"name": "X"}}}
    smuggled = {**failed, "id": "f3"}
    entries = [("stepkit/message", start), ("stepkit/function.failed", failed),
               ("order/paid", smuggled)]
    out = backend.clients["events"].put_events(Entries=[
        {"Source": "shop", "DetailType": kind, "Detail": json.dumps(detail),
         "EventBusName": backend.resources.bus} for kind, detail in entries])
    assert out["FailedEntryCount"] == 0  # the bus accepts them: the platform must refuse
    h.settle()
    assert failures == []
    assert h.runs() == []
    # The smuggled one reached the charge queue (its DetailType matches the trigger) and
    # the router: both refused it, naming why, into their DLQs.
    refused = backend.dead_letter_bodies()
    assert len(refused) == 2 and all('"id": "f3"' in b for b in refused), refused
    # A real event still starts a run.
    h.send("order/paid", {})
    assert h.only_run("charge").status == "Completed" and failures == []
