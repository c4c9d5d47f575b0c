"""Benchmark: per-step overhead and runs/second of the embedded (SQLite) backend.

Prints figures; it is not a test. Run: .venv/bin/python bench/local_overhead.py
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.core.clock import SystemClock


def build_app(steps: int) -> App:
    app = App("bench")

    @app.function(id="steps", trigger=TriggerEvent("bench/steps"))
    def many(ctx: Context) -> int:
        total = 0
        for i in range(steps):
            total += ctx.step.run(f"s{i}", lambda i=i: i)
        return total

    @app.function(id="logged", trigger=TriggerEvent("bench/logged"))
    def logged(ctx: Context) -> int:
        total = 0
        for i in range(steps):
            ctx.logger.debug("step %d", i)  # disabled (INFO): must cost O(1), not O(history)
            total += ctx.step.run(f"s{i}", lambda i=i: i)
        return total

    @app.function(id="one", trigger=TriggerEvent("bench/one"))
    def one(ctx: Context) -> int:
        return ctx.step.run("only", lambda: 1)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    args = parser.parse_args()
    logging.getLogger("stepkit").setLevel(logging.INFO)
    app = build_app(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        backend = LocalBackend(app, Path(tmp) / "bench.sqlite3", clock=SystemClock(),
                               durability=args.durability)
        t0 = time.perf_counter()
        backend.send({"name": "bench/steps"})
        handled = backend.run_until_idle()
        elapsed = time.perf_counter() - t0
        print(
            f"[durability {args.durability}] one run of {args.steps} steps: "
            f"{elapsed * 1000:.1f} ms, "
            f"{handled} messages, {elapsed / args.steps * 1000:.2f} ms per step "
            "(includes replaying all earlier steps)"
        )
        t0 = time.perf_counter()
        backend.send({"name": "bench/logged"})
        backend.run_until_idle()
        logged = time.perf_counter() - t0
        print(
            f"the same with a disabled ctx.logger.debug per step: {logged * 1000:.1f} ms "
            f"({logged / elapsed:.2f}x)"
        )
        t0 = time.perf_counter()
        for _ in range(args.runs):
            backend.send({"name": "bench/one"})
        backend.run_until_idle()
        elapsed = time.perf_counter() - t0
        print(f"{args.runs} one-step runs: {elapsed:.2f} s, {args.runs / elapsed:.0f} runs/s")
        backend.close()


if __name__ == "__main__":
    main()
