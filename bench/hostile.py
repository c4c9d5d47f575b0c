"""Hostile-input bench: a catalogue of malformed and crafted inputs, each with the handling it
must get, tried through the test harness on each backend; prints what was mishandled.

    .venv/bin/python bench/hostile.py                       # the local backend (1-2 s)
    .venv/bin/python bench/hostile.py --backend aws         # on the emulators (40-100 s)
    .venv/bin/python bench/hostile.py --backend local --backend aws -v

Categories (issue 23):
- send: events refused at send with an ``InvalidEventError`` naming the path and the rule
  (integers past int64, lone surrogates, NaN, nesting past 64 levels, non-string keys, a
  ``ts`` in the future, bad names, sets and objects, a list with one bad event), no run
  started; and the edges accepted, their values carried exactly. Levels are counted from
  the event object, so ``data`` itself is the second.
- waiters: a crafted event planted before honest ones (a match value 55 levels deep or
  450 KB): the honest cancel lands, the honest wait resolves, the crafted run fails saying
  why; an event nested 60 deep reaching honest waiters breaks none of them.
- outputs: step and handler outputs no store can hold exactly: the body runs once, the step
  fails with ``StepLimitError`` naming the step and the path; the edges stored exactly.
- errors: error messages with lone surrogates: recorded escaped, the body run once.
- step ids: ids that look like generated keys get their own results; ids too long or not
  UTF-8 fail the run clearly.
- step data: ``step.invoke`` and ``step.send_event`` data with bad values: the run fails,
  not retriable, naming the path; nothing is invoked or sent.

Every input must also leave no dead letter. An input counts as handled only if every
expectation holds. Printed per backend: a table per category (tried, handled, mishandled),
one line per mishandled input with its reasons, and "inputs tried N, mishandled M"; with both
backends, the inputs whose error text differs between them. Exit status 0 when every input is
handled, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime import App, CancelOn, Context, NonRetriableError, TriggerEvent
from runtime.errors import InvalidEventError
from runtime.testing import Harness, RunView

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ECHO = "hostile/echo"  # the event of the function every send probe may start


def nested(depth: int, leaf: Any = "x") -> Any:
    """``leaf`` inside ``depth`` lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def circular() -> dict[str, Any]:
    """An object that contains itself (through a list)."""
    loop: dict[str, Any] = {"x": []}
    loop["x"].append(loop)
    return loop


class Probe(ABC):
    """One hostile input: the functions it needs, what it does, and what must follow.

    Attributes:
        category: The table row it is counted in.
        name: What it is, in a few words.
        said: The error text it observed, compared between backends.
    """

    category = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.said: str | None = None
        self.slug = "".join(c if c.isalnum() else "-" for c in name.lower())[:48].strip("-")

    def install(self, app: App) -> None:  # noqa: B027 - most inputs need no function
        """Register the functions this input needs (before the harness is built)."""

    @abstractmethod
    def run(self, h: Harness) -> list[str]:
        """Try the input; return why it was mishandled (empty when handled as expected)."""


def expect(reasons: list[str], holds: bool, why: str) -> None:
    """Add ``why`` to ``reasons`` unless the expectation holds."""
    if not holds:
        reasons.append(why)


def cut(text: object, size: int = 110) -> str:
    shown = repr(text) if not isinstance(text, str) else text
    return shown if len(shown) <= size else shown[:size] + "..."


def run_of_event(h: Harness, function_id: str, event_id: str) -> RunView | None:
    """The run of ``function_id`` that ``event_id`` started, if any."""
    for view in h.runs(function_id):
        if view.state.run.events[0]["id"] == event_id:
            return view
    return None


def run_failed_saying(run: RunView | None, *fragments: str) -> list[str]:
    """Reasons ``run`` is not a failed run whose error holds every fragment."""
    if run is None:
        return ["no run"]
    if run.status != "Failed":
        return [f"run {run.status}, expected Failed (error: {cut(run.error)})"]
    missing = [part for part in fragments if part not in (run.error or "")]
    return [f"run error lacks {cut(missing[0], 40)!r}: {cut(run.error)}"] if missing else []


# --- send: refused with the path and the rule, or accepted exactly ------------------------


class Refused(Probe):
    """An event ``send`` must refuse, naming the path and the rule, starting no run."""

    category = "send refused"

    def __init__(self, name: str, event: Any, says: str) -> None:
        super().__init__(name)
        self.event, self.says = event, says

    def run(self, h: Harness) -> list[str]:
        before = len(h.runs("echo"))
        event = self.event(h) if callable(self.event) else self.event
        try:
            ids = h.send(event)
        except InvalidEventError as exc:
            self.said = str(exc)
        except Exception as exc:  # anything but a refusal is the finding
            return [f"raised {type(exc).__name__}, not InvalidEventError: {cut(exc)}"]
        else:
            return [f"accepted as {ids}"]
        reasons: list[str] = []
        expect(reasons, self.says in self.said, f"message lacks {self.says!r}: {cut(self.said)}")
        started = len(h.runs("echo")) - before
        expect(reasons, started == 0, f"{started} runs started all the same")
        return reasons


class Accepted(Probe):
    """An event at the edge of the rule: accepted, and its data reaches the run exactly."""

    category = "send accepted"

    def __init__(self, name: str, event: Any, echoed: bool = True) -> None:
        super().__init__(name)
        self.event, self.echoed = event, echoed

    def run(self, h: Harness) -> list[str]:
        event = self.event(h) if callable(self.event) else self.event
        (event_id,) = h.send(event)
        if not self.echoed:
            return []
        run = run_of_event(h, "echo", event_id)
        if run is None:
            return ["no run started"]
        reasons: list[str] = []
        expect(reasons, run.status == "Completed", f"run {run.status}: {cut(run.error)}")
        sent = event.get("data", {})
        expect(reasons, run.output == sent, f"data came back changed: {cut(run.output)}")
        return reasons


def later(ms: int, **fields: Any) -> Callable[[Harness], dict[str, Any]]:
    """An echo event whose ``ts`` is ``ms`` after the harness's clock."""
    return lambda h: {"name": ECHO, "ts": int(h.clock.now() * 1000) + ms, **fields}


def echo(data: Any = None, **fields: Any) -> dict[str, Any]:
    return {"name": ECHO, "data": {} if data is None else data, **fields}


def send_probes() -> list[Probe]:
    out_of_range = "is outside -2**63..2**63-1"
    bad_name = "event.name: event name must start with a letter or digit"
    return [
        Refused("10**400", echo({"n": 10**400}), "event.data.n: an integer of about 401 digits"),
        Refused("2**70 in a list", echo({"n": [2**70]}),
                f"event.data.n[0]: 1180591620717411303424 {out_of_range}"),
        Refused("-(2**63)-1", echo({"n": -(2**63) - 1}),
                f"event.data.n: -9223372036854775809 {out_of_range}"),
        Refused("2**64 in user", echo(user={"n": 2**64}), "event.user.n: 18446"),
        Refused("lone surrogate in a value", echo({"file": "caf\udce9.txt"}),
                "event.data.file: contains a lone surrogate"),
        Refused("lone surrogate in a key", echo({"a b": {"\udc80": 1}}),
                "event.data['a b']: has a key with a lone surrogate"),
        Refused("lone surrogate in the id", echo(id="\ud800"),
                "event.id: contains a lone surrogate"),
        Refused("lone surrogate in the name", {"name": "caf\udce9"},
                "event.name: contains a lone surrogate"),
        Refused("NaN", echo({"x": float("nan")}), "event.data.x: contains nan"),
        Refused("-Infinity", echo({"x": [float("-inf")]}), "event.data.x[0]: contains -inf"),
        Refused("data nested 65 levels", echo({"v": nested(64)}),
                "]: nested deeper than 64 levels"),
        Refused("event nested 10,000 levels", echo({"v": nested(10_000)}),
                "]: nested deeper than 64 levels"),
        Refused("int key", echo({1: "a"}), "event.data: has the int key 1"),
        Refused("{1: 'a', '1': 'b'}", echo({1: "a", "1": "b"}), "event.data: has the int key 1"),
        Refused("tuple key", echo({"k": {(1, 2): "a"}}), "event.data.k: has the tuple key"),
        Refused("ts an hour ahead", later(3_600_000),
                "event.ts: 1772442000000 is 3600 s ahead"),
        Refused("ts a string", echo(ts="2026-03-02"), "event.ts: must be milliseconds"),
        Refused("name of 129 characters", {"name": "n" * 129},
                "event.name: event name is 129 characters, over the 128"),
        Refused("name with a space", {"name": "order paid"}, bad_name),
        Refused("name with escape codes", {"name": "\x1b[2Jx"}, bad_name),
        Refused("name '../x'", {"name": "../x"}, bad_name),
        Refused("reserved name", {"name": "stepkit/function.failed"},
                "event.name: 'stepkit/function.failed' is reserved"),
        Refused("a set", echo({"tags": {1, 2}}), "event.data.tags: is a set"),
        Refused("an object", echo({"when": object()}), "event.data.when: is an object"),
        Refused("bytes", echo({"b": b"\xff"}), "event.data.b: is a bytes"),
        Refused("data a list", echo([1]), "event.data: Input should be a valid dictionary"),
        Refused("a list with one bad event", [echo({"n": 1}), echo({"n": 2**64})],
                "event[1].data.n: 18446744073709551616 is outside"),
        Accepted("2**63-1 and -(2**63)", echo({"max": 2**63 - 1, "min": -(2**63)})),
        Accepted("data nested 64 levels", echo({"v": nested(63)})),
        Accepted("ts 60 s ahead", later(60_000, data={"n": 1})),
        Accepted("name of 128 characters", {"name": "n" * 128}, echoed=False),
        Accepted("unicode text and keys", echo({"名前": "café ☕ \U0001f600", "": "empty key"})),
    ]


# --- waiters: one crafted run cannot break another's cancel or wait ----------------------


class CancelPoison(Probe):
    """A run whose cancel_on match value is crafted, started before an honest run."""

    category = "poisoned waiters"

    def __init__(self, name: str, crafted: Any, why: str) -> None:
        super().__init__(name)
        self.crafted, self.why = crafted, why
        self.shipped: list[str] = []

    def install(self, app: App) -> None:
        shipped = self.shipped

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/placed"),
                      cancel_on=CancelOn(event=f"{self.slug}/cancelled", match="data.order_id"))
        def ship(ctx: Context) -> None:
            ctx.step.sleep("pack", "1h")
            ctx.step.run("ship", lambda: shipped.append(str(ctx.event.data["order_id"])[:8]))

    def run(self, h: Harness) -> list[str]:
        (crafted,) = h.send(f"{self.slug}/placed", {"order_id": self.crafted})
        (honest,) = h.send(f"{self.slug}/placed", {"order_id": "o1"})
        h.send(f"{self.slug}/cancelled", {"order_id": self.crafted})  # renew the poison
        h.send(f"{self.slug}/cancelled", {"order_id": "o1"})
        h.advance("2h")
        reasons: list[str] = []
        run = run_of_event(h, self.slug, honest)
        expect(reasons, run is not None and run.status == "Cancelled",
               f"the honest run is {run and run.status}, not Cancelled")
        bad = run_of_event(h, self.slug, crafted)
        self.said = bad.error if bad else None
        reasons += run_failed_saying(bad, "cancel_on[0]", "event.data.order_id", self.why)
        expect(reasons, self.shipped == [], f"shipped {self.shipped}")
        return reasons


class WaitPoison(Probe):
    """A run waiting for a crafted value, started before an honest run's wait."""

    category = "poisoned waiters"

    def __init__(self, name: str, crafted: Any, why: str) -> None:
        super().__init__(name)
        self.crafted, self.why = crafted, why

    def install(self, app: App) -> None:
        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/placed"))
        def await_payment(ctx: Context) -> str:
            paid = ctx.step.wait_for_event("paid", event=f"{self.slug}/paid", timeout="1h",
                                           match="data.order_id")
            return "paid" if paid else "timed out"

    def run(self, h: Harness) -> list[str]:
        (crafted,) = h.send(f"{self.slug}/placed", {"order_id": self.crafted})
        (honest,) = h.send(f"{self.slug}/placed", {"order_id": "o1"})
        h.send(f"{self.slug}/paid", {"order_id": self.crafted})
        h.send(f"{self.slug}/paid", {"order_id": "o1"})
        reasons: list[str] = []
        run = run_of_event(h, self.slug, honest)
        expect(reasons, run is not None and run.output == "paid",
               f"the honest wait: {run and run.status} {run and cut(run.output)}")
        bad = run_of_event(h, self.slug, crafted)
        self.said = bad.error if bad else None
        reasons += run_failed_saying(bad, "step.wait_for_event 'paid'", self.why)
        return reasons


class DeepEventIntoWaiters(Probe):
    """An event nested as deep as events may be, reaching an honest wait and cancel rule."""

    category = "poisoned waiters"

    def install(self, app: App) -> None:
        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/placed"),
                      cancel_on=CancelOn(event=f"{self.slug}/paid",
                                         if_="size(async.data.v) > 99"))
        def await_payment(ctx: Context) -> str:
            paid = ctx.step.wait_for_event(
                "paid", event=f"{self.slug}/paid", timeout="1h",
                if_="async.data.order_id == event.data.order_id && size(async.data.v) > 0")
            return "paid" if paid else "timed out"

    def run(self, h: Harness) -> list[str]:
        (honest,) = h.send(f"{self.slug}/placed", {"order_id": "o1"})
        h.send(f"{self.slug}/paid", {"order_id": nested(60), "v": nested(60)})
        h.send(f"{self.slug}/paid", {"order_id": "o1", "v": [1]})
        run = run_of_event(h, self.slug, honest)
        reasons: list[str] = []
        expect(reasons, run is not None and run.output == "paid",
               f"the honest wait: {run and run.status} {run and cut(run.output)}")
        return reasons


class DeepEventIntoTriggers(Probe):
    """An event nested as deep as events may be, reaching a trigger ``if_`` and a flow key."""

    category = "poisoned waiters"

    def install(self, app: App) -> None:
        name = f"{self.slug}/placed"

        @app.function(id=f"{self.slug}-if", trigger=TriggerEvent(name, if_="event.data.v == [1]"))
        def filtered(ctx: Context) -> Any:
            return ctx.event.data["v"]

        @app.function(id=f"{self.slug}-key", trigger=TriggerEvent(name),
                      idempotency="event.data.v")
        def keyed(ctx: Context) -> Any:
            return ctx.event.data["v"]

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/placed", {"v": nested(62)})
        (honest,) = h.send(f"{self.slug}/placed", {"v": [1]})
        reasons: list[str] = []
        for kind in ("if", "key"):
            run = run_of_event(h, f"{self.slug}-{kind}", honest)
            expect(reasons, run is not None and run.output == [1],
                   f"the honest event's {kind} run: {run and run.status}")
        return reasons


def waiter_probes() -> list[Probe]:
    deep, large = nested(55), "x" * 450_000
    return [
        CancelPoison("cancel_on, match value 55 deep", deep, "nested deeper than 8"),
        CancelPoison("cancel_on, match value 450 KB", large, "450002 bytes"),
        WaitPoison("wait, match value 55 deep", deep, "nested deeper than 8"),
        WaitPoison("wait, match value 450 KB", large, "450002 bytes"),
        DeepEventIntoWaiters("event nested 62 deep into waiters"),
        DeepEventIntoTriggers("event nested 62 deep into a filter and a key"),
    ]


# --- outputs: what no store can hold fails its step once, naming step and path ------------


class Unstorable(Probe):
    """A step (retries=3) returning ``value``: fails once with StepLimitError and the path."""

    category = "step outputs"

    def __init__(self, name: str, value: Callable[[], Any], path: str) -> None:
        super().__init__(name)
        self.value, self.path = value, path
        self.calls: list[int] = []

    def install(self, app: App) -> None:
        calls, value = self.calls, self.value

        def produce() -> Any:
            calls.append(1)
            return value()

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"), retries=3)
        def body(ctx: Context) -> Any:
            return ctx.step.run("list", produce)

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("2h")  # every retry there would be
        reasons: list[str] = []
        expect(reasons, len(self.calls) == 1, f"the body ran {len(self.calls)} times")
        run = h.only_run(self.slug)
        expect(reasons, run.status == "Failed", f"run {run.status}")
        err = run.steps["list"].error if "list" in run.steps else None
        if err is None:
            return [*reasons, f"no step error recorded; run error {cut(run.error)}"]
        self.said = f"{err.name}: {err.message}"
        expect(reasons, err.name == "StepLimitError", f"step failed with {err.name}")
        expect(reasons, "step 'list'" in err.message and self.path in err.message,
               f"message lacks the step or {self.path!r}: {cut(err.message)}")
        return reasons


class HandlerOutput(Probe):
    """A handler (retries=3) returning ``value``: the run fails once, naming the path."""

    category = "step outputs"

    def __init__(self, name: str, value: Any, path: str) -> None:
        super().__init__(name)
        self.value, self.path = value, path
        self.calls: list[int] = []

    def install(self, app: App) -> None:
        calls, value = self.calls, self.value

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"), retries=3)
        def body(ctx: Context) -> Any:
            calls.append(1)
            return value

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("2h")
        run = h.only_run(self.slug)
        self.said = run.error
        reasons = run_failed_saying(run, "StepLimitError: the handler returned", self.path)
        expect(reasons, len(self.calls) == 1, f"the handler ran {len(self.calls)} times")
        return reasons


class Storable(Probe):
    """A step returning a value at the edge of the rule: stored and replayed exactly."""

    category = "step outputs"

    def __init__(self, name: str, value: Any) -> None:
        super().__init__(name)
        self.value = value

    def install(self, app: App) -> None:
        value = self.value

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"))
        def body(ctx: Context) -> Any:
            kept = ctx.step.run("keep", lambda: value)
            ctx.step.sleep("nap", "1m")  # the value comes back from the store, replayed
            return kept

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("2m")
        run = h.only_run(self.slug)
        reasons: list[str] = []
        expect(reasons, run.status == "Completed", f"run {run.status}: {cut(run.error)}")
        expect(reasons, run.output == self.value, f"came back changed: {cut(run.output)}")
        return reasons


def output_probes() -> list[Probe]:
    return [
        Unstorable("lone surrogate in a value", lambda: {"names": ["ok", "caf\udce9.txt"]},
                   "output.names[1]: contains a lone surrogate"),
        Unstorable("lone surrogate in a key", lambda: {"caf\udce9": 1},
                   "output: has a key with a lone surrogate"),
        Unstorable("int keys", lambda: {1: "a", 2: "b"}, "output: has the int key 1"),
        Unstorable("{1: 'a', '1': 'b'}", lambda: {1: "a", "1": "b"},
                   "output: has the int key 1"),
        Unstorable("nested 5,000 deep", lambda: nested(5_000), "nested deeper than 64"),
        Unstorable("circular", circular, "output.x[0]: is a circular reference"),
        Unstorable("10**400", lambda: {"n": 10**400}, "output.n: an integer of about 401"),
        Unstorable("2**64", lambda: [2**64], "output[0]: 18446744073709551616 is outside"),
        Unstorable("a set", lambda: {"tags": {1, 2}}, "output.tags: is a set"),
        Unstorable("NaN", lambda: {"x": float("nan")}, "output.x: contains nan"),
        Unstorable("an object", lambda: object(), "output: is an object"),
        HandlerOutput("handler returns 10**400", {"n": 10**400},
                      "output.n: an integer of about 401"),
        HandlerOutput("handler returns a surrogate", ["\udce9"],
                      "output[0]: contains a lone surrogate"),
        Storable("2**63-1, -(2**63), 64 levels",
                 {"max": 2**63 - 1, "min": -(2**63), "deep": nested(63)}),
    ]


# --- errors: a message with a lone surrogate is recorded escaped, the body run once ------


class SurrogateError(Probe):
    """A step (or, with ``in_step=False``, the handler) raising ``error`` with retries=0."""

    category = "error messages"

    def __init__(self, name: str, error: Exception, in_step: bool = True) -> None:
        super().__init__(name)
        self.error, self.in_step = error, in_step
        self.calls: list[int] = []

    def install(self, app: App) -> None:
        calls, error = self.calls, self.error

        def fail() -> None:
            calls.append(1)
            raise error

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"), retries=0)
        def copy(ctx: Context) -> None:
            if self.in_step:
                ctx.step.run("open", fail)
            else:
                fail()

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("1h")
        run = h.only_run(self.slug)
        reasons: list[str] = []
        expect(reasons, len(self.calls) == 1, f"the body ran {len(self.calls)} times")
        expect(reasons, run.status == "Failed", f"run {run.status}")
        err = run.steps["open"].error if self.in_step and "open" in run.steps \
            else run.state.run.error
        message = err.message if err is not None else None
        self.said = message
        escaped = "cannot open caf\\udce9.txt"
        expect(reasons, message == escaped, f"recorded {cut(message)!r}, not {escaped!r}")
        return reasons


def error_probes() -> list[Probe]:
    text = "cannot open caf\udce9.txt"
    return [
        SurrogateError("NonRetriableError in a step", NonRetriableError(text)),
        SurrogateError("RuntimeError in a step", RuntimeError(text)),
        SurrogateError("RuntimeError in the handler", RuntimeError(text), in_step=False),
    ]


# --- step ids: never another step's result; too long or not UTF-8 refused clearly ---------


class DistinctIds(Probe):
    """Steps whose ids look like generated keys: each returns its own result."""

    category = "step ids"

    def __init__(self, name: str, body: Callable[[Context], list[Any]],
                 expected: list[Any]) -> None:
        super().__init__(name)
        self.body, self.expected = body, expected

    def install(self, app: App) -> None:
        app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"))(self.body)

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("2m")
        run = h.only_run(self.slug)
        if run.output != self.expected:
            return [f"got {cut(run.output)} ({run.status} {cut(run.error, 60)})"]
        return []


def repeated_ids(ctx: Context) -> list[Any]:
    first = ctx.step.run("fetch", lambda: "first fetch")
    explicit = ctx.step.run("fetch:1", lambda: "explicit fetch:1")
    ctx.step.sleep("nap", "1m")  # and the same after a replay from the store
    second = ctx.step.run("fetch", lambda: "second fetch")
    return [first, explicit, second]


def branch_ids(ctx: Context) -> list[Any]:
    top = ctx.step.run("a@0", lambda: "top-level a@0")
    escaped = ctx.step.run("b%401", lambda: "top-level b%401")
    branch = ctx.step.parallel([lambda: ctx.step.run("a", lambda: "branch a"),
                                lambda: ctx.step.run("b", lambda: "branch b")])
    return [top, escaped, *branch]


def long_ids(ctx: Context) -> list[Any]:
    return [ctx.step.run("é" * 128, lambda: "256 bytes"),
            ctx.step.run("w" * 256, lambda: "256 characters")]


class BadId(Probe):
    """A step id the stores cannot key: the run fails with ``says``, naming the id."""

    category = "step ids"

    def __init__(self, name: str, step: Callable[[Context], Any], says: str) -> None:
        super().__init__(name)
        self.step, self.says = step, says

    def install(self, app: App) -> None:
        step = self.step

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"), retries=0)
        def body(ctx: Context) -> Any:
            return step(ctx)

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("2h")
        run = h.only_run(self.slug)
        self.said = run.error
        return run_failed_saying(run, self.says)


def id_probes() -> list[Probe]:
    too_long = "1100 bytes, over the 256 a step id may have"
    return [
        DistinctIds("'fetch', 'fetch:1', 'fetch'", repeated_ids,
                    ["first fetch", "explicit fetch:1", "second fetch"]),
        DistinctIds("'a@0', 'b%401' vs branches 'a', 'b'", branch_ids,
                    ["top-level a@0", "top-level b%401", "branch a", "branch b"]),
        DistinctIds("ids of 256 bytes", long_ids, ["256 bytes", "256 characters"]),
        BadId("run id of 1,100 characters",
              lambda ctx: ctx.step.run("w" * 1_100, lambda: 1), too_long),
        BadId("wait id of 1,100 characters",
              lambda ctx: ctx.step.wait_for_event("w" * 1_100, event="t/never", timeout="1h"),
              too_long),
        BadId("sleep id of 1,100 bytes",
              lambda ctx: ctx.step.sleep("é" * 550, "1m"), too_long),
        BadId("id with a lone surrogate",
              lambda ctx: ctx.step.run("x\udce9", lambda: 1), "contains a lone surrogate"),
        BadId("empty id", lambda ctx: ctx.step.run("", lambda: 1),
              "step id must be a non-empty string"),
    ]


# --- step data: invoke and send_event data are checked before anything leaves ------------


class BadStepData(Probe):
    """A handler (retries=3) invoking or sending bad data: fails once, not retriable."""

    category = "step data"

    def __init__(self, name: str, step: Callable[[Context, str], Any], says: str) -> None:
        super().__init__(name)
        self.step, self.says = step, says
        self.calls: list[int] = []
        self.reached: list[int] = []

    def install(self, app: App) -> None:
        calls, reached, step = self.calls, self.reached, self.step

        @app.function(id=self.slug, trigger=TriggerEvent(f"{self.slug}/go"), retries=3)
        def body(ctx: Context) -> Any:
            calls.append(1)
            return step(ctx, self.slug)

        @app.function(id=f"{self.slug}-child", trigger=TriggerEvent(f"{self.slug}/told"))
        def child(ctx: Context) -> None:
            reached.append(1)

    def run(self, h: Harness) -> list[str]:
        h.send(f"{self.slug}/go", {})
        h.advance("2h")
        run = h.only_run(self.slug)
        self.said = run.error
        reasons = run_failed_saying(run, self.says)
        err = run.state.run.error
        expect(reasons, err is None or not err.retriable, "recorded as retriable")
        expect(reasons, len(self.calls) == 1, f"the handler ran {len(self.calls)} times")
        expect(reasons, not self.reached, "the bad data reached the other function")
        return reasons


def data_probes() -> list[Probe]:
    def invoke(data: Any) -> Callable[[Context, str], Any]:
        return lambda ctx, slug: ctx.step.invoke("call", function=f"{slug}-child", data=data)

    def send(data: Any, name: str = "") -> Callable[[Context, str], Any]:
        return lambda ctx, slug: ctx.step.send_event(
            "tell", {"name": name or f"{slug}/told", "data": data})

    invoked = "NonRetriableError: step.invoke 'call': "
    return [
        BadStepData("invoke data 10**400", invoke({"n": [10**400]}),
                    f"{invoked}data.n[0]: an integer of about 401"),
        BadStepData("invoke data lone surrogate", invoke({"s": "caf\udce9"}),
                    f"{invoked}data.s: contains a lone surrogate"),
        BadStepData("invoke data int key", invoke({"k": {1: "a"}}),
                    f"{invoked}data.k: has the int key 1"),
        BadStepData("invoke data a list", invoke([1]), f"{invoked}data must be a dict"),
        BadStepData("send_event data 2**70", send({"n": [2**70]}),
                    "event[0].data.n[0]: 1180591620717411303424 is outside"),
        BadStepData("send_event data NaN", send({"x": float("nan")}),
                    "event[0].data.x: contains nan"),
        BadStepData("send_event data a set", send({"tags": {1}}),
                    "event[0].data.tags: is a set"),
        BadStepData("send_event bad name", send({}, "bad name"), "event[0].name: event name"),
    ]


# --- the run ------------------------------------------------------------------------------


def catalogue() -> list[Probe]:
    """Every input, in the order tried (fresh instances: each keeps its own observations)."""
    return [*send_probes(), *waiter_probes(), *output_probes(), *error_probes(),
            *id_probes(), *data_probes()]


def build_app(probes: list[Probe]) -> App:
    app = App("hostile")

    @app.function(id="echo", trigger=TriggerEvent(ECHO))
    def echo_data(ctx: Context) -> Any:
        return ctx.event.data

    for probe in probes:
        probe.install(app)
    return app


@dataclass
class Outcome:
    """What one input got on one backend."""

    probe: Probe
    reasons: list[str] = field(default_factory=list)


def attempt(h: Harness, probe: Probe) -> Outcome:
    """Try one input; any unexpected exception, or a new dead letter, is a mishandling."""
    dead_before = len(h.backend.dead_letters())
    try:
        reasons = probe.run(h)
    except Exception as exc:  # reported; the bench goes on
        reasons = [f"the bench's own driving raised {type(exc).__name__}: {cut(exc)}"]
    dead = len(h.backend.dead_letters()) - dead_before
    if dead:
        reasons.append(f"{dead} dead letters")
    return Outcome(probe, reasons)


def try_all(h: Harness, probes: list[Probe]) -> list[Outcome]:
    return [attempt(h, probe) for probe in probes]


@contextlib.contextmanager
def harness(backend: str, probes: list[Probe], emulators: Any = None) -> Iterator[Harness]:
    app = build_app(probes)
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "local":
            h = Harness.local(app, path=Path(tmp) / "hostile.sqlite3", start=START)
        else:
            h = Harness.aws(app, emulators, start=START)
        # The AWS workers print their metrics (EMF lines) to stdout, as Lambda wants.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                yield h
            finally:
                h.close()


def bench(backend: str, emulators: Any = None,
          select: Callable[[Probe], bool] = lambda p: True) -> tuple[list[Outcome], float]:
    """Every chosen input on one backend: the outcomes and the seconds it took."""
    probes = [p for p in catalogue() if select(p)]
    t0 = time.perf_counter()
    with harness(backend, probes, emulators) as h:
        outcomes = try_all(h, probes)
    return outcomes, time.perf_counter() - t0


def report(backend: str, outcomes: list[Outcome], seconds: float, verbose: bool) -> None:
    print(f"\n[{backend}] {len(outcomes)} inputs, {seconds:.1f} s")
    print(f"  {'category':20} {'tried':>6} {'handled':>8} {'mishandled':>11}")
    for category in dict.fromkeys(o.probe.category for o in outcomes):
        rows = [o for o in outcomes if o.probe.category == category]
        bad = sum(bool(o.reasons) for o in rows)
        print(f"  {category:20} {len(rows):>6} {len(rows) - bad:>8} {bad:>11}")
    for o in outcomes:
        if o.reasons or verbose:
            mark = "MISHANDLED" if o.reasons else "ok"
            print(f"  {mark:10} {o.probe.category}: {o.probe.name}")
            for reason in o.reasons:
                print(f"             - {reason}")
            if verbose and o.probe.said:
                print(f"             said: {cut(o.probe.said, 140)}")
    bad = sum(bool(o.reasons) for o in outcomes)
    print(f"  inputs tried {len(outcomes)}, mishandled {bad}")


def disagreements(local: list[Outcome], aws: list[Outcome]) -> list[str]:
    """Inputs whose error text differs between the backends (they must say the same)."""
    out = []
    for a, b in zip(local, aws, strict=True):
        if a.probe.said != b.probe.said:
            out.append(f"{a.probe.category}: {a.probe.name}: local said "
                       f"{cut(a.probe.said, 60)!r}, aws {cut(b.probe.said, 60)!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["local", "aws"],
                        help="repeatable; default: local")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="a line for every input, with the error text it got")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the refused and failed inputs are logged by design
    results: dict[str, list[Outcome]] = {}
    for backend in args.backend or ["local"]:
        if backend == "aws":
            from stepkit_emulators.emulators import aws_emulators

            with aws_emulators() as emulators:
                outcomes, seconds = bench("aws", emulators)
        else:
            outcomes, seconds = bench("local")
        results[backend] = outcomes
        report(backend, outcomes, seconds, args.verbose)
    differ = disagreements(results["local"], results["aws"]) if len(results) == 2 else []
    if len(results) == 2:
        print(f"\n  error texts that differ between the backends: {len(differ)}")
        for line in differ:
            print(f"  - {line}")
    bad = sum(bool(o.reasons) for outcomes in results.values() for o in outcomes)
    sys.exit(1 if bad or differ else 0)


if __name__ == "__main__":
    main()
