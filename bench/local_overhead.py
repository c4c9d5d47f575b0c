"""Benchmark: per-step cost of the embedded (SQLite) backend, and DBOS on SQLite beside it.

Prints figures; it is not a test. Run: .venv/bin/python bench/local_overhead.py

For N = 10, 100 and 1000 steps in one run and both durability settings: the time per step
(median over a few runs, each run timed from its event to its completion, replays included),
the write transactions per step (``BEGIN IMMEDIATE`` statements seen by SQLite's trace hook),
and at the largest N the time per step of the last 10 % of steps over the first 10 % (a run
should not slow down as its history grows). Then the same workflow on DBOS with a SQLite system
database, if ``dbos`` is installed (it is not a dependency: ``uv pip install --python
.venv/bin/python dbos`` to measure).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.orchestration import orchestrator
from runtime.orchestration.clock import SystemClock

SIZES = (10, 100, 1000)


def repetitions(n: int) -> int:
    """Runs per size: enough for a median, few enough that N=1000 stays short."""
    return 9 if n <= 10 else 5 if n <= 100 else 3


def build_app(stamps: list[float]) -> App:
    app = App("bench")

    def step(i: int) -> int:
        stamps.append(time.perf_counter())
        return i

    @app.function(id="steps", trigger=TriggerEvent("bench/steps"))
    def many(ctx: Context) -> int:
        total = 0
        for i in range(int(ctx.event.data["n"])):
            total += ctx.step.run(f"s{i}", lambda i=i: step(i))
        return total

    @app.function(id="logged", trigger=TriggerEvent("bench/logged"))
    def logged(ctx: Context) -> int:
        total = 0
        for i in range(int(ctx.event.data["n"])):
            ctx.logger.debug("step %d", i)  # disabled (INFO): must cost O(1), not O(history)
            total += ctx.step.run(f"s{i}", lambda i=i: i)
        return total

    @app.function(id="one", trigger=TriggerEvent("bench/one"))
    def one(ctx: Context) -> int:
        return ctx.step.run("only", lambda: 1)

    return app


def tail_ratio(stamps: list[float], replays: list[float] | None = None) -> float:
    """Mean interval between step starts in the last 10 % of a run over the first 10 %.

    With ``replays`` (the engine's time per invocation, in order), each interval less the
    next invocation's replay: what the backend costs as the history grows, without the
    handler's replay of it.
    """
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    if replays is not None:
        gaps = [gap - replay for gap, replay in zip(gaps, replays[1:], strict=False)]
    tenth = max(len(gaps) // 10, 1)
    return statistics.fmean(gaps[-tenth:]) / statistics.fmean(gaps[:tenth])


class Figures:
    """Per-step medians and tail ratios of one engine, by (setting, N)."""

    def __init__(self) -> None:
        self.per_step: dict[tuple[str, int], float] = {}
        self.ratio: dict[str, float] = {}


Timed = tuple[list[float], list[float] | None]  # step start times; replay time per invocation


def measure(label: str, n: int, run: Callable[[int], Timed], figures: Figures) -> None:
    """Time ``run(n)`` a few times; record the median per step (and the tail ratio)."""
    times: list[float] = []
    ratios: list[float] = []
    bare: list[float] = []
    for _ in range(repetitions(n)):
        t0 = time.perf_counter()
        stamps, replays = run(n)
        times.append((time.perf_counter() - t0) / n)
        if len(stamps) >= 100:
            ratios.append(tail_ratio(stamps))
            if replays is not None:
                bare.append(tail_ratio(stamps, replays))
    figures.per_step[label, n] = statistics.median(times)
    line = f"  N={n:<5} {statistics.median(times) * 1000:7.3f} ms per step"
    if ratios:
        figures.ratio[label] = statistics.median(ratios)
        line += f"   last/first 10 %: {statistics.median(ratios):.2f}"
    if bare:
        line += f" ({statistics.median(bare):.2f} without the replay)"
    print(line + f"   (median of {len(times)})", flush=True)


def timing_replays() -> list[float]:
    """Time every engine invocation from now on (the orchestrator's ``execute``)."""
    replays: list[float] = []
    real = orchestrator.execute

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            replays.append(time.perf_counter() - t0)

    orchestrator.execute = timed  # type: ignore[assignment]
    return replays


def bench_local(durability: str, tmp: Path, figures: Figures) -> None:
    stamps: list[float] = []
    backend = LocalBackend(build_app(stamps), tmp / f"{durability}.sqlite3", clock=SystemClock(),
                           durability=durability)
    begins = 0

    def trace(sql: str) -> None:
        nonlocal begins
        begins += sql.startswith("BEGIN IMMEDIATE")

    replays = timing_replays()
    # run_until_idle works in this thread, on this thread's connection.
    backend.store.db.connection().set_trace_callback(trace)

    def run(n: int) -> Timed:
        stamps.clear()
        replays.clear()
        backend.send({"name": "bench/steps", "data": {"n": n}})
        backend.run_until_idle()
        return list(stamps), list(replays)

    print(f"stepkit local, durability {durability}:")
    for n in SIZES:
        before = begins
        measure(durability, n, run, figures)
        writes = (begins - before) / repetitions(n) / n
        print(f"           {writes:.2f} write transactions per step (sending the event included)")

    n = 300
    timed = []
    for name in ("bench/steps", "bench/logged"):
        t0 = time.perf_counter()
        backend.send({"name": name, "data": {"n": n}})
        backend.run_until_idle()
        timed.append(time.perf_counter() - t0)
    print(f"  {n} steps with a disabled ctx.logger.debug each: {timed[1] / timed[0]:.2f}x "
          "the time without")
    runs = 200
    t0 = time.perf_counter()
    for _ in range(runs):
        backend.send({"name": "bench/one"})
    backend.run_until_idle()
    elapsed = time.perf_counter() - t0
    print(f"  {runs} one-step runs: {elapsed:.2f} s, {runs / elapsed:.0f} runs/s")
    backend.close()


def bench_dbos(tmp: Path, figures: Figures) -> bool:
    """The same N-step workflow on DBOS (SQLite system database, its defaults); whether run."""
    try:
        from dbos import DBOS
    except ImportError:
        print("dbos not installed: no side-by-side (uv pip install --python .venv/bin/python dbos)")
        return False
    stamps: list[float] = []

    @DBOS.step()
    def trivial(i: int) -> int:
        stamps.append(time.perf_counter())
        return i

    @DBOS.workflow()
    def many(n: int) -> int:
        return sum(trivial(i) for i in range(n))

    config: Any = {
        "name": "bench",
        "system_database_url": f"sqlite:///{tmp / 'dbos.sqlite3'}",
        "log_level": "WARNING",
        "run_admin_server": False,
    }
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)

    def run(n: int) -> Timed:
        stamps.clear()
        many(n)
        return list(stamps), None

    try:
        import dbos

        print(f"DBOS {getattr(dbos, '__version__', '')} on SQLite (its defaults: rollback "
              "journal, synchronous=FULL), a workflow of N trivial steps:".replace("  ", " "))
        for n in SIZES:
            measure("dbos", n, run, figures)
    finally:
        DBOS.destroy()
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--durability", choices=["normal", "full", "both"], default="both")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS side-by-side")
    args = parser.parse_args()
    logging.getLogger("stepkit").setLevel(logging.INFO)
    figures = Figures()
    settings = ["normal", "full"] if args.durability == "both" else [args.durability]
    with tempfile.TemporaryDirectory() as tmp:
        for durability in settings:
            bench_local(durability, Path(tmp), figures)
        if not args.no_dbos and bench_dbos(Path(tmp), figures) and "full" in settings:
            print("local (durability full) against DBOS, per step:")
            for n in SIZES:
                ours, theirs = figures.per_step["full", n], figures.per_step["dbos", n]
                print(f"  N={n:<5} {theirs / ours:5.2f}x faster"
                      f"  ({ours * 1000:.3f} vs {theirs * 1000:.3f} ms)")


if __name__ == "__main__":
    main()
