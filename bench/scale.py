"""Capacity model: the hottest DynamoDB partition keys and the cost per hour of production loads.

The emulators never say no, so this runs each scenario small on them (DynamoDB Local + moto,
through the real Lambda handlers), records every DynamoDB write and read with the partition
key it lands on (the table's and each index's), every SQS, EventBridge and Scheduler request
and every Lambda invocation, and scales the measured cost of one unit of work (a run, an
event, a step) to the scenario's rate. A key whose writes grow with the number of units is
*shared* (every unit writes it: its rate is the scenario's rate times its share); a key named
after one run or one event is that unit's own (its rate is the unit's own pace).

One line per scenario ends in ``within limits`` or ``OVER LIMIT`` (a key past 1,000 WCU/s or
3,000 RCU/s, DynamoDB's per-partition caps, which hold for indexes too); exit status 1 if any
is over. Write units are computed as AWS bills them, from the items' sizes (1 WCU per KB of
the whole item, twice for a transaction; an update is billed on the item as it is after,
read back from the emulator by an unmetered client); read units are DynamoDB Local's.

Prices: public us-east-1 on-demand rates (see ``PRICES``); a Lambda invocation is billed at
the default memory (512 MB) for ``LAMBDA_MS``.
Run: .venv/bin/python bench/scale.py [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from runtime import App, BatchEvents, Context, TriggerEvent
from runtime.backends.aws.table import INDEX_SHARDS, item_bytes, table_spec
from runtime.deploy import AwsOptions
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import RunQuery
from runtime.records import Message, MessageKind, RunRecord, RunState
from stepkit_emulators.aws import AwsBackend
from stepkit_emulators.emulators import aws_emulators

WCU_CAP = 1000.0  # per partition key per second (table and each GSI)
RCU_CAP = 3000.0
PRICES = {
    "lambda_request": 0.20 / 1e6, "lambda_gb_s": 0.0000133334, "sqs": 0.40 / 1e6,
    "events": 1.00 / 1e6, "scheduler": 1.00 / 1e6, "wcu": 0.625 / 1e6, "rcu": 0.125 / 1e6,
}
LAMBDA_MS = 50.0
LAMBDA_GB = AwsOptions().memory_mb / 1024  # the default (512 MB: runtime/deploy.py)
_GSI_KEY = re.compile(r"\b(gsi\d)pk\s*=\s*(:\w+)")
_SHARD = re.compile(r"#[0-7]$")  # an index key's shard suffix
_HEX_ID = re.compile(r"\b(?:[0-9a-f]{32}|[0-9A-HJKMNP-TV-Z]{26})\b")  # uuid hex or ULID


#: An item's size as DynamoDB counts it: attribute names plus values (the store's own rule).
item_size = item_bytes


def _units(size: int, per: int) -> int:
    return max(1, math.ceil(size / per))


@dataclass
class Tally:
    """What one scenario's small run did, by partition key."""

    wcu: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    rcu: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    events: int = 0
    invocations: int = 0
    largest_item: tuple[int, str] = (0, "")

    def write(self, key: str, units: float) -> None:
        self.wcu[key] += units

    def read(self, key: str, units: float) -> None:
        self.rcu[key] += units


class KeyMeter:
    """Records each DynamoDB request's units against the partition keys it lands on."""

    def __init__(self, tally: Tally, side: Any, table: str) -> None:
        self.t = tally
        self.side = side  # an unmetered client: reads items back to size updates
        spec = table_spec(table)
        self.projection = {g["IndexName"]: g["Projection"] for g in spec["GlobalSecondaryIndexes"]}
        self.table = table

    paused = False  # while the bench itself reads (its own listings are no cost of work)

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params", self._before)
        client.meta.events.register("after-call", self._after)

    # -- writes -------------------------------------------------------------------------

    def _index_writes(self, item: dict[str, Any], times: int) -> None:
        for index, proj in self.projection.items():
            key = item.get(f"{index}pk")
            if key is None:
                continue
            if proj["ProjectionType"] == "ALL":
                size = item_size(item)
            else:
                keep = {"pk", "sk", f"{index}pk", f"{index}sk",
                        *proj.get("NonKeyAttributes", [])}
                size = item_size({k: v for k, v in item.items() if k in keep})
            self.t.write(f"{index}:{key['S']}", times * _units(size, 1024))

    def _put(self, item: dict[str, Any], times: int) -> None:
        size = item_size(item)
        self.t.largest_item = max(self.t.largest_item, (size, item["pk"]["S"]))
        self.t.write(item["pk"]["S"], times * _units(size, 1024))
        self._index_writes(item, times)

    def _update_after(self, key: dict[str, Any], times: int, expression: str,
                      values: dict[str, Any]) -> None:
        got = self.side.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        item = got or key
        size = item_size(item)
        self.t.largest_item = max(self.t.largest_item, (size, key["pk"]["S"]))
        self.t.write(key["pk"]["S"], times * _units(size, 1024))
        changed = {m.group(1) for m in _GSI_KEY.finditer(expression or "")}
        self._index_writes({k: v for k, v in item.items()
                            if not k.endswith("pk") or k[:-2] in changed or k == "pk"}, times)

    def _before(self, params: dict[str, Any], model: Any, event_name: str,
                context: dict[str, Any], **_: Any) -> None:
        context["scale_params"] = params
        if self.paused:
            return
        service = event_name.split(".")[1]
        op = model.name
        self.t.calls[f"{service}.{op}"] += 1
        if op == "PutEvents":
            self.t.events += len(params.get("Entries", []))
        if service != "dynamodb":
            return
        if op in ("Query", "GetItem", "BatchGetItem"):
            params["ReturnConsumedCapacity"] = "TOTAL"
        if op == "PutItem":
            self._put(params["Item"], 1)
        elif op == "DeleteItem":
            self.t.write(params["Key"]["pk"]["S"], 1)
        elif op == "BatchWriteItem":
            for reqs in params["RequestItems"].values():
                for r in reqs:
                    if "PutRequest" in r:
                        self._put(r["PutRequest"]["Item"], 1)
                    else:
                        self.t.write(r["DeleteRequest"]["Key"]["pk"]["S"], 1)
        elif op == "TransactWriteItems":
            for action in params["TransactItems"]:
                if "Put" in action:
                    self._put(action["Put"]["Item"], 2)
                elif "Update" in action:
                    u = action["Update"]
                    context.setdefault("scale_updates", []).append((u, 2))
                elif "Delete" in action:
                    self.t.write(action["Delete"]["Key"]["pk"]["S"], 2)
                elif "ConditionCheck" in action:
                    self.t.read(action["ConditionCheck"]["Key"]["pk"]["S"], 1)
        elif op == "UpdateItem":
            context.setdefault("scale_updates", []).append((params, 1))

    def _after(self, parsed: dict[str, Any], model: Any, event_name: str,
               context: dict[str, Any], **_: Any) -> None:
        if self.paused:
            return
        if event_name.split(".")[1] != "dynamodb":
            if model.name == "ReceiveMessage" and not parsed.get("Messages"):
                self.t.calls["sqs.ReceiveMessage"] -= 1  # an event source polls anyway
            return
        for u, times in context.pop("scale_updates", []):
            self._update_after(u["Key"], times, u.get("UpdateExpression", ""),
                               u.get("ExpressionAttributeValues", {}))
        if model.name in ("Query", "GetItem", "BatchGetItem"):
            used = parsed.get("ConsumedCapacity") or []
            used = used if isinstance(used, list) else [used]
            units = max(1.0, sum(c.get("CapacityUnits", 0.0) for c in used))
            keys = self._read_keys(model.name, context["scale_params"])
            for key in keys:
                self.t.read(key, units / len(keys))

    @staticmethod
    def _read_keys(op: str, params: dict[str, Any]) -> list[str]:
        if op == "GetItem":
            return [str(params["Key"]["pk"]["S"])]
        if op == "BatchGetItem":
            return [k["pk"]["S"] for req in params["RequestItems"].values()
                    for k in req["Keys"]] or ["?"]
        if op == "Query":
            values = params.get("ExpressionAttributeValues", {})
            pk = next((v["S"] for k, v in values.items() if k in (":pk", ":p")), None)
            index = params.get("IndexName")
            if pk is None:
                pk = next((v["S"] for v in values.values() if "S" in v), "?")
            return [f"{index}:{pk}" if index else str(pk)]
        return ["?"]


# -- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A production load, run small.

    Attributes:
        name: Its name on the command line.
        title: What it models.
        unit: What one unit of work is (a run, an event, a step).
        rate: Units per second in production.
        own_rate: For a key of one unit's own: how often that unit writes it, per second
            (its own pace).
        build: Runs it small on a backend; returns the units of work it did.
    """

    name: str
    title: str
    unit: str
    rate: float
    own_rate: float
    build: Callable[[Any, FakeClock], int]
    #: For runs whose cost per step may grow with their history: the same scenario built
    #: twice more, longer, and the run length to extrapolate to (see :func:`_extrapolated`).
    longer: tuple[Callable[[Any, FakeClock], int], ...] = ()
    length: int = 0
    #: At most this many dollars per million units (``None``: no budget).
    budget: float | None = None


def _starts(n: int) -> Callable[[Any, FakeClock], int]:
    def build(backend: Any, clock: FakeClock) -> int:
        backend.send([{"name": "scale/start", "data": {"i": i}} for i in range(n)])
        backend.run_until_idle()
        return n
    return build


def _batch(n: int) -> Callable[[Any, FakeClock], int]:
    def build(backend: Any, clock: FakeClock) -> int:
        for i in range(0, n, 10):
            backend.send([{"name": "scale/item", "data": {"i": j}} for j in range(i, i + 10)])
            backend.run_until_idle()
        clock.advance(60)
        backend.run_until_idle()
        return n
    return build


#: Consumers whose every invocation runs on a fresh container (nothing cached).
_COLD: set[int] = set()


def _steps(n: int) -> Callable[[Any, FakeClock], int]:
    def build(backend: Any, clock: FakeClock) -> int:
        _COLD.update(id(c) for c in backend.consumers)  # a fresh container each time (_run)
        backend.send({"name": "scale/steps", "data": {"n": n}})
        backend.run_until_idle()
        return n
    return build


def _sleepers(n: int) -> Callable[[Any, FakeClock], int]:
    def build(backend: Any, clock: FakeClock) -> int:
        backend.send([{"name": "scale/nap", "data": {"i": i}} for i in range(n)])
        backend.run_until_idle()
        for _ in range(100):
            clock.advance(900)
            backend.run_until_idle()
        return n
    return build


def _early_waits(n: int) -> Callable[[Any, FakeClock], int]:
    def build(backend: Any, clock: FakeClock) -> int:
        backend.send([{"name": "scale/order", "data": {"id": f"o{i}"}} for i in range(n)])
        backend.run_until_idle()
        clock.advance(30)
        backend.send([{"name": "scale/paid", "data": {"id": f"o{i}"}} for i in range(n)])
        backend.run_until_idle()
        for _ in range(100):  # a day: whatever timers the waits left behind fire
            clock.advance(900)
            backend.run_until_idle()
        return n
    return build


def scale_app() -> App:
    app = App("scale")

    @app.function(id="start", trigger=TriggerEvent("scale/start"))
    def start(ctx: Context) -> dict[str, Any]:
        return ctx.step.run("work", lambda: {"ok": True, "blob": "x" * 5000})

    @app.function(id="batched", trigger=TriggerEvent("scale/item"),
                  batch_events=BatchEvents(max_size=100, timeout=timedelta(seconds=30)))
    def batched(ctx: Context) -> int:
        return len(ctx.events)

    @app.function(id="steps", trigger=TriggerEvent("scale/steps"))
    def steps(ctx: Context) -> int:
        return sum(ctx.step.run(f"s{i}", lambda i=i: i) for i in range(ctx.event.data["n"]))

    @app.function(id="nap", trigger=TriggerEvent("scale/nap"))
    def nap(ctx: Context) -> None:
        ctx.step.sleep("day", "1d")

    @app.function(id="order", trigger=TriggerEvent("scale/order"))
    def order(ctx: Context) -> bool:
        paid = ctx.step.wait_for_event("paid", event="scale/paid", match="data.id",
                                       timeout="1d")
        return paid is not None

    return app


SCENARIOS = [
    Scenario("starts", "2,000 run starts+finishes/s app-wide: 1,000 runs/s (1 step, 5 KB "
             "output)", "run", 1000.0, 1.0, _starts(80)),
    Scenario("batch", "500 batched events/s on one batch key", "event", 500.0, 0.0,
             _batch(200)),
    Scenario("cold", "1,000 concurrent 1000-step runs, every invocation cold (10 steps/s each; "
             "fitted from 25-, 50- and 100-step runs)", "step", 10_000.0, 10.0, _steps(25),
             longer=(_steps(50), _steps(100)), length=1000, budget=3.0),
    Scenario("sleepers", "10,000 runs sleeping a day (started over an hour)", "run",
             10_000 / 3600, 0.0, _sleepers(20)),
    Scenario("early-waits", "10,000 waits resolved within a minute (over an hour)", "run",
             10_000 / 3600, 0.0, _early_waits(20)),
]


def run(emulators: Any, sc: Scenario) -> dict[str, Any]:
    if not sc.longer:
        return _run(emulators, sc, sc.build)
    return _extrapolated([_run(emulators, sc, b) for b in (sc.build, *sc.longer)], sc.length)


def _extrapolated(runs: list[dict[str, Any]], length: int) -> dict[str, Any]:
    """The totals of one ``length``-step run, from three shorter runs' totals.

    Each total T(S) over an S-step run is taken as c + p * S + q * S**2 (a fixed cost per
    run, a cost per step, and what a cold load of the whole history adds: quadratic),
    fitted exactly through the three runs (Lagrange) and evaluated at ``length``.
    """
    sizes = [r["units"] for r in runs]

    def fit(totals: list[float]) -> float:
        out = 0.0
        for i, (si, ti) in enumerate(zip(sizes, totals, strict=True)):
            weight = 1.0
            for j, sj in enumerate(sizes):
                if j != i:
                    weight *= (length - sj) / (si - sj)
            out += ti * weight
        return max(0.0, out)

    own = set().union(*(r["own"] for r in runs))
    tallies = [r["tally"] for r in runs]
    out = Tally(events=round(fit([t.events for t in tallies])),
                invocations=round(fit([t.invocations for t in tallies])),
                largest_item=max(t.largest_item for t in tallies))
    for name in ("wcu", "rcu"):
        by_key: list[defaultdict[str, float]] = []
        for t in tallies:
            merged: defaultdict[str, float] = defaultdict(float)
            for k, v in getattr(t, name).items():
                # Each run lands on one shard of an index key (table.shard): runs of the
                # three lengths may land on different ones, so a shard is the key's share.
                key = _pattern(k, own)
                sharded = _SHARD.sub("#<n>", key)
                merged[sharded] += v / INDEX_SHARDS if sharded != key else v
            by_key.append(merged)
        for k in set().union(*by_key):
            getattr(out, name)[k] = fit([m[k] for m in by_key])
    for k in set().union(*(t.calls for t in tallies)):
        out.calls[k] = round(fit([t.calls[k] for t in tallies]))
    return {"units": length, "own": {"<run>"}, "tally": out}


def _run(emulators: Any, sc: Scenario, build: Callable[[Any, FakeClock], int]) -> dict[str, Any]:
    emulators.reset()
    clock = FakeClock(1_800_000_000.0)
    backend = AwsBackend(scale_app(), emulators, clock)
    tally = Tally()
    meter = KeyMeter(tally, emulators.client("dynamodb"), backend.resources.table)
    for client in backend.clients.values():
        meter.attach(client)
    for c in backend.consumers:
        real = c.service.handle_batch

        def counted(event: Any, context: Any, *, router: bool, _real: Any = real,
                    _c: Any = c) -> Any:
            # Each record is one invocation as deployed (functions take batches of 1; the
            # harness hands several at once).
            tally.invocations += len(event.get("Records", [])) if not router else 1
            if id(_c) in _COLD:  # a fresh container: nothing cached
                _c.service.orchestrator.store.drop_cache()
            return _real(event, context, router=router)

        c.service.handle_batch = counted  # type: ignore[method-assign]
    units = build(backend, clock)
    meter.paused = True
    own_ids = {r.run_id for r in backend.list_runs(RunQuery(limit=1000))}
    return {"units": units, "own": own_ids, "tally": tally}


def report(sc: Scenario, got: dict[str, Any]) -> bool:
    t: Tally = got["tally"]
    units = got["units"]
    own: set[str] = got["own"]

    def rate(key: str, total: float) -> float:
        if _own(key, own):  # a unit's own key: the unit's own pace
            return total / units * sc.own_rate if sc.own_rate else 0.0
        return total / units * sc.rate  # shared: every unit writes it

    hot_w = max(((rate(k, v), k) for k, v in t.wcu.items()), default=(0.0, "-"))
    hot_r = max(((rate(k, v), k) for k, v in t.rcu.items()), default=(0.0, "-"))
    sqs = sum(v for k, v in t.calls.items() if k.startswith("sqs."))
    sched = sum(v for k, v in t.calls.items() if k.startswith("scheduler.")
                and k.endswith(("CreateSchedule", "DeleteSchedule")))
    wcu, rcu = sum(t.wcu.values()), sum(t.rcu.values())
    per_hour = sc.rate * 3600 / units
    dollars = per_hour * (
        t.invocations * (PRICES["lambda_request"]
                         + PRICES["lambda_gb_s"] * LAMBDA_GB * LAMBDA_MS / 1000)
        + sqs * PRICES["sqs"] + t.events * PRICES["events"] + sched * PRICES["scheduler"]
        + wcu * PRICES["wcu"] + rcu * PRICES["rcu"])
    per_million = dollars / (sc.rate * 3600) * 1e6
    over = hot_w[0] > WCU_CAP or hot_r[0] > RCU_CAP or (
        sc.budget is not None and per_million > sc.budget)
    print(f"{sc.name}: {sc.title}")
    print(f"  per {sc.unit}: {wcu / units:.2f} WCU, {rcu / units:.2f} RCU, "
          f"{t.invocations / units:.2f} Lambda invocations, {sqs / units:.2f} SQS requests, "
          f"{sched / units:.2f} schedules made or deleted; largest item "
          f"{t.largest_item[0] / 1024:.1f} KB")
    print(f"  hottest write key {_pattern(hot_w[1], own)}: {hot_w[0]:,.0f} WCU/s of "
          f"{WCU_CAP:,.0f}; hottest read key {_pattern(hot_r[1], own)}: {hot_r[0]:,.0f} "
          f"RCU/s of {RCU_CAP:,.0f}; about ${dollars:,.2f} per hour, ${per_million:,.2f} per "
          f"million {sc.unit}s{f' (budget ${sc.budget:.2f})' if sc.budget else ''} -> "
          f"{'OVER LIMIT' if over else 'within limits'}")
    return not over


def _pattern(key: str, own: set[str]) -> str:
    """``key`` with its run ids, event ids and day named by kind, not by value."""
    for i in own:
        key = key.replace(i, "<run>")
    key = _HEX_ID.sub("<event>", key)
    return re.sub(r"\d{4}-\d\d-\d\d", "<day>", key)


def _own(key: str, own: set[str]) -> bool:
    """Whether ``key`` is one unit's own (named after a run or an event), not shared."""
    return "<run>" in key or "<event>" in key or any(i in key for i in own) \
        or _HEX_ID.search(key) is not None


# -- concurrency: the Slots part driven directly -----------------------------------------
# A line of a thousand waiting invocations needs a thousand concurrent Lambdas, which the
# harness does not run; so these scenarios drive the orchestration's own Slots part (the code
# a worker runs before and after a step) over the DynamoDB store on the emulator, with a
# discrete-event loop standing in for SQS (a re-sent message comes back at its due time) and
# for the workers (a step holds its slots for ``hold`` seconds).


@dataclass(frozen=True)
class SlotScenario:
    """A concurrency load: ``backlog`` invocations always waiting behind ``limit`` slots."""

    name: str
    title: str
    limit: int
    backlog: int
    hold: float
    seconds: float


SLOT_SCENARIOS = [
    SlotScenario("queued", "1,000 runs queued behind limit=10 for an hour (10 s steps)",
                 limit=10, backlog=1000, hold=10.0, seconds=270.0),
    SlotScenario("limit1000", "limit=1000 fully used: 500 steps/s on one key (2 s steps)",
                 limit=1000, backlog=0, hold=2.0, seconds=3.9),
]


class _SimQueue:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: Any) -> None:
        self.sent.extend(messages)


def run_slots(emulators: Any, sc: SlotScenario) -> dict[str, Any]:
    """Drive ``sc`` for ``sc.seconds`` of simulated time; what it cost, by partition key."""
    import heapq
    from types import SimpleNamespace

    from runtime import Concurrency
    from runtime.backends.aws.store import DynamoStore
    from runtime.orchestration.slots import Slots

    emulators.reset()
    app = App("scale")

    @app.function(id="limited", trigger=TriggerEvent("scale/limited"),
                  concurrency=Concurrency(limit=sc.limit))
    def limited(ctx: Context) -> None:
        ctx.step.run("work", lambda: None)

    fn = app.get("limited")
    t0 = 1_800_000_000.0
    clock = FakeClock(t0)
    backend = AwsBackend(app, emulators, clock)  # creates the app's table
    table = backend.resources.table
    client = emulators.client("dynamodb")
    tally = Tally()
    meter = KeyMeter(tally, emulators.client("dynamodb"), table)
    meter.attach(client)
    queue = _SimQueue()
    store = DynamoStore(table, client=client, clock=clock)
    io = SimpleNamespace(store=store, queue=queue, clock=clock, cancel=lambda *_: True)
    slots = Slots(io)  # type: ignore[arg-type]
    due: list[tuple[float, int, Message, RunState]] = []
    seq = 0

    def new_work(at: float) -> None:
        nonlocal seq
        seq += 1
        run = RunRecord(f"run{seq:06d}", fn.id, ({"id": f"e{seq}", "name": "scale/limited",
                                                  "data": {}, "ts": int(at * 1000)},),
                        created_at=at)
        msg = Message(MessageKind.CONTINUE, fn.id, run.run_id, version=0)
        heapq.heappush(due, (at, seq, msg, RunState(run, {})))

    states: dict[str, RunState] = {}
    for _ in range(sc.backlog + sc.limit):
        new_work(t0)
    held: list[tuple[float, int, Any, str]] = []
    deliveries = steps = 0
    warm_at, end = t0 + sc.hold, t0 + sc.hold + sc.seconds
    warm: tuple[dict[str, float], dict[str, float], int, int] | None = None
    while due or held:
        nxt_due = due[0][0] if due else float("inf")
        nxt_rel = held[0][0] if held else float("inf")
        now = min(nxt_due, nxt_rel)
        if now > end:
            break
        if warm is None and now >= warm_at:  # measured from here: past the first burst
            warm = (dict(tally.wcu), dict(tally.rcu), deliveries, steps)
        clock.advance(max(0.0, now - clock.now()))
        if nxt_rel <= nxt_due:
            _, _, taken, _ = heapq.heappop(held)
            slots.release(taken)
            new_work(clock.now())  # the backlog stays as long (another run arrives)
        else:
            _, _, msg, state = heapq.heappop(due)
            states[msg.run_id] = state
            deliveries += 1
            got = slots.take_slots(fn, state, msg, None)
            if got is not None:
                steps += 1
                seq += 1
                heapq.heappush(held, (clock.now() + sc.hold, seq, got, msg.run_id))
        for m in queue.sent:  # re-sent to wait, or woken: back at its due time
            seq += 1
            heapq.heappush(due, (max(m.due or clock.now(), clock.now()), seq, m,
                                 states.get(m.run_id) or RunState(
                                     RunRecord(m.run_id, fn.id, ({"id": m.run_id, "data": {},
                                               "name": "scale/limited", "ts": 0},),
                                               created_at=t0), {})))
        queue.sent.clear()
    assert warm is not None
    for k, v in warm[0].items():
        tally.wcu[k] -= v
    for k, v in warm[1].items():
        tally.rcu[k] -= v
    deliveries, steps = deliveries - warm[2], steps - warm[3]
    return {"tally": tally, "seconds": sc.seconds, "steps": steps, "deliveries": deliveries,
            "sqs": deliveries * 3}  # each delivery: a send, a receive and a delete


def report_slots(sc: SlotScenario, got: dict[str, Any]) -> bool:
    t: Tally = got["tally"]
    secs, steps = got["seconds"], max(got["steps"], 1)
    hot_w = max(((v / secs, k) for k, v in t.wcu.items()), default=(0.0, "-"))
    hot_r = max(((v / secs, k) for k, v in t.rcu.items()), default=(0.0, "-"))
    extra = (got["deliveries"] - steps) / steps
    per_hour = 3600 / secs
    wcu, rcu = sum(t.wcu.values()), sum(t.rcu.values())
    dollars = per_hour * (
        got["deliveries"] * (PRICES["lambda_request"]
                             + PRICES["lambda_gb_s"] * LAMBDA_GB * LAMBDA_MS / 1000)
        + got["sqs"] * PRICES["sqs"] + wcu * PRICES["wcu"] + rcu * PRICES["rcu"])
    over = hot_w[0] > WCU_CAP or hot_r[0] > RCU_CAP
    print(f"{sc.name}: {sc.title}")
    print(f"  {steps / secs:,.1f} steps/s; per step: {wcu / steps:.2f} WCU, {rcu / steps:.2f} "
          f"RCU, {extra:.2f} extra Lambda invocations (waiting); largest item "
          f"{t.largest_item[0] / 1024:.1f} KB")
    print(f"  hottest write key {hot_w[1]}: {hot_w[0]:,.0f} WCU/s of {WCU_CAP:,.0f}; hottest "
          f"read key {hot_r[1]}: {hot_r[0]:,.0f} RCU/s of {RCU_CAP:,.0f}; about "
          f"${dollars:,.2f} per hour -> {'OVER LIMIT' if over else 'within limits'}")
    return not over


def main() -> int:
    parser = argparse.ArgumentParser()
    names = [s.name for s in SCENARIOS] + [s.name for s in SLOT_SCENARIOS]
    parser.add_argument("--scenario", action="append", choices=names)
    args = parser.parse_args()
    ok = True
    with aws_emulators() as emulators:
        for sl in SLOT_SCENARIOS:
            if not args.scenario or sl.name in args.scenario:
                ok = report_slots(sl, run_slots(emulators, sl)) and ok
        for sc in SCENARIOS:
            if not args.scenario or sc.name in args.scenario:
                ok = report(sc, run(emulators, sc)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
