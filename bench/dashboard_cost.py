"""Benchmark: what one refresh of each view of `stepkit dashboard --aws` reads, in calls and RRU.

Deploys a small app on the emulators (DynamoDB Local + moto) through the AWS harness, gives it
three pages of runs (150 runs, 100 events, an open batch window, a concurrency line), then
calls each view of :class:`~runtime.control.aws.AwsControl` as the dashboard's API does and
counts every API call with botocore hooks and the read units DynamoDB reports for it
(:class:`aws_calls.Meter`: a strongly consistent read counts at least 1 RRU). A run's detail
is read twice: the first read loads the run, a refresh only catches up with the commits since
(the control plane keeps a run cache, as a worker does).

A refresh of the page is: functions, the runs page, the run shown, the dead-letter count, the
events page (its summaries, read from the event index alone: the newest page is of 40 KB
events, which a whole read would pay for) and the event keys. The hourly figures are for a
page left open and visible, refreshing every 10 s (360 refreshes; a hidden tab does not
refresh), priced at us-east-1 on-demand rates.

Prints figures; it is not a test. Needs the emulators (`scripts/install-test-deps.sh`).
Run: .venv/bin/python bench/dashboard_cost.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aws_calls import DDB_RRU, SQS_REQUEST, Meter

from runtime import App, Context, TriggerEvent
from runtime.cli.dashboard import AWS_PAGE_SIZE, AWS_REFRESH_SECONDS
from runtime.client import Deployment
from runtime.control.aws import AwsControl
from runtime.orchestration.protocols import RunQuery
from runtime.records import RunStatus
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import aws_emulators

REFRESH_SECONDS = AWS_REFRESH_SECONDS
PAGE = AWS_PAGE_SIZE  # the dashboard's runs page, and its events page, over AWS
RUNS = 150
BIG_EVENT_BYTES = 40_000

app = App("dashcost")


@app.function(id="signup", trigger=TriggerEvent("user/signup"))
def signup(ctx: Context) -> str:
    ctx.step.run("greet", lambda: {"greeting": "hi " + str(ctx.event.data.get("user_id"))})
    ctx.step.run("profile", lambda: {"plan": "free", "seats": 1})
    return "ok"


@app.function(id="drip", trigger=TriggerEvent("user/drip"), concurrency=1)
def drip(ctx: Context) -> None:
    ctx.step.run("first-mail", lambda: "sent")
    ctx.step.sleep("wait-a-day", "1d")


@app.function(id="receipts", trigger=TriggerEvent("shop/receipt"),
              batch_events={"max_size": 50, "timeout": "30s"})
def receipts(ctx: Context) -> int:
    return len(ctx.events)


def seed(h: Harness) -> str:
    """Three pages of runs, two of events, a window and a line; a running run's id."""
    h.send([{"name": "user/signup", "data": {"user_id": f"u{i}"}} for i in range(RUNS - 3)])
    h.send([{"name": "user/drip", "data": {}} for _ in range(3)])  # one runs, two in line
    h.settle()
    h.send({"name": "shop/receipt", "data": {"total": 12}})  # an open batch window
    # The newest page of events: large ones (kept inline up to 64 KiB), which the events
    # list must not read whole.
    h.send([{"name": "user/note", "data": {"text": "x" * BIG_EVENT_BYTES}}
            for _ in range(PAGE)])
    return next(r.id for r in h.runs("drip") if r.state.steps)


def view(meter: Meter, call: Callable[[], Any]) -> tuple[dict[str, int], float]:
    """The calls (by operation) and RRU of one call of a view."""
    meter.calls.clear()
    meter.rru = 0.0
    call()
    return dict(meter.calls), meter.rru


def main() -> None:
    with aws_emulators() as emulators:
        for key, value in emulators.env().items():
            os.environ[key] = value
        os.environ["STEPKIT_FUNCTIONS"] = "bench.dashboard_cost"
        h = Harness.aws(app, emulators)
        backend = h.backend
        assert isinstance(backend, AwsBackend)
        running = seed(h)
        event_id = backend.store.list_events(1)[0]["id"]
        r = backend.resources
        clients = {s: emulators.client(s) for s in ("dynamodb", "sqs", "events", "s3")}
        meter = Meter()
        for client in clients.values():
            meter.attach(client)
        control = AwsControl(Deployment(r.app_id, r.bus, r.table), clients=clients)
        views: list[tuple[str, Callable[[], Any], bool]] = [
            ("functions (windows)", control.functions, True),
            (f"runs, all, {PAGE}", lambda: control.list_runs(RunQuery(limit=PAGE)), True),
            (f"runs, one function, {PAGE}",
             lambda: control.list_runs(RunQuery(function_id="signup", limit=PAGE)), False),
            (f"runs, one status, {PAGE}",
             lambda: control.list_runs(RunQuery(status=RunStatus.COMPLETED, limit=PAGE)), False),
            ("run detail, first", lambda: control.run(running), False),
            ("run detail, refresh", lambda: control.run(running), True),
            ("dead letters, count", control.dead_letter_count, True),
            (f"events, {PAGE} (listed: summaries)",
             lambda: control.events(limit=PAGE, summary=True), True),
            (f"events, {PAGE}, whole (the CLI)", lambda: control.events(limit=PAGE), False),
            ("event keys", control.event_keys, True),
            ("event detail", lambda: control.event(event_id), False),
            ("dead letters, list (on demand)", control.dead_letters, False),
        ]
        total_rru, total_calls = 0.0, 0
        sqs_calls = 0
        print(f"{'view':34} {'RRU':>7}  calls")
        for name, call, in_refresh in views:
            calls, rru = view(meter, call)
            shown = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
            print(f"{name:34} {rru:7.1f}  {shown}")
            if in_refresh:
                total_rru += rru
                total_calls += sum(calls.values())
                sqs_calls += sum(n for op, n in calls.items() if op.startswith("sqs."))
        per_hour = 3600 // REFRESH_SECONDS
        print(f"\none refresh (marked views): {total_rru:.1f} RRU, {total_calls} calls "
              f"({sqs_calls} SQS)")
        cost = per_hour * (total_rru * DDB_RRU + sqs_calls * SQS_REQUEST)
        print(f"open and visible, every {REFRESH_SECONDS} s: {per_hour * total_rru:,.0f} RRU "
              f"and {per_hour * sqs_calls:,} SQS requests an hour = ${cost:.4f}/hour on demand; "
              f"{total_rru / REFRESH_SECONDS:.1f} RCU sustained if provisioned")
        h.close()


if __name__ == "__main__":
    main()
