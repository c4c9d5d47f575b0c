"""Benchmark: the peak memory of loading and replaying a run at the documented output limits.

Prints figures; it is not a test. Run: .venv/bin/python bench/run_memory.py

A run's step outputs may weigh 4 MiB of JSON each and 32 MiB in all (``Limits``). What they
take in memory is another figure: decoded JSON is several times its text, and how many times
depends on its shape (a 4 MiB string is one object, 4 MiB of ``{"n":0}`` is half a million
dicts). Each case writes a run at the limits to a SQLite file, then a fresh interpreter does
what a worker does with it: the store loads the run (every step record read and decoded),
and ``execute()`` replays the handler over it (every step returns its memoized output) to
its end. The figure is that process's RSS high-water mark (``VmHWM``) minus its own
mark just before the load (imports, app and store opened): what replaying that run adds.

The worker baseline is a fresh interpreter that holds what a warm Lambda worker holds before
its first record: the handler module (``runtime.handlers.worker``), the deployed app
(``load_app(deployed=True)``) and the boto3 clients ``LambdaApp.from_env`` makes (DynamoDB,
SQS, EventBridge; made offline, no call is sent). The implied Lambda memory is that
baseline plus the largest run, with the quarter the run cache may hold on top
(``RunCache``: a quarter of the function's memory), rounded up to 64 MB.

The local store is measured by default. With ``--aws`` (needs the emulators,
``scripts/install-test-deps.sh``) the same run is made by the real handlers on DynamoDB Local
+ moto, and a fresh interpreter loads it cold through ``DynamoStore`` (its outputs over
64 KiB read back from S3) and replays it: boto3's response and its deserialised items are
the copies the local store does not make.

Run: .venv/bin/python bench/run_memory.py [--aws]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
T0 = 1_772_438_400.0
RUN_ID = "01KBENCHRUN000000000000000"


@dataclass(frozen=True)
class Shape:
    """A run at the limits: ``steps`` outputs, each ``unit`` repeated to ``size`` bytes."""

    label: str
    steps: int
    size: int
    unit: Any

    def output(self, i: int) -> Any:
        """Step ``i``'s output: a string of ``size`` bytes of JSON, or a list of units."""
        if isinstance(self.unit, str):
            return self.unit * (self.size - 2)  # with its quotes: size bytes of JSON
        one = len(json.dumps(self.unit, separators=(",", ":"))) + 1  # with its comma
        return [self.unit] * ((self.size - 2) // one)


API_RECORD = {"id": 12345, "name": "item-12345", "tags": ["a", "b"], "price": 9.99}
SHAPES = {
    "strings": Shape("8 x 4 MiB strings", 8, 4 * MIB, "x"),
    "records": Shape("8 x 4 MiB of API-like records", 8, 4 * MIB, API_RECORD),
    "small": Shape('8 x 4 MiB of {"n":0} dicts', 8, 4 * MIB, {"n": 0}),
    "many": Shape("1000 x 32 KiB of API-like records", 1000, 32 * 1024, API_RECORD),
}


def peak_kib() -> int:
    """This process's RSS high-water mark, KiB.

    Linux's ``VmHWM`` where there is one: ``getrusage``'s ``ru_maxrss`` keeps the mark of
    the process that spawned this one across ``exec`` (the bench's own, which grows as it
    writes the runs), so it would hide every figure below it.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; a bound elsewhere


def write_run(shape: Shape, path: Path) -> int:
    """Write a run of ``shape`` with every step completed; its outputs' bytes of JSON."""
    from runtime.backends.local.store import SqliteStore
    from runtime.records import RunRecord, StepKind, StepRecord, StepStatus

    records, total = [], 0
    for i in range(shape.steps):
        output = shape.output(i)
        size = len(json.dumps(output, separators=(",", ":")).encode())
        total += size
        records.append(StepRecord(
            f"s{i}", f"s{i}", StepKind.RUN, StepStatus.COMPLETED, output=output,
            detail={"output_bytes": size}, started_at=T0 + i, ended_at=T0 + i + 0.5))
    event = {"id": "e1", "name": "bench/memory", "data": {"n": shape.steps}, "user": {}, "ts": 0}
    run = RunRecord(RUN_ID, "replay", (event,), version=shape.steps, created_at=T0)
    store = SqliteStore(path)
    store.create_run(run, (), steps=records)
    store.close()
    return total


def replay(path: Path) -> dict[str, int]:
    """In this fresh process: load the run from ``path`` and replay it to its end."""
    from runtime.backends.local.store import SqliteStore
    from runtime.engine import Limits, execute

    app = replay_app(None)
    store = SqliteStore(path)
    before = peak_kib()
    state = store.load(RUN_ID)
    assert state is not None
    decision = execute(app.get("replay"), state, now=T0 + 10_000, limits=Limits())
    assert type(decision).__name__ == "RunCompleted", decision
    return {"before": before, "peak": peak_kib()}


def replay_app(shape: Shape | None) -> Any:
    """The app whose function makes (``shape``) or replays (``None``) the run's steps."""
    from runtime import App, Context, TriggerEvent

    app = App("bench")

    @app.function(id="replay", trigger=TriggerEvent("bench/memory"))
    def handler(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        made = (lambda i: shape.output(i)) if shape is not None else (lambda i: "")
        return sum(len(ctx.step.run(f"s{i}", lambda i=i: made(i))) for i in range(n))

    return app


def write_aws_run(emulators: Any, shape: Shape) -> tuple[str, str, str, float]:
    """Run ``shape`` through the handlers on the emulators: table, bucket, run id, time."""
    from runtime.orchestration.clock import FakeClock
    from stepkit_emulators.aws import AwsBackend

    emulators.reset()
    clock = FakeClock()
    backend = AwsBackend(replay_app(shape), emulators, clock)
    backend.send({"name": "bench/memory", "data": {"n": shape.steps}})
    with contextlib.redirect_stdout(io.StringIO()):  # the handlers' metrics (EMF lines)
        backend.run_until_idle()
    run = backend.list_runs()[0]
    assert run.status.value == "Completed", run
    return backend.resources.table, backend.payload_bucket, run.run_id, clock.now()


def replay_aws(table: str, bucket: str, run_id: str, now: float) -> dict[str, int]:
    """In this fresh process: load the run cold from DynamoDB (and S3) and replay it."""
    import boto3

    from runtime.backends.aws.payloads import S3Payloads
    from runtime.backends.aws.store import DynamoStore
    from runtime.engine import Limits, execute
    from runtime.orchestration.clock import FakeClock

    app = replay_app(None)
    store = DynamoStore(table, client=boto3.client("dynamodb"), clock=FakeClock(now),
                        payloads=S3Payloads(bucket, boto3.client("s3")))
    before = peak_kib()
    state = store.load(run_id)
    assert state is not None
    decision = execute(app.get("replay"), state, now=now, limits=Limits())
    assert type(decision).__name__ == "RunCompleted", decision
    return {"before": before, "peak": peak_kib()}


def worker_baseline() -> dict[str, int]:
    """In this fresh process: what a warm worker holds before its first record."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # clients are made, never used
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    before = peak_kib()
    import boto3

    import runtime.handlers.worker  # noqa: F401 - what the Lambda imports
    from runtime.discovery import load_app

    load_app(deployed=True)
    clients = [boto3.client(name) for name in ("dynamodb", "sqs", "events")]
    assert clients
    return {"before": before, "peak": peak_kib()}


def child(args: list[str], env: dict[str, str] | None = None) -> dict[str, int]:
    """Run one measurement in a fresh interpreter; its figures (KiB)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], cwd=ROOT, check=True,
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    ).stdout
    figures: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return figures


def mb(kib: float) -> float:
    """KiB as MB (10^6 bytes, as Lambda counts its memory setting: 1 MB steps)."""
    return kib * 1024 / 1e6


def implied_memory(baseline_mb: float, run_mb: float) -> int:
    """Lambda memory (MB, a multiple of 64) for the baseline, the run and the cache's quarter."""
    return int(math.ceil((baseline_mb + run_mb) * 4 / 3 / 64) * 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aws", action="store_true",
                        help="also load the runs from DynamoDB Local + moto (S3)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        what: Callable[[], dict[str, int]] = {
            "worker": worker_baseline,
            "replay": lambda: replay(Path(rest[0])),
            "aws": lambda: replay_aws(rest[0], rest[1], rest[2], float(rest[3])),
        }[kind]
        print(json.dumps(what()))
        return
    worker = child(["worker"])
    print(f"Python {sys.version.split()[0]}; figures are RSS high-water marks, MB = 10^6 bytes")
    print(f"  bare interpreter                      {mb(worker['before']):7.1f} MB")
    print(f"  warm worker before its first record   {mb(worker['peak']):7.1f} MB "
          "(handler, app, 3 boto3 clients)")
    print("Loading and replaying a run at the limits (4 MiB per output, 32 MiB per run), "
          "above the process before the load:")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            path = Path(tmp) / f"{name}.db"
            total = write_run(shape, path)
            fig = child(["replay", str(path)])
            added = mb(fig["peak"] - fig["before"])
            worst = max(worst, added)
            print(f"  {shape.label:<36} {total / MIB:5.1f} MiB JSON -> {added:7.1f} MB "
                  f"({added * 1e6 / total:4.1f}x; imports {mb(fig['before']):5.1f} MB)")
            print(f"    implied Lambda memory: {implied_memory(mb(worker['peak']), added)} MB")
    print(f"Largest: {worst:.1f} MB (implied {implied_memory(mb(worker['peak']), worst)} MB): "
          "the 32 MiB limit counts JSON, memory depends on its shape")
    if args.aws:
        aws_cases(mb(worker["peak"]))


def aws_cases(baseline_mb: float) -> None:
    """The same runs made by the handlers on the emulators, loaded cold through DynamoDB."""
    from stepkit_emulators.emulators import aws_emulators

    print("The same, made by the handlers on DynamoDB Local + moto and loaded cold "
          "(outputs over 64 KiB from S3):")
    with aws_emulators() as emulators:
        for name in ("strings", "records", "many"):
            shape = SHAPES[name]
            table, bucket, run_id, now = write_aws_run(emulators, shape)
            fig = child(["aws", table, bucket, run_id, repr(now)], env=emulators.env())
            added = mb(fig["peak"] - fig["before"])
            print(f"  {shape.label:<36} -> {added:7.1f} MB; implied Lambda memory "
                  f"{implied_memory(baseline_mb, added)} MB")


if __name__ == "__main__":
    main()
