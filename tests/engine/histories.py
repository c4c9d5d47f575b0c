"""Hand-built run histories for the engine's direct tests: one function per situation.

Each :class:`Case` is a run state as a store would load it, the message being handled and the
time, so that the engine's decision and the commit recording it can be computed with no
backend. Nothing here imports the engine: only the test module's adapter does, so moving the
engine's code changes one import there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from runtime import (
    App,
    CancelOn,
    Context,
    NonRetriableError,
    RetryAfterError,
    TriggerEvent,
)
from runtime.records import (
    ErrorInfo,
    Message,
    MessageKind,
    ParentRef,
    RunRecord,
    RunState,
    StepKind,
    StepRecord,
    StepStatus,
)

# A fixed Monday morning: every time below is an offset from it.
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()
NOW = T0 + 600.0
RUN_ID = "01KGOLDENRUN0000000000000A"
WIDE = 60  # branches of the wide group: over the 50 one commit may schedule

#: How many times each step function really ran (a memoized step must not run again).
CALLS: Counter[str] = Counter()

app = App("golden")


def _count(name: str, value: Any) -> Any:
    CALLS[name] += 1
    return value


class Order(BaseModel):
    """The typed data of ``golden/typed`` events."""

    order_id: str
    cents: int


# -- the functions ---------------------------------------------------------------------------


@app.function(id="steps", trigger=TriggerEvent("golden/steps"))
def steps(ctx: Context) -> int:
    """Three steps in a row; returns their sum."""
    a = ctx.step.run("a", _count, "a", 1)
    b = ctx.step.run("b", _count, "b", 2)
    c = ctx.step.run("c", _count, "c", 3)
    return int(a + b + c)


@app.function(id="reuse", trigger=TriggerEvent("golden/reuse"))
def reuse(ctx: Context) -> list[int]:
    """The same step id three times: keys ``item``, ``item:1``, ``item:2``."""
    return [ctx.step.run("item", _count, "item", i) for i in range(3)]


def _flaky() -> None:
    raise ValueError("card declined")


def _refuse() -> None:
    raise NonRetriableError("account closed")


def _busy() -> None:
    raise RetryAfterError("rate limited", "30s")


def _busy_until() -> None:
    raise RetryAfterError("come back later", datetime.fromtimestamp(NOW + 7200, tz=UTC))


def _naive_until() -> None:
    raise RetryAfterError("bad time", datetime(2026, 3, 3, 9, 0))  # naive: refused


@app.function(id="flaky", trigger=TriggerEvent("golden/flaky"), retries=2)
def flaky(ctx: Context) -> str:
    """One step that always raises a retriable error; 3 attempts."""
    ctx.step.run("charge", _flaky)
    return "charged"


@app.function(id="refused", trigger=TriggerEvent("golden/refused"))
def refused(ctx: Context) -> str:
    """One step that raises NonRetriableError."""
    ctx.step.run("charge", _refuse)
    return "charged"


@app.function(id="busy", trigger=TriggerEvent("golden/busy"))
def busy(ctx: Context) -> None:
    """A step that asks to be retried in 30 s."""
    ctx.step.run("call", _busy)


@app.function(id="busy-until", trigger=TriggerEvent("golden/busy-until"))
def busy_until(ctx: Context) -> None:
    """A step that asks to be retried at an absolute time."""
    ctx.step.run("call", _busy_until)


@app.function(id="naive-until", trigger=TriggerEvent("golden/naive-until"))
def naive_until(ctx: Context) -> None:
    """A step whose RetryAfterError has a naive datetime (fails for good)."""
    ctx.step.run("call", _naive_until)


@app.function(id="handler-error", trigger=TriggerEvent("golden/handler-error"), retries=1)
def handler_error(ctx: Context) -> None:
    """Raises outside any step after one step."""
    ctx.step.run("first", _count, "first", "ok")
    raise RuntimeError("handler broke")


@app.function(id="sleeper", trigger=TriggerEvent("golden/sleeper"))
def sleeper(ctx: Context) -> str:
    """Sleeps an hour, then a step."""
    ctx.step.sleep("nap", "1h")
    return str(ctx.step.run("after", _count, "after", "awake"))


@app.function(id="sleep-until", trigger=TriggerEvent("golden/sleep-until"))
def sleep_until(ctx: Context) -> str:
    """Sleeps until the instant in the event's data."""
    ctx.step.sleep_until("until", ctx.event.data["at"])
    return "woke"


@app.function(id="wait-match", trigger=TriggerEvent("golden/wait-match"))
def wait_match(ctx: Context) -> Any:
    """Waits a day for the approval with the same id."""
    got = ctx.step.wait_for_event("approval", event="golden/approved", match="data.id",
                                  timeout="1d")
    return None if got is None else got.data


@app.function(id="wait-if", trigger=TriggerEvent("golden/wait-if"))
def wait_if(ctx: Context) -> Any:
    """Waits an hour for a payment over this run's amount."""
    got = ctx.step.wait_for_event("payment", event="golden/paid",
                                  if_="async.data.cents >= event.data.cents", timeout="1h")
    return "timed out" if got is None else got.data["cents"]


@app.function(id="child", trigger=TriggerEvent("golden/child"),
              cancel_on=CancelOn(event="golden/stop", match="data.id", timeout="2d"))
def child(ctx: Context) -> dict[str, Any]:
    """The invoked function; cancellable, so finishing removes its cancel waiter."""
    return {"echo": ctx.event.data}


@app.function(id="invoker", trigger=TriggerEvent("golden/invoker"))
def invoker(ctx: Context) -> Any:
    """Invokes ``child`` with a timeout, then without one."""
    first = ctx.step.invoke("call-child", function=child, data={"n": 1}, timeout="5m")
    second = ctx.step.invoke("call-again", function="child", data={"n": 2})
    return [first, second]


@app.function(id="invoke-unknown", trigger=TriggerEvent("golden/invoke-unknown"))
def invoke_unknown(ctx: Context) -> Any:
    """Invokes a function that is not registered."""
    return ctx.step.invoke("call", function="nope", data={})


@app.function(id="sender", trigger=TriggerEvent("golden/sender"))
def sender(ctx: Context) -> list[str]:
    """Sends one event, then three."""
    one = ctx.step.send_event("one", {"name": "golden/note", "data": {"n": 0}})
    many = ctx.step.send_event(
        "many", [{"name": "golden/note", "data": {"n": i}} for i in range(1, 4)]
    )
    return one + many


@app.function(id="fanout", trigger=TriggerEvent("golden/fanout"))
def fanout(ctx: Context) -> list[Any]:
    """Three branches, then a step after the group."""
    results = ctx.step.parallel([
        lambda: ctx.step.run("x", _count, "x", "X"),
        lambda: ctx.step.run("y", _flaky),
        lambda: ctx.step.sleep("z", "10m"),
    ])
    ctx.step.run("after", _count, "after", "done")
    return list(results)


@app.function(id="wide", trigger=TriggerEvent("golden/wide"))
def wide(ctx: Context) -> int:
    """A group of 60 branches."""
    results = ctx.step.parallel(
        [lambda i=i: ctx.step.run(f"w{i}", _count, "w", i) for i in range(WIDE)]
    )
    return sum(results)


@app.function(id="nested", trigger=TriggerEvent("golden/nested"))
def nested(ctx: Context) -> Any:
    """A group whose first branch is a group; the same id in two branches."""
    return ctx.step.parallel([
        lambda: ctx.step.parallel([
            lambda: ctx.step.run("leaf", _count, "leaf", 1),
            lambda: ctx.step.run("leaf", _count, "leaf", 2),
        ]),
        lambda: ctx.step.run("leaf", _count, "leaf", 3),
    ])


@app.function(id="outputs", trigger=TriggerEvent("golden/outputs"))
def outputs(ctx: Context) -> Any:
    """The step chosen by the event returns a value the limits or JSON refuse."""
    kind = ctx.event.data["kind"]
    if kind == "big":
        return ctx.step.run("big", lambda: "x" * 2000)
    if kind == "set":
        return ctx.step.run("set", lambda: {"ids": {1, 2}})
    if kind == "nan":
        return ctx.step.run("nan", lambda: [float("nan")])
    return {"when": datetime.fromtimestamp(T0, tz=UTC)}  # the handler's own output


@app.function(id="chained", trigger=TriggerEvent("golden/chained"), checkpointing=True)
def chained(ctx: Context) -> list[str]:
    """Checkpointing: three steps, a sleep, one more step."""
    done = [ctx.step.run(f"s{i}", _count, "s", f"s{i}") for i in range(3)]
    ctx.step.sleep("pause", "1m")
    done.append(ctx.step.run("last", _count, "last", "last"))
    return done


@app.function(id="typed", trigger=TriggerEvent("golden/typed", data=Order))
def typed(ctx: Context) -> dict[str, Any]:
    """Reads its typed data."""
    order: Order = ctx.data
    cents = ctx.step.run("double", _count, "double", order.cents * 2)
    return {"order_id": order.order_id, "cents": cents}


@app.function(id="clock", trigger=TriggerEvent("golden/clock"))
def clock(ctx: Context) -> dict[str, str]:
    """ctx.now() and ctx.uuid(): the same on every replay."""
    ctx.step.run("tick", _count, "tick", 1)
    return {"now": ctx.now().isoformat(), "uuid": str(ctx.uuid())}


# -- building states -------------------------------------------------------------------------


def run(fn_id: str, data: dict[str, Any] | None = None, *, version: int = 0, attempt: int = 0,
        parent: ParentRef | None = None, error: ErrorInfo | None = None) -> RunRecord:
    """A running run of ``fn_id`` triggered by one event, created at ``T0``."""
    name = next(iter(app.get(fn_id).events)).event
    event = {"id": "evt-golden-1", "name": name, "data": data or {}, "user": {},
             "ts": int(T0 * 1000)}
    return RunRecord(RUN_ID, fn_id, (event,), version=version, attempt=attempt,
                     created_at=T0, parent=parent, error=error)


def step(key: str, kind: StepKind = StepKind.RUN, status: StepStatus = StepStatus.COMPLETED,
         *, output: Any = None, at: float = T0 + 60, **more: Any) -> StepRecord:
    """A step record; final ones end at ``at``, pending ones only started then."""
    final = status.final
    return StepRecord(key=key, id=key.partition("@")[0].partition(":")[0], kind=kind,
                      status=status, output=output, started_at=at,
                      ended_at=at if final else None, **more)


def state(record: RunRecord, *records: StepRecord) -> RunState:
    """The run with its steps, by key."""
    return RunState(record, {r.key: r for r in records})


@dataclass(frozen=True)
class Case:
    """One situation: a run state, the message being handled and when.

    Attributes:
        state: The run as loaded.
        now: The time of the invocation.
        msg: The message being handled (a CONTINUE, or a BRANCH for ``target``).
        target: The branch key, for a branch invocation.
        limits: Fields of the engine's ``Limits`` that differ from the defaults.
        chain: Drive the main line for up to this many invocations: after each commit,
            apply it and handle its CONTINUE (at its due time) as the next message, as a
            checkpointed invocation or the queue would; stop at a commit that sends
            anything else (a wake, branches, events, the run's end) or at none.
    """

    state: RunState
    now: float = NOW
    msg: Message | None = None
    target: str | None = None
    limits: dict[str, int] = field(default_factory=dict)
    chain: int = 0

    @property
    def fn_id(self) -> str:
        """The function the run belongs to."""
        return self.state.run.function_id

    def message(self, name: str) -> Message:
        """The message handled: given, or the CONTINUE (BRANCH) a run at this state expects."""
        if self.msg is not None:
            return self.msg
        run_ = self.state.run
        if self.target is not None:
            rec = self.state.steps.get(self.target)
            return Message(MessageKind.BRANCH, run_.function_id, run_.run_id, id=f"msg-{name}",
                           key=self.target, attempt=rec.attempt if rec else 0)
        return Message(MessageKind.CONTINUE, run_.function_id, run_.run_id, id=f"msg-{name}",
                       version=run_.version)


def _retrying(key: str, attempt: int, branch: bool = False) -> StepRecord:
    error = ErrorInfo("ValueError", "card declined", True, "Traceback ...")
    errors = [{"attempt": n, "at": f"2026-03-02T08:0{n}:00Z",
               "error": "ValueError: card declined"} for n in range(1, attempt + 1)]
    return step(key, status=StepStatus.RETRYING, attempt=attempt, error=error,
                wake_at=NOW - 1, branch=branch, detail={"errors": errors})


def _branches(keys: list[str], status: StepStatus = StepStatus.SCHEDULED) -> list[StepRecord]:
    """Branch records as their group scheduled them (fanout's ``z`` is a sleep)."""
    return [step(k, StepKind.SLEEP if k.startswith("z@") else StepKind.RUN, status,
                 branch=True, output=0 if status.final else None) for k in keys]


_WIDE_KEYS = [f"w{i}@{i}" for i in range(WIDE)]
_SLEEPING = StepStatus.SLEEPING
_APPROVAL = {"id": "evt-approval", "name": "golden/approved", "data": {"id": "A-1", "ok": True},
             "user": {}, "ts": int((T0 + 300) * 1000)}
_WAITING = step("approval", StepKind.WAIT, StepStatus.WAITING, wake_at=T0 + 86460,
                detail={"event": "golden/approved",
                        "expression": '"A-1" == async.data.id', "since": int(T0 * 1000)})


def _cases() -> dict[str, Case]:
    s = StepKind
    return {
        # step.run
        "run-first-call": Case(state(run("steps"))),
        "run-memoized-then-next": Case(state(run("steps", version=2), step("a", output=1))),
        "run-all-memoized-completes": Case(state(
            run("steps", version=3), step("a", output=1), step("b", output=2),
            step("c", output=3))),
        "run-completed-clears-earlier-error": Case(state(
            run("steps", version=4, attempt=1, error=ErrorInfo("RuntimeError", "once")),
            step("a", output=1), step("b", output=2), step("c", output=3))),
        "run-reused-id-next-key": Case(state(run("reuse", version=1), step("item", output=0))),
        "run-retry-with-backoff": Case(state(run("flaky"))),
        "run-retry-second-attempt": Case(state(run("flaky", version=1), _retrying("charge", 1))),
        "run-retries-exhausted-fails": Case(state(run("flaky", version=2),
                                                  _retrying("charge", 2))),
        "run-failed-step-fails-run": Case(state(
            run("flaky", version=3),
            step("charge", status=StepStatus.FAILED, attempt=2,
                 error=ErrorInfo("ValueError", "card declined", True)))),
        "run-non-retriable": Case(state(run("refused"))),
        "run-retry-after-delay": Case(state(run("busy"))),
        "run-retry-after-datetime": Case(state(run("busy-until"))),
        "run-retry-after-naive-datetime": Case(state(run("naive-until"))),
        # the handler's own errors
        "handler-error-retries": Case(state(run("handler-error", version=1),
                                            step("first", output="ok"))),
        "handler-error-fails-after-retries": Case(state(
            run("handler-error", version=2, attempt=1, error=ErrorInfo("RuntimeError", "x")),
            step("first", output="ok"))),
        # sleeps
        "sleep-new": Case(state(run("sleeper"))),
        "sleep-in-flight-noop": Case(state(
            run("sleeper", version=1), step("nap", s.SLEEP, _SLEEPING, wake_at=NOW + 3000))),
        "sleep-done-then-next": Case(state(run("sleeper", version=2),
                                           step("nap", s.SLEEP, at=NOW - 5))),
        "sleep-until-future": Case(state(run("sleep-until", {"at": "2026-03-05T12:00:00Z"}))),
        "sleep-until-past-succeeds": Case(state(
            run("sleep-until", {"at": "2026-03-01T00:00:00+01:00"}))),
        # waits
        "wait-match-new": Case(state(run("wait-match", {"id": "A-1"}))),
        "wait-if-new": Case(state(run("wait-if", {"cents": 500}))),
        "wait-in-flight-noop": Case(state(run("wait-match", {"id": "A-1"}, version=1), _WAITING)),
        "wait-matched-completes": Case(state(
            run("wait-match", {"id": "A-1"}, version=2),
            step("approval", s.WAIT, output=_APPROVAL, at=T0 + 300))),
        "wait-timed-out-completes": Case(state(
            run("wait-if", {"cents": 500}, version=2),
            step("payment", s.WAIT, output=None, at=T0 + 3600))),
        # invokes
        "invoke-with-timeout": Case(state(run("invoker"))),
        "invoke-without-timeout": Case(state(run("invoker", version=2),
                                             step("call-child", s.INVOKE, output={"echo": 1}))),
        "invoke-unknown-function": Case(state(run("invoke-unknown"))),
        "invoked-child-completes": Case(state(
            run("child", {"n": 1}, version=0, parent=ParentRef(RUN_ID + "P", "invoker",
                                                              "call-child")))),
        # sends
        "send-one": Case(state(run("sender"))),
        "send-many": Case(state(run("sender", version=1),
                                step("one", s.SEND, output=["e0"]))),
        # parallel
        "parallel-schedules-group": Case(state(run("fanout"))),
        "parallel-branch-target-runs": Case(
            state(run("fanout", version=1), *_branches(["x@0", "y@1"]),
                  step("z@2", s.SLEEP, _SLEEPING, branch=True, wake_at=NOW + 600)),
            target="x@0"),
        "parallel-branch-retry-is-a-branch-message": Case(
            state(run("fanout", version=2), step("x@0", output="X", branch=True),
                  *_branches(["y@1"]),
                  step("z@2", s.SLEEP, _SLEEPING, branch=True, wake_at=NOW + 600)),
            target="y@1"),
        "parallel-branch-retrying-attempt": Case(
            state(run("fanout", version=3), step("x@0", output="X", branch=True),
                  _retrying("y@1", 1, branch=True),
                  step("z@2", s.SLEEP, _SLEEPING, branch=True, wake_at=NOW + 600)),
            target="y@1"),
        "parallel-branch-sleep-target": Case(
            state(run("fanout", version=1), *_branches(["x@0", "y@1", "z@2"])), target="z@2"),
        "parallel-all-in-flight-noop": Case(
            state(run("fanout", version=2), step("x@0", output="X", branch=True),
                  _retrying("y@1", 1, branch=True),
                  step("z@2", s.SLEEP, _SLEEPING, branch=True, wake_at=NOW + 600))),
        "parallel-target-not-reached-noop": Case(
            state(run("fanout", version=1), *_branches(["x@0", "y@1", "z@2"])),
            target="nope@7"),
        "parallel-done-then-next": Case(state(
            run("fanout", version=5), step("x@0", output="X", branch=True),
            step("y@1", output=None, branch=True), step("z@2", s.SLEEP, branch=True))),
        "parallel-wide-first-slice": Case(state(run("wide"))),
        "parallel-wide-second-slice": Case(state(run("wide", version=1),
                                                 *_branches(_WIDE_KEYS[:50]))),
        "parallel-wide-completes": Case(state(
            run("wide", version=9), *_branches(_WIDE_KEYS, StepStatus.COMPLETED))),
        "parallel-nested-schedules": Case(state(run("nested"))),
        "parallel-nested-target": Case(state(
            run("nested", version=1), *_branches(["leaf@0.0", "leaf@0.1", "leaf@1"])),
            target="leaf@0.1"),
        # outputs the limits or JSON refuse
        "output-too-large": Case(state(run("outputs", {"kind": "big"})),
                                 limits={"max_output_bytes": 1000}),
        "output-over-run-limit": Case(state(
            run("outputs", {"kind": "big"}, version=1),
            step("other", output="y", detail={"output_bytes": 3000})),
            limits={"max_run_bytes": 4000}),
        "output-not-json-set": Case(state(run("outputs", {"kind": "set"}))),
        "output-not-json-nan": Case(state(run("outputs", {"kind": "nan"}))),
        "handler-output-not-json": Case(state(run("outputs", {"kind": "handler"}))),
        # history the code no longer matches, and limits
        "nondeterminism-sleep-where-run": Case(state(
            run("steps", version=1), step("a", s.SLEEP))),
        "nondeterminism-in-branch-target-noop": Case(state(
            run("fanout", version=1), *_branches(["x@0", "y@1"]),
            step("z@2", StepKind.RUN, StepStatus.SCHEDULED, branch=True)), target="z@2"),
        "step-limit": Case(state(run("steps", version=2), step("a", output=1),
                                 step("b", output=2)), limits={"max_steps": 2}),
        # checkpointing: execute is the same; the chain replays on after each commit
        "checkpoint-chain": Case(state(run("chained")), chain=10),
        "checkpoint-chain-after-sleep": Case(state(
            run("chained", version=5), step("s0", output="s0"), step("s1", output="s1"),
            step("s2", output="s2"), step("pause", s.SLEEP, at=NOW - 1)), chain=10),
        "retries-chain": Case(state(run("flaky")), chain=10),
        # typed events, ctx.now() and ctx.uuid()
        "typed-event": Case(state(run("typed", {"order_id": "o-1", "cents": 250}))),
        "typed-event-bad-data": Case(state(run("typed", {"order_id": "o-1"}))),
        "clock-and-uuid": Case(state(run("clock", version=1), step("tick", output=1,
                                                                    at=T0 + 120))),
    }


CASES = _cases()
