"""Benchmark: cold import time of the Lambda handlers (what a cold start pays before work).

Each sample is a fresh interpreter importing the handler module and building nothing else;
the app is loaded from functions/ on the first record, measured separately.
Prints figures; it is not a test. Run: .venv/bin/python bench/cold_import.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys

SAMPLES = 7
_PROBE = """
import time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
from runtime.discovery import load_app
load_app()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def sample(module: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def heaviest(module: str, top: int = 14) -> list[tuple[int, str]]:
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True, capture_output=True, text=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if 1 <= depth <= 3:  # what the handler module pulls in, a few levels down
            rows.append((int(cumulative), "  " * (depth - 1) + name.strip()))
    return sorted(rows, key=lambda r: r[0], reverse=True)[:top]


def main() -> None:
    for module in ("runtime.handlers.worker", "runtime.handlers.router"):
        imports, apps = zip(*(sample(module) for _ in range(SAMPLES)), strict=True)
        print(f"{module}: import {statistics.median(imports) * 1000:.0f} ms "
              f"(min {min(imports) * 1000:.0f}), then load_app() of functions/ "
              f"{statistics.median(apps) * 1000:.0f} ms  [median of {SAMPLES} fresh interpreters]")
    print("\nheaviest top-level imports of the worker (cumulative, microseconds):")
    for micros, name in heaviest("runtime.handlers.worker"):
        print(f"  {micros:>8}  {name}")


if __name__ == "__main__":
    main()
