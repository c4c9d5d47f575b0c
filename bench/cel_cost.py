"""Benchmark: the CPU one CEL evaluation costs against events of 1 KB, 256 KB and 4 MB.

Prints figures; it is not a test. Run: .venv/bin/python bench/cel_cost.py [--quick]

Each event holds a small ``data.id`` and one big part, ``data.big``, in one of four shapes:
one big list of small maps, a map of many keys, lists nested 64 deep, one long string. For
each, every kind of expression is timed: equality on one path, ``has()``, ``size()`` of the
big part, ``exists()`` over it, and one that uses the event whole. "before" is what every
expression paid until now, whatever it read: converting the whole event to CEL. "after" is
one evaluation now, which binds only the paths the expression reads and converts at most
``WHOLE_VALUES`` values whole, fewer under macros (past that: no match). Then the cases
built to cost the most within that limit, and the worst evaluation of all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from runtime import _cel
from runtime._cel import MACRO_NODES, WHOLE_VALUES
from runtime._cel_reads import Budget

SIZES = {"1 KB": 1024, "256 KB": 256 * 1024, "4 MB": 4 * 1024 * 1024}
KINDS = {
    "equality": "event.data.id == 'x'",
    "has()": "has(event.data.big) && !has(event.data.nope)",
    "size()": "size(event.data.big) > 0",
    "exists()": "event.data.big.exists(x, x == 'zz')",
    "whole event": "event != {}",
}
# Built to cost the most within the limit: the most elements a macro body may run over, a
# heavier body, nested macros, a big map used whole. Each gets as many values as it may.
WORST: dict[str, tuple[str, Callable[[int], Any]]] = {
    "exists() over a list": ("event.data.big.exists(x, x == 'zz')", lambda n: list(range(n))),
    "exists() with a heavy body": (
        "event.data.big.exists(x, x < 0 && x > 5 || x == -1 || string(x) == 'q')",
        lambda n: list(range(n)),
    ),
    "nested exists()": (
        "event.data.big.exists(x, event.data.big.exists(y, x + y == -1))",
        lambda n: list(range(n)),
    ),
    "map() of a list": ("event.data.big.map(x, x * 2).size() == 0", lambda n: list(range(n))),
    "a map used whole": ("event.data.big == {'a': 1}", lambda n: {f"k{i}": i for i in range(n)}),
}


def _grow(make: Callable[[int], Any], size: int) -> Any:
    """``make(n)`` for the smallest doubling-then-halving ``n`` whose JSON reaches ``size``."""
    n = 1
    while len(json.dumps(make(n))) < size:
        n *= 2
    low, high = n // 2, n
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if len(json.dumps(make(mid))) < size else (low, mid)
    return make(high)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 3):  # the event and data maps and the outer list are three levels
        value = [value]
    return value


SHAPES: dict[str, Callable[[int], Any]] = {
    "one big list": lambda n: [{"sku": f"s{i}", "qty": i} for i in range(n)],
    "many keys": lambda n: {f"key{i}": f"value{i}" for i in range(n)},
    "nested 64 deep": lambda n: [_nested(64) for _ in range(n)],
    "long string": lambda n: "x" * n,
}


def event_of(shape: str, size: int) -> dict[str, Any]:
    """An event of about ``size`` bytes of JSON with its big part in ``shape``."""
    big = _grow(SHAPES[shape], size)
    return {"name": "bench/cel", "id": "01", "data": {"id": "x", "big": big}}


def cpu(call: Callable[[], Any], repeat: int) -> float:
    """Median CPU seconds of ``call`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 KB and 256 KB only")
    args = parser.parse_args()
    sizes = {k: v for k, v in SIZES.items() if not args.quick or v < 2**20}
    programs = {kind: _cel.compile_program(source) for kind, source in KINDS.items()}
    worst = 0.0
    print(f"CPU per CEL evaluation (median); at most {WHOLE_VALUES} values converted whole, "
          f"fewer under macros (bodies evaluate at most {MACRO_NODES} parse-tree nodes)")
    for shape in SHAPES:
        for label, size in sizes.items():
            event = event_of(shape, size)
            bound = {"event": event}
            repeat = 1 if size > 2**20 else 3
            before = cpu(lambda e=event: Budget(2**62).convert(e), repeat)  # type: ignore[misc]
            print(f"{shape} {label}: before {_ms(before).strip()} (whole conversion, "
                  "paid by every expression)")
            for kind, program in programs.items():
                result = _cel.evaluate(program, bound)
                after = cpu(lambda p=program, b=bound: _cel.evaluate(p, b),  # type: ignore[misc]
                            max(repeat, 5))
                worst = max(worst, after)
                print(f"  {kind:<12} after {_ms(after)}  (matches: {result})")
    print("Built to cost the most within the limit:")
    for label, (source, make) in WORST.items():
        program = _cel.compile_program(source)
        bound = {"event": {"data": {"big": make(program.limit - 1)}}}  # the big part counts 1
        seconds = cpu(lambda p=program, b=bound: _cel.evaluate(p, b), 5)  # type: ignore[misc]
        worst = max(worst, seconds)
        print(f"  {label:<28} {program.limit - 1:5} elements {_ms(seconds)}")
    print(f"Worst evaluation: {_ms(worst).strip()}")


if __name__ == "__main__":
    main()
