"""Chaos bench: a mixed workload under concurrent, shuffled, duplicated, crashing, failing
delivery, on each backend; prints what the platform promises and what it cost.

    .venv/bin/python bench/chaos.py                    # 200 runs per backend
    .venv/bin/python bench/chaos.py --runs 60 --backend local
    .venv/bin/python bench/chaos.py --pushback         # and 30 minutes of AWS saying no

Runs (in equal shares): sequential steps, a 50-wide parallel group, a sleep between steps,
send-then-wait against a responder, invoke of a child function, a cancel_on run that is
cancelled while it sleeps, flow control (a function limited to 3 executing steps, a
throttled one (5 starts a minute) and a batched one (5 events or 10 s)), and a checkpointed
one (steps chained in one invocation, a sleep, more steps). Faults: 8 workers,
20 % of sends duplicated, 5 % of commits followed by a crash before their sends, 10 % of
store/queue/bus calls failing (half of them after taking effect).

``--pushback``: once the runs are in flight, PutEvents and CreateSchedule refused as
throttled (after the SDK's retries, ``Harness.pushback``) for 30 minutes of harness time,
then DynamoDB writes for 30, then PutEvents and CreateSchedule again for 30 (overlapping by
5), then recovery; the promise is the same: 0 failed, 0 stuck, 0 recorded twice.

Printed per backend:
- runs, completed, failed/cancelled as expected;
- lost: an event was sent and no run exists; stuck: a run not finished once all is due;
- recorded twice: a step whose result was committed more than once;
- wrong key: a step record whose output is not the one computed for that key;
- repeated effects: step functions executed more than once (at-least-once is allowed and
  counted, never hidden), and the share of steps affected;
- flow control: the most steps of the limited function that ever ran at once (real wall-clock
  spans across the workers), and batched events that are in no run or in more than one.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import App, CancelOn, Context, TriggerEvent
from runtime.records import Commit, RunStatus
from runtime.testing import Harness
from runtime.testing.chaos import Chaos

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KINDS = ("seq", "fan", "sleep", "ask", "invoke", "cancel", "limited", "paced", "batched",
         "chain")
LIMIT = 3


class Ledger:
    """What the step functions did, and what the store recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executed: collections.Counter[tuple[str, str]] = collections.Counter()
        self.recorded: collections.Counter[tuple[str, str]] = collections.Counter()
        self.spans: list[tuple[float, float]] = []

    def timed(self, run_id: str, key: str) -> str:
        began = time.monotonic()
        time.sleep(0.005)
        with self.lock:
            self.spans.append((began, time.monotonic()))
        return self.effect(run_id, key)

    def most_at_once(self) -> int:
        edges = sorted([(a, 1) for a, _ in self.spans] + [(b, -1) for _, b in self.spans])
        most = now = 0
        for _, d in edges:
            now += d
            most = max(most, now)
        return most

    def effect(self, run_id: str, key: str) -> str:
        with self.lock:
            self.executed[(run_id, key)] += 1
        return expected(run_id, key)


def expected(run_id: str, key: str) -> str:
    """The output a step must have: derived from its own run and key."""
    return f"{run_id}/{key}"


def build_app(name: str, ledger: Ledger) -> App:
    app = App(name)

    def step(ctx: Context, step_id: str, key: str | None = None) -> Any:
        return ctx.step.run(step_id, lambda: ledger.effect(ctx.run_id, key or step_id))

    @app.function(id="seq", trigger=TriggerEvent("bench/seq"))
    def seq(ctx: Context) -> int:
        for i in range(5):
            step(ctx, f"s{i}")
        return 5

    @app.function(id="fan", trigger=TriggerEvent("bench/fan"))
    def fan(ctx: Context) -> int:
        ctx.step.parallel(
            [lambda i=i: step(ctx, f"p{i}", f"p{i}@{i}") for i in range(50)]
        )
        return 50

    @app.function(id="sleep", trigger=TriggerEvent("bench/sleep"))
    def sleep(ctx: Context) -> int:
        step(ctx, "before")
        ctx.step.sleep("nap", "1h")
        step(ctx, "after")
        return 2

    @app.function(id="ask", trigger=TriggerEvent("bench/ask"))
    def ask(ctx: Context) -> Any:
        n = ctx.event.data["n"]
        ctx.step.send_event("ask", {"name": "bench/question", "data": {"n": n}})
        reply = ctx.step.wait_for_event(
            "reply", event="bench/answer", timeout="1d", match="data.n"
        )
        if reply is None:
            raise RuntimeError("no reply")
        return reply.data["n"]

    @app.function(id="responder", trigger=TriggerEvent("bench/question"))
    def responder(ctx: Context) -> None:
        ctx.step.send_event("answer", {"name": "bench/answer", "data": ctx.event.data})

    @app.function(id="child", trigger=TriggerEvent("bench/never"))
    def child(ctx: Context) -> Any:
        return step(ctx, "work")

    @app.function(id="invoke", trigger=TriggerEvent("bench/invoke"))
    def invoke(ctx: Context) -> Any:
        return ctx.step.invoke("call", function="child", data={})

    @app.function(
        id="cancel",
        trigger=TriggerEvent("bench/cancel"),
        cancel_on=CancelOn(event="bench/stop", match="data.n"),
    )
    def cancel(ctx: Context) -> None:
        step(ctx, "first")
        ctx.step.sleep("nap", "1h")
        step(ctx, "never")

    @app.function(id="limited", trigger=TriggerEvent("bench/limited"), concurrency=LIMIT)
    def limited(ctx: Context) -> int:
        for i in range(3):
            ctx.step.run(f"l{i}", lambda i=i: ledger.timed(ctx.run_id, f"l{i}"))
        return 3

    @app.function(id="paced", trigger=TriggerEvent("bench/paced"),
                  throttle={"limit": 5, "period": "1m"})
    def paced(ctx: Context) -> Any:
        return step(ctx, "call")

    @app.function(id="chain", trigger=TriggerEvent("bench/chain"), checkpointing=True)
    def chain(ctx: Context) -> int:
        for i in range(4):  # one invocation, each result committed before the next step
            step(ctx, f"c{i}")
        ctx.step.sleep("nap", "30m")
        for i in range(4, 8):
            step(ctx, f"c{i}")
        return 8

    @app.function(id="batched", trigger=TriggerEvent("bench/batched"),
                  batch_events={"max_size": 5, "timeout": "10s"})
    def batched(ctx: Context) -> list[Any]:
        step(ctx, "write")
        return [e.id for e in ctx.events]

    return app


def count_commits(h: Harness, ledger: Ledger) -> Callable[[], None]:
    """Count, below every fault, each step result a commit actually recorded.

    Returns what to call once the work is done, to finish the count. Locally a commit that
    returned may yet roll back with the rest of its message's transaction, so SQLite itself
    counts, in triggers that land or roll back with the step writes.
    """
    store = getattr(h.backend, "store", None)
    if store is not None and hasattr(store, "db"):
        with store.db.write() as conn:
            conn.execute("CREATE TABLE bench_recorded (run_id TEXT, key TEXT)")
            for event in ("INSERT", "UPDATE OF json"):
                conn.execute(
                    f"CREATE TRIGGER bench_{event.split()[0].lower()} AFTER {event} ON steps"
                    " WHEN json_extract(NEW.json, '$.status') IN ('completed', 'failed')"
                    " BEGIN INSERT INTO bench_recorded VALUES (NEW.run_id, NEW.key); END")

        def read() -> None:
            rows = store.db.connection().execute("SELECT run_id, key FROM bench_recorded")
            ledger.recorded.update((run_id, key) for run_id, key in rows)

        return read
    stores = []
    own = getattr(h.backend, "orchestrator", None)
    if own is not None:
        stores.append(own.store)
    for crew in getattr(h.backend, "_crews", []):
        stores += [svc.orchestrator.store for svc in crew.values()]
    for faulty in stores:
        inner = faulty.inner

        def commit(run_id: str, c: Commit, _inner: Any = inner) -> bool:
            landed = bool(_inner.__class__.commit(_inner, run_id, c))
            if landed:
                with ledger.lock:
                    for w in c.steps:
                        if w.record.status.final:
                            ledger.recorded[(run_id, w.record.key)] += 1
            return landed

        inner.commit = commit
    return lambda: None


def bench(backend: str, runs: int, emulators: Any = None,
          pushback: bool = False) -> dict[str, Any]:
    ledger = Ledger()
    app = build_app(f"chaos{backend}", ledger)
    chaos = Chaos(workers=8, duplicate=0.2, crash=0.05, errors=0.10, seed=7, max_receives=60)
    tmp = tempfile.mkdtemp()
    if backend == "local":
        h = Harness.local(app, path=Path(tmp) / "bench.sqlite3", start=START)
    else:
        h = Harness.aws(app, emulators, start=START)
    h.enable_chaos(chaos)
    count_recorded = count_commits(h, ledger)
    t0 = time.perf_counter()
    sent: list[tuple[str, str, int]] = []
    for i in range(runs):
        kind = KINDS[i % len(KINDS)]
        (eid,) = h.send(f"bench/{kind}", {"n": i}, settle=False)
        sent.append((kind, eid, i))
    h.settle()
    for kind, _, i in sent:
        if kind == "cancel":
            h.send("bench/stop", {"n": i}, settle=False)
    refused: dict[str, int] = {}
    if pushback:
        h.advance("20s")  # the runs in flight: sleeping, waiting, queued, mid-step
        # Each refused for 30 minutes, one after the other, overlapping by 5: refused all
        # at once, the refused writes would keep every run from reaching a send at all.
        h.pushback("timers", "bus", span="30m")
        h.pushback("store-writes", span="30m", after="25m")
        refused = h.pushback("bus", "timers", span="30m", after="50m").refusals
    h.advance("4h" if pushback else "2h")
    elapsed = time.perf_counter() - t0
    count_recorded()

    by_event: dict[str, Any] = {}
    batches: collections.Counter[str] = collections.Counter()
    all_runs = h.runs()
    for view in all_runs:
        for event in view.state.run.events:
            by_event[event["id"]] = view
            if view.state.run.function_id == "batched":
                batches[event["id"]] += 1
    completed = sum(v.status is RunStatus.COMPLETED for v in all_runs)
    cancelled = lost = wrong = 0
    for kind, eid, _ in sent:
        view = by_event.get(eid)
        if view is None:
            lost += 1
        elif kind == "cancel" and view.status is RunStatus.CANCELLED:
            cancelled += 1
    stuck = sum(not v.status.finished for v in all_runs)
    failed = sum(v.status is RunStatus.FAILED for v in all_runs)
    for view in all_runs:
        for rec in view.steps.values():
            if rec.kind.value == "run" and rec.status.value == "Completed":
                wrong += rec.output != expected(view.id, rec.key)
    twice = sum(1 for n in ledger.recorded.values() if n > 1)
    repeated = sum(1 for n in ledger.executed.values() if n > 1)
    faults = dict(h._settle.__self__.faults.counts) if backend == "local" else dict(
        h.backend.faults.counts)
    batched = [eid for kind, eid, _ in sent if kind == "batched"]
    batch_runs = {by_event[e].id for e in batched if e in by_event}
    h.close()
    return {
        "backend": backend, "runs": len(all_runs), "triggered": runs, "completed": completed,
        "cancelled as expected": cancelled, "failed": failed, "lost": lost, "stuck": stuck,
        "recorded twice": twice, "wrong key": wrong,
        "repeated effects": f"{repeated} of {len(ledger.executed)} steps",
        "most steps at once": f"{ledger.most_at_once()} (limit {LIMIT})",
        "batched events": f"{len(batched)} in {len(batch_runs)} runs; in none: "
                          f"{sum(batches[e] == 0 for e in batched)}, in two or more: "
                          f"{sum(batches[e] > 1 for e in batched)}",
        "faults injected": faults,
        "pushback refusals": {k: v for k, v in refused.items() if v} if pushback else "off",
        "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--backend", action="append", choices=["local", "aws"])
    parser.add_argument("--pushback", action="store_true",
                        help="30 minutes of DynamoDB, EventBridge and Scheduler throttling")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # injected failures are logged by the hundred
    results = []
    for backend in args.backend or ["local", "aws"]:
        if backend == "aws":
            from stepkit_emulators.emulators import aws_emulators

            with aws_emulators() as emulators:
                results.append(bench("aws", args.runs, emulators, args.pushback))
        else:
            results.append(bench("local", args.runs, pushback=args.pushback))
    for r in results:
        print(f"\n[{r['backend']}] {r['triggered']} triggered runs ({r['runs']} runs in all, "
              f"children included), {r['seconds']} s")
        for k, v in r.items():
            if k not in ("backend", "triggered", "runs", "seconds"):
                print(f"  {k:24} {v}")


if __name__ == "__main__":
    main()
