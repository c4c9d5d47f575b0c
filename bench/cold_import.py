"""Benchmark: cold import time of the Lambda handlers (what a cold start pays before work).

Each sample is a fresh interpreter importing the handler module, then loading the app from
functions/ as the handler does on its first record (``load_app(deployed=True)``: CEL and cron
parsing left to first use, see runtime/checks.py), timed separately. A fresh interpreter
that only runs ``import boto3`` is sampled in the same rounds, interleaved, as the yardstick:
a handler needs boto3 anyway, so the ratio (handler import + load_app) / (import boto3) is
what stepkit adds on top of the SDK. Prints figures; it is not a test.

Times are the interpreter's CPU time (``time.process_time``), not wall time: an import is CPU
work, and on a shared machine wall time measures the neighbours. Each figure is taken twice,
with the bytecode cache under the bench's control (``PYTHONPYCACHEPREFIX``), whatever the
environment says:

- *bytecode cached*: every module has its ``.pyc`` (a warm-up run writes them), as when the
  Lambda asset ships compiled bytecode;
- *no bytecode*: every module, boto3's included, is compiled from source, as on Lambda when
  the asset ships ``.py`` files only (its code directory is read-only, so nothing is cached
  between cold starts).

Run: .venv/bin/python bench/cold_import.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = 9
HANDLERS = ("runtime.handlers.worker", "runtime.handlers.router")
ROOT = Path(__file__).resolve().parents[1]
_PROBE = """
import time
t0 = time.process_time()
import {module}
t1 = time.process_time()
from runtime.discovery import load_app
load_app(deployed=True)
t2 = time.process_time()
print(t1 - t0, t2 - t1)
"""
_BOTO3 = """
import time
t0 = time.process_time()
import boto3
print(time.process_time() - t0, 0.0)
"""


def _env(cache: str, *, write: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    if not write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def sample(code: str, env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT,
        env=env,
    ).stdout.split()
    return float(out[0]), float(out[1])


def heaviest(module: str, env: dict[str, str], top: int = 16,
             runs: int = 3) -> list[tuple[int, str]]:
    """The heaviest imports of ``module`` and of ``load_app()`` after it (``-X importtime``).

    ``-X importtime`` reports wall time, so each row is the least of ``runs`` interpreters.
    """
    code = f"import {module}\nfrom runtime.discovery import load_app\nload_app(deployed=True)"
    least: dict[str, int] = {}
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            check=True, capture_output=True, text=True, cwd=ROOT, env=env,
        ).stderr
        for line in err.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _self, cumulative, name = line.removeprefix("import time:").split("|")
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            if depth <= 3:  # the handler, what it pulls in, and the app's modules, a few levels
                row = "  " * depth + name.strip()
                least[row] = min(least.get(row, int(cumulative)), int(cumulative))
    return sorted(((us, row) for row, us in least.items()), reverse=True)[:top]


def measure(label: str, env: dict[str, str]) -> None:
    """Print the medians and ratios of :data:`SAMPLES` interleaved rounds under ``env``."""
    boto3: list[float] = []
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in HANDLERS}
    for _ in range(SAMPLES):  # interleaved, so load on the machine hits all alike
        boto3.append(sample(_BOTO3, env)[0])
        for module in HANDLERS:
            runs[module].append(sample(_PROBE.format(module=module), env))
    base = statistics.median(boto3)
    print(f"{label}: import boto3 {base * 1000:.0f} ms (min {min(boto3) * 1000:.0f})"
          f"  [CPU, median of {SAMPLES} fresh interpreters, interleaved with the handlers]")
    for module in HANDLERS:
        imports, apps = zip(*runs[module], strict=True)
        imp, app = statistics.median(imports), statistics.median(apps)
        print(f"  {module}: import {imp * 1000:.0f} ms (min {min(imports) * 1000:.0f}), then "
              f"load_app() of functions/ {app * 1000:.0f} ms; "
              f"(import + load_app) / import boto3 = {(imp + app) / base:.2f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as cached, tempfile.TemporaryDirectory() as empty:
        warm = _env(cached, write=True)
        sample(_PROBE.format(module=HANDLERS[0]), warm)  # writes every module's .pyc
        sample(_PROBE.format(module=HANDLERS[1]), warm)
        measure("bytecode cached", _env(cached, write=False))
        measure("no bytecode", _env(empty, write=False))
        for module in HANDLERS:
            print(f"\nheaviest imports of {module} + load_app(), bytecode cached "
                  "(cumulative, microseconds):")
            for micros, name in heaviest(module, _env(cached, write=False)):
                print(f"  {micros:>8}  {name}")


if __name__ == "__main__":
    main()
