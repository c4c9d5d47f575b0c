"""Benchmark: AWS API calls, capacity and cost per step on the AWS backend (emulated).

Runs a linear N-step function (N = 10, 100, 1000) through the real Lambda handlers on
DynamoDB Local + moto, counts every API call with botocore event hooks, reads the DynamoDB
capacity each call consumed, and prices it at public us-east-1 rates, in three modes:
``default`` (one warm consumer per function: every load after the first reads only the
commits since), ``checkpointing`` and ``cold`` (every invocation on a fresh container, as at
production concurrency, where a run's next message goes to any container: every load reads
the run's snapshot and the log after it).

Prints figures; it is not a test. Needs the emulators (`scripts/install-test-deps.sh`).
Run: .venv/bin/python bench/aws_calls.py [--sizes 10 100 1000]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.table import RUN_PREFIX, SNAP_SK, item_bytes, key
from runtime.deploy import AwsOptions
from runtime.orchestration.clock import FakeClock
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import aws_emulators

# Public prices, us-east-1 (USD).
LAMBDA_REQUEST = 0.20 / 1e6
LAMBDA_GB_SECOND_ARM = 0.0000133334
SQS_REQUEST = 0.40 / 1e6
EVENTBRIDGE_EVENT = 1.00 / 1e6
DDB_WRU = 0.625 / 1e6
DDB_RRU = 0.125 / 1e6
LAMBDA_MEMORY_GB = AwsOptions().memory_mb / 1024  # the default (512 MB: runtime/deploy.py)
_CAPACITY_OPS = {"Query", "GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem"}
_READ_OPS = {"Query", "GetItem", "BatchGetItem"}


class Meter:
    """Counts API calls and DynamoDB capacity through botocore hooks."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.rru = 0.0
        self.wru = 0.0
        self.entries = 0
        self.empty_receives = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params", self._params)
        client.meta.events.register("after-call.dynamodb", self._capacity)
        client.meta.events.register("after-call.sqs.ReceiveMessage", self._received)

    def billed(self, op: str) -> int:
        """Calls of ``op`` AWS bills: the harness's empty polls are left out.

        A real event source polls the queue the same whether or not a run is going, so an
        empty receive is no cost of a step.
        """
        return self.calls[op] - (self.empty_receives if op == "sqs.ReceiveMessage" else 0)

    def _received(self, parsed: dict[str, Any], **_: Any) -> None:
        if not parsed.get("Messages"):
            self.empty_receives += 1

    def _params(self, params: dict[str, Any], model: Any, event_name: str, **_: Any) -> None:
        service = event_name.split(".")[1]
        self.calls[f"{service}.{model.name}"] += 1
        if model.name == "PutEvents":
            self.entries += len(params.get("Entries", []))
        if service != "dynamodb":
            return
        if model.name == "TransactWriteItems":
            # DynamoDB Local reports 2 units per transaction whatever it holds, so count as
            # AWS bills: 2 WRU per KB (rounded up) of each item written. An Update is billed
            # on the item's size; our updates touch the run item, which stays under 1 KB
            # unless the output is large (the output is set once, at the end). A commit of
            # steps alone is a conditional PutItem, whose units DynamoDB Local reports.
            for action in params["TransactItems"]:
                item = action.get("Put", {}).get("Item")
                size = item_bytes(item) if item else 1024
                self.wru += 2 * max(1, -(-size // 1024))
        elif model.name in _CAPACITY_OPS:
            params["ReturnConsumedCapacity"] = "TOTAL"

    def _capacity(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems":
            return
        used = parsed.get("ConsumedCapacity") or []
        used = used if isinstance(used, list) else [used]
        units = sum(c.get("CapacityUnits", 0.0) for c in used)
        if model.name in _READ_OPS:
            # A strongly consistent read is billed at least 1 RRU even when it finds nothing
            # (DynamoDB Local reports 0 for an empty Query).
            self.rru += max(units, 1.0)
        else:
            self.wru += units


def steps_app(n: int, *, checkpointing: bool = False) -> App:
    app = App("bench")

    @app.function(id="steps", trigger=TriggerEvent("bench/go"), checkpointing=checkpointing)
    def steps(ctx: Context) -> int:
        total = 0
        for i in range(n):
            total += ctx.step.run(f"s{i}", lambda i=i: i)
        return total

    return app


def measure(emulators: Any, n: int, *, cold: bool = False,
            checkpointing: bool = False) -> dict[str, Any]:
    emulators.reset()
    backend = AwsBackend(steps_app(n, checkpointing=checkpointing), emulators, FakeClock())
    invocations = 0
    busy = 0.0
    for c in backend.consumers:
        real, store = c.service.handle_batch, c.service.orchestrator.store

        def timed(event: Any, context: Any, *, router: bool, _real: Any = real,
                  _store: Any = store) -> Any:
            nonlocal invocations, busy
            invocations += 1
            if cold:  # a fresh container: nothing cached
                _store.drop_cache()
            t0 = time.perf_counter()
            try:
                return _real(event, context, router=router)
            finally:
                busy += time.perf_counter() - t0

        c.service.handle_batch = timed  # type: ignore[method-assign]
    meter = Meter()
    for client in backend.clients.values():
        meter.attach(client)
    t0 = time.perf_counter()
    backend.send({"name": "bench/go"})
    backend.run_until_idle()
    elapsed = time.perf_counter() - t0
    run = backend.list_runs()[0]
    assert run.status.value == "Completed", run
    snap = backend.clients["dynamodb"].get_item(
        TableName=backend.resources.table, Key=key(RUN_PREFIX + run.run_id, SNAP_SK)).get("Item")
    calls = Counter({op: meter.billed(op) for op in meter.calls})
    sqs = sum(v for k, v in calls.items() if k.startswith("sqs."))
    ddb = sum(v for k, v in calls.items() if k.startswith("dynamodb."))
    lam_cost = invocations * (LAMBDA_REQUEST + LAMBDA_GB_SECOND_ARM * LAMBDA_MEMORY_GB *
                              max(busy / max(invocations, 1), 0.001))
    cost = (lam_cost + sqs * SQS_REQUEST + meter.entries * EVENTBRIDGE_EVENT
            + meter.wru * DDB_WRU + meter.rru * DDB_RRU)
    mode = "checkpointing" if checkpointing else "cold" if cold else "default"
    return {"n": n, "mode": mode, "calls": calls, "snapshot": item_bytes(snap) if snap else 0,
            "sqs": sqs, "ddb": ddb, "events": meter.entries,
            "invocations": invocations, "rru": meter.rru, "wru": meter.wru, "cost": cost,
            "elapsed": elapsed, "busy_ms": busy / max(invocations, 1) * 1000}


def sleep_day(emulators: Any, *, timers: bool = True) -> dict[str, Any]:
    """Every AWS request of one 1-day sleep, from the sleep's commit to the run's wake-up.

    Counted by botocore hooks on every client: what the sleep's commit sends for its wake-up
    (a ``CreateSchedule``, or without timers an SQS send delayed 900 s), then everything up to
    the wake-up's handler reading the run (its first DynamoDB call): timer hops (receive, send,
    delete, each one Lambda invocation), the schedule's delivery (the harness sends it as
    Scheduler does: one ``SendMessage``) and the receive that hands the wake-up to the Lambda.
    Left out: empty receives (an event source polls the same whether anyone sleeps or not)
    and the harness reading schedules back (which Scheduler does inside AWS).

    Args:
        emulators: The running emulators (reset here).
        timers: Long timers on Scheduler, as deployed; ``False``: SQS timer hops.
    """
    emulators.reset()
    app = App("bench")

    @app.function(id="nap", trigger=TriggerEvent("bench/nap"))
    def nap(ctx: Context) -> None:
        ctx.step.sleep("day", "1d")

    clock = FakeClock(float(int(time.time())))  # a whole second: the day ends on one
    backend = AwsBackend(app, emulators, clock, timers=timers)
    calls: Counter[str] = Counter()
    state = {"slept": False, "woke": False}
    standing_in = {"ListSchedules", "GetSchedule", "DeleteSchedule"}

    def committed(params: dict[str, Any], model: Any, event_name: str, **_: Any) -> None:
        # Before the sleep: only the commit's send of the wake-up counts.
        delayed = any(e.get("DelaySeconds") for e in params.get("Entries", []))
        if not state["slept"] and (model.name == "CreateSchedule" or delayed):
            calls[f"{event_name.split('.')[1]}.{model.name}"] += 1

    def made(parsed: dict[str, Any], model: Any, event_name: str, **_: Any) -> None:
        service = event_name.split(".")[1]
        if service == "dynamodb" and state["slept"]:
            state["woke"] = True
        if not state["slept"] or state["woke"] or model.name in standing_in:
            return
        if model.name == "ReceiveMessage" and not parsed.get("Messages"):
            return
        calls[f"{service}.{model.name}"] += 1

    for client in backend.clients.values():
        client.meta.events.register("provide-client-params", committed)
        client.meta.events.register("after-call", made)
    backend.send({"name": "bench/nap"})
    backend.run_until_idle()
    state["slept"] = True
    steps = 0
    while not state["woke"] and steps < 200:
        clock.advance(900)
        backend.run_until_idle()
        steps += 1
    return {"calls": calls, "requests": sum(calls.values()),
            "invocations": calls["sqs.ReceiveMessage"], "woke": state["woke"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    with aws_emulators() as emulators:
        rows = [measure(emulators, n) for n in args.sizes]
        rows += [measure(emulators, n, checkpointing=True) for n in args.sizes]
        rows += [measure(emulators, n, cold=True) for n in args.sizes]
        day = sleep_day(emulators)
        hopping = sleep_day(emulators, timers=False)
    print("AWS API calls per step (linear N-step run; every call counted by botocore hooks)")
    header = (f"{'mode':<13} {'steps':>6} {'calls/step':>10} {'ddb':>5} {'sqs':>5} {'events':>6} "
              f"{'lambda':>6} {'RRU/run':>9} {'RRU/step':>8} {'WRU/step':>8} "
              f"{'$/M steps':>9} {'ms/invoke':>9}")
    print(header)
    for r in rows:
        n = r["n"]
        total = sum(r["calls"].values())
        print(f"{r['mode']:<13} {n:>6} {total / n:>10.2f} {r['ddb'] / n:>5.2f} "
              f"{r['sqs'] / n:>5.2f} "
              f"{r['events'] / n:>6.2f} {r['invocations'] / n:>6.2f} {r['rru']:>9.0f} "
              f"{r['rru'] / n:>8.2f} {r['wru'] / n:>8.2f} {r['cost'] / n * 1e6:>9.2f} "
              f"{r['busy_ms']:>9.1f}")
    largest = rows[len(args.sizes) - 1]
    print("\nper-operation calls of the largest run (default mode):")
    for op, count in sorted(largest["calls"].items()):
        print(f"  {op:<40} {count:>7}  ({count / largest['n']:.2f}/step)")
    print(f"\nstate reads: RRU per run grows {largest['rru'] / rows[0]['rru']:.0f}x for "
          f"{largest['n'] // rows[0]['n']}x the steps "
          "(linear: warm loads catch up from the commit log)")
    coldest = rows[-1]
    print(f"cold (every invocation on a fresh container), {coldest['n']} steps: "
          f"{coldest['rru'] / coldest['n']:.2f} RRU/step (warm: "
          f"{largest['rru'] / largest['n']:.2f}); each load reads the run's snapshot and the log "
          f"after it, not its history; the snapshot was {coldest['snapshot']} bytes at the end")
    # Per request: SQS $0.40/M; a Scheduler delivery $1/M (its SendMessage is also an SQS
    # request); a Lambda invocation of ~20 ms. CreateSchedule is not priced here.
    print("\none day of sleep: every AWS request from the sleep's commit to the run's wake-up")
    for label, d in (("Scheduler timer", day), ("SQS timer hops", hopping)):
        ops = ", ".join(f"{op} {n}" for op, n in sorted(d["calls"].items()))
        cost = (sum(n for op, n in d["calls"].items() if op.startswith("sqs.")) * SQS_REQUEST
                + d["calls"]["sqs.SendMessage"] * 1.00 / 1e6
                + d["invocations"] * (LAMBDA_REQUEST
                                      + LAMBDA_GB_SECOND_ARM * LAMBDA_MEMORY_GB * 0.02))
        print(f"  {label:<16} {d['requests']:>4} requests, {d['invocations']:>3} Lambda "
              f"invocations (the wake-up's included), about ${cost:.6f}"
              f"{'' if d['woke'] else ' (NOT WOKEN)'}: {ops}")
    print("WRU of transactions are computed from the items written (DynamoDB Local "
          "under-reports them); RRU are as DynamoDB Local reports them")
    print("\nprices: Lambda arm64 $0.20/M requests + $0.0000133334/GB-s at 512 MB x the measured "
          "handler time (emulator latency included); SQS $0.40/M requests; EventBridge $1/M "
          "events; DynamoDB on-demand $0.625/M WRU, $0.125/M RRU")


if __name__ == "__main__":
    main()
