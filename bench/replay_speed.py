"""Benchmark: what the pure engine spends replaying one memoized step (µs per step).

Prints figures; it is not a test. Run: .venv/bin/python bench/replay_speed.py

A run whose history holds N completed steps is replayed by ``execute()``: the handler passes
every recorded step (each returns its memoized result) and the engine then performs the next,
new step, as the invocation that performs a run's step N+1 does. The time per memoized step
is the median invocation time over N. Three shapes, because each takes its own path through
``ctx.step``: ``step.run`` on the main line, ``step.sleep`` on the main line, and
``step.run`` inside a parallel group (keys scoped by branch). No store, queue or clock: this
is the engine alone, the figure issue 19 asks to keep as fast while its code moves.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from runtime import App, Context, TriggerEvent
from runtime.app import FunctionDef
from runtime.engine import Limits, execute
from runtime.records import RunRecord, RunState, StepKind, StepRecord, StepStatus

T0 = 1_772_438_400.0


def build_app() -> App:
    app = App("bench")

    @app.function(id="runs", trigger=TriggerEvent("bench/runs"))
    def runs(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        return sum(ctx.step.run(f"s{i}", lambda i=i: i) for i in range(n + 1))

    @app.function(id="sleeps", trigger=TriggerEvent("bench/sleeps"))
    def sleeps(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        for i in range(n):
            ctx.step.sleep(f"z{i}", "1s")
        return int(ctx.step.run("last", lambda: n))

    @app.function(id="branches", trigger=TriggerEvent("bench/branches"))
    def branches(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        done = ctx.step.parallel([lambda i=i: ctx.step.run(f"b{i}", lambda: i) for i in range(n)])
        return sum(done) + int(ctx.step.run("last", lambda: n))

    return app


def history(fn_id: str, n: int) -> RunState:
    """A run of ``fn_id`` with its first ``n`` steps completed."""
    kind, keys, branch = {
        "runs": (StepKind.RUN, [f"s{i}" for i in range(n)], False),
        "sleeps": (StepKind.SLEEP, [f"z{i}" for i in range(n)], False),
        "branches": (StepKind.RUN, [f"b{i}@{i}" for i in range(n)], True),
    }[fn_id]
    steps = {
        k: StepRecord(k, k.partition("@")[0], kind, StepStatus.COMPLETED, output=i,
                      branch=branch, started_at=T0 + i, ended_at=T0 + i + 0.5)
        for i, k in enumerate(keys)
    }
    event = {"id": "e1", "name": f"bench/{fn_id}", "data": {"n": n}, "user": {}, "ts": 0}
    run = RunRecord("01KBENCHRUN000000000000000", fn_id, (event,), version=n, created_at=T0)
    return RunState(run, steps)


def per_step(call: Callable[[], object], n: int, repeats: int) -> float:
    """Median seconds of ``call`` over ``repeats``, divided by ``n``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=1000, help="memoized steps in the history")
    parser.add_argument("--repeats", type=int, default=21, help="invocations timed per shape")
    args = parser.parse_args()
    app = build_app()
    print(f"execute() over a history of {args.n} completed steps, then one new step "
          f"(median of {args.repeats}):")
    for fn_id, label in (("runs", "step.run, main line"), ("sleeps", "step.sleep, main line"),
                         ("branches", "step.run in a parallel group")):
        fn, state = app.get(fn_id), history(fn_id, args.n)
        limits = Limits(max_steps=args.n + 1)  # room for the new step past the default 1000

        def invoke(fn: FunctionDef = fn, state: RunState = state, limits: Limits = limits) -> Any:
            return execute(fn, state, now=T0 + args.n + 10, limits=limits)

        decision = invoke()
        assert type(decision).__name__ == "StepSucceeded", decision  # replayed, then the new one
        seconds = per_step(invoke, args.n, args.repeats)
        print(f"  {label:<30} {seconds * 1e6:6.2f} µs per memoized step")


if __name__ == "__main__":
    main()
