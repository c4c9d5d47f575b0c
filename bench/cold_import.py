"""Benchmark: cold import time of the Lambda handlers (what a cold start pays before work).

Each sample is a fresh interpreter importing the handler module, then loading the app from
functions/ as the handler does on its first record (``load_app(deployed=True)``: CEL and cron
parsing left to first use, see runtime/checks.py), timed separately. A fresh interpreter
that only runs ``import boto3`` is sampled in the same rounds, interleaved, as the yardstick:
a handler needs boto3 anyway, so the ratio (handler import + load_app) / (import boto3) is
what stepkit adds on top of the SDK. Prints figures; it is not a test.
Run: .venv/bin/python bench/cold_import.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys

SAMPLES = 9
HANDLERS = ("runtime.handlers.worker", "runtime.handlers.router")
_PROBE = """
import time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
from runtime.discovery import load_app
load_app(deployed=True)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""
_BOTO3 = """
import time
t0 = time.perf_counter()
import boto3
print(time.perf_counter() - t0, 0.0)
"""


def sample(code: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), float(out[1])


def heaviest(module: str, top: int = 16) -> list[tuple[int, str]]:
    """The heaviest imports of ``module`` and of ``load_app()`` after it (``-X importtime``)."""
    code = f"import {module}\nfrom runtime.discovery import load_app\nload_app(deployed=True)"
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        check=True, capture_output=True, text=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 3:  # the handler, what it pulls in, and the app's modules, a few levels
            rows.append((int(cumulative), "  " * depth + name.strip()))
    return sorted(rows, key=lambda r: r[0], reverse=True)[:top]


def main() -> None:
    boto3: list[float] = []
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in HANDLERS}
    for _ in range(SAMPLES):  # interleaved, so load on the machine hits all alike
        boto3.append(sample(_BOTO3)[0])
        for module in HANDLERS:
            runs[module].append(sample(_PROBE.format(module=module)))
    base = statistics.median(boto3)
    print(f"import boto3: {base * 1000:.0f} ms (min {min(boto3) * 1000:.0f})"
          f"  [median of {SAMPLES} fresh interpreters, interleaved with the handlers]")
    for module in HANDLERS:
        imports, apps = zip(*runs[module], strict=True)
        imp, app = statistics.median(imports), statistics.median(apps)
        print(f"{module}: import {imp * 1000:.0f} ms (min {min(imports) * 1000:.0f}), then "
              f"load_app() of functions/ {app * 1000:.0f} ms; "
              f"(import + load_app) / import boto3 = {(imp + app) / base:.2f}")
    for module in HANDLERS:
        print(f"\nheaviest imports of {module} + load_app() (cumulative, microseconds):")
        for micros, name in heaviest(module):
            print(f"  {micros:>8}  {name}")


if __name__ == "__main__":
    main()
