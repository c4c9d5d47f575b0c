"""Flow control (issue 9): idempotency, throttle, rate limit, singleton, concurrency, priority.

Each case runs on every backend, in normal and chaos mode. Periods pass on the skipping
clock; the concurrency cases use real worker threads (chaos mode's, or four fault-free ones
in normal mode) and record when each step really ran.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runtime import App, Context, Timeouts, TriggerEvent
from runtime.concurrency import SlotLease
from runtime.errors import ConfigurationError, PushbackError
from runtime.messages import FlushPayload
from runtime.records import GateWrite, Message, MessageKind
from runtime.testing import Harness
from runtime.testing.chaos import Chaos


def _concurrent(h: Harness) -> Harness:
    """Real concurrent workers: chaos mode has them; normal mode gets four without faults."""
    if h.chaos is None:
        h.enable_chaos(Chaos(workers=4, duplicate=0, crash=0, errors=0))
    return h


def _overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = open_now = 0
    for _, d in edges:
        open_now += d
        most = max(most, open_now)
    return most


class Spans:
    """Start/end instants of real step executions, by key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_key: dict[str, list[tuple[float, float]]] = {}

    def work(self, key: str, seconds: float = 0.03) -> None:
        began = time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.by_key.setdefault(key, []).append((began, time.monotonic()))

    def all(self) -> list[tuple[float, float]]:
        return [s for spans in self.by_key.values() for s in spans]


def _seize(h: Harness, scope: str, key: str, lease_s: float) -> None:
    """Play a worker that took a concurrency slot and crashed: its lease is all that is left."""
    store = h.backend.store  # type: ignore[attr-defined]
    lease = SlotLease(scope, key, 0, 0, "crashed-worker", "crashed/", h.clock.now() + lease_s)
    assert store.claim_slot(lease, h.clock.now())


# -- idempotency ---------------------------------------------------------------------------


def test_idempotency_starts_one_run_per_key_and_records_the_rest(make_harness: Any) -> None:
    charged: list[str] = []
    app = App("pay")

    @app.function(id="charge", trigger=TriggerEvent("payment/requested"),
                  idempotency="event.data.payment_id")
    def charge(ctx: Context) -> str:
        return str(ctx.step.run("charge", lambda: charged.append(ctx.event.data["payment_id"])
                                or "ok"))

    h = make_harness(app)
    for _ in range(3):
        h.send("payment/requested", {"payment_id": "p1"})
    h.send("payment/requested", {"payment_id": "p2"})
    assert sorted(h.once(charged)) == ["p1", "p2"]
    assert len(h.runs("charge", status="Completed")) == 2
    skipped = h.runs("charge", status="Skipped")
    assert len(skipped) == 2
    assert all("idempotency key 'p1'" in (r.error or "") for r in skipped)
    # The key is remembered for 24 hours, then it may start a run again.
    h.advance("25h")
    h.send("payment/requested", {"payment_id": "p1"})
    assert sorted(h.once(charged)) == ["p1", "p1", "p2"] if not h.chaos else len(
        h.runs("charge", status="Completed")) == 3


def _pay_app() -> App:
    app = App("pay")

    @app.function(id="charge", trigger=TriggerEvent("payment/requested"),
                  idempotency="event.data.payment_id")
    def charge(ctx: Context) -> str:
        return "ok"

    return app


def test_a_rerun_by_hand_is_not_skipped_as_a_duplicate(make_harness: Any) -> None:
    h = make_harness(_pay_app())
    h.send("payment/requested", {"payment_id": "p1"})
    again = h.rerun(h.only_run("charge").id)
    assert h.run(again).status == "Completed"


def test_idempotency_ignores_events_without_the_key(make_harness: Any) -> None:
    h = make_harness(_pay_app())
    h.send("payment/requested", {})
    h.send("payment/requested", {})
    assert len(h.runs("charge", status="Completed")) == 2


# -- throttle ------------------------------------------------------------------------------


def test_throttle_spreads_starts_at_the_rate_and_drops_none(make_harness: Any) -> None:
    started: dict[int, float] = {}
    app = App("digest")

    @app.function(id="call-model", trigger=TriggerEvent("ai/asked"),
                  throttle={"limit": 2, "period": "1m"})
    def call(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        ctx.step.run("call", lambda: started.setdefault(n, h.clock.now()))
        return n

    h = make_harness(app)
    t0 = h.clock.now()
    h.send([{"name": "ai/asked", "data": {"n": i}} for i in range(6)])
    assert len(started) == 2  # limit at once; the rest are held
    held = [r for r in h.runs("call-model") if r.state.run.held_by == "throttle"]
    assert len(held) == 4 and all(r.status == "Running" for r in held)
    h.advance("3m")
    assert len(h.runs("call-model", status="Completed")) == 6
    assert sorted(round(t - t0) for t in started.values()) == [0, 0, 30, 60, 90, 120]


def test_throttle_keys_are_independent_and_burst_adds_to_the_limit(make_harness: Any) -> None:
    started: dict[str, float] = {}
    app = App("digest")

    @app.function(id="sync", trigger=TriggerEvent("crm/changed"),
                  throttle={"limit": 1, "period": "1h", "burst": 1, "key": "event.data.user"})
    def sync(ctx: Context) -> None:
        tag = f"{ctx.event.data['user']}{ctx.event.data['n']}"
        ctx.step.run("sync", lambda: started.setdefault(tag, h.clock.now()))

    h = make_harness(app)
    t0 = h.clock.now()
    h.send([{"name": "crm/changed", "data": {"user": u, "n": n}} for u in "ab" for n in range(3)])
    assert sorted(k[0] for k in started) == ["a", "a", "b", "b"]  # 1 + burst 1 per user
    h.advance("2h")
    assert len(h.runs("sync", status="Completed")) == 6
    late = sorted(round(t - t0) for t in started.values())
    assert late == [0, 0, 0, 0, 3600, 3600]


def test_a_run_throttled_past_its_start_timeout_is_cancelled(make_harness: Any) -> None:
    app = App("digest")

    @app.function(id="sync", trigger=TriggerEvent("crm/changed"), timeouts=Timeouts(start="10m"),
                  throttle={"limit": 1, "period": "1h"})
    def sync(ctx: Context) -> str:
        return str(ctx.step.run("sync", lambda: "done"))

    h = make_harness(app)
    h.send("crm/changed", {"n": 1})
    h.send("crm/changed", {"n": 2})  # its turn comes in an hour: 50 minutes too late
    h.advance("2h")
    by_n = {r.state.run.events[0]["data"]["n"]: r for r in h.runs("sync")}
    assert by_n[1].status == "Completed"
    assert by_n[2].status == "Cancelled" and "not started within 0:10:00" in (by_n[2].error or "")
    assert not by_n[2].steps


# -- rate limit ----------------------------------------------------------------------------


def test_rate_limit_skips_and_records_what_it_skipped(make_harness: Any) -> None:
    app = App("alerts")

    @app.function(id="page", trigger=TriggerEvent("alert/fired"),
                  rate_limit={"limit": 2, "period": "1h", "key": "event.data.service"})
    def page(ctx: Context) -> str:
        return str(ctx.event.data["service"])

    h = make_harness(app)
    for _ in range(4):
        h.send("alert/fired", {"service": "db"})
    h.send("alert/fired", {"service": "web"})
    assert len(h.runs("page", status="Completed")) == 3
    skipped = h.runs("page", status="Skipped")
    assert len(skipped) == 2
    assert all("rate limit of 2 per 1:00:00 for key 'db'" in (r.error or "") for r in skipped)
    assert all(r.state.run.events[0]["data"]["service"] == "db" for r in skipped)
    h.advance("1h")
    h.send("alert/fired", {"service": "db"})
    assert len(h.runs("page", status="Completed")) == 4


# -- singleton -----------------------------------------------------------------------------


def _singleton_app(mode: str) -> App:
    app = App("sync")

    @app.function(id="import", trigger=TriggerEvent("import/requested"),
                  singleton={"key": "event.data.account", "mode": mode})
    def run_import(ctx: Context) -> str:
        ctx.step.sleep("work", "1h")
        return str(ctx.event.data["n"])

    return app


def test_singleton_skip_drops_a_second_run_while_one_runs(make_harness: Any) -> None:
    h = make_harness(_singleton_app("skip"))
    h.send("import/requested", {"account": "a", "n": 1})
    h.send("import/requested", {"account": "a", "n": 2})
    h.send("import/requested", {"account": "b", "n": 3})
    skipped = h.runs("import", status="Skipped")
    assert [r.state.run.events[0]["data"]["n"] for r in skipped] == [2]
    assert "singleton" in (skipped[0].error or "")
    h.advance("2h")
    assert sorted(r.output for r in h.runs("import", status="Completed")) == ["1", "3"]
    h.send("import/requested", {"account": "a", "n": 4})  # the first one finished
    h.advance("2h")
    assert sorted(r.output for r in h.runs("import", status="Completed")) == ["1", "3", "4"]


def test_singleton_cancel_replaces_the_running_run(make_harness: Any) -> None:
    h = make_harness(_singleton_app("cancel"))
    h.send("import/requested", {"account": "a", "n": 1})
    h.send("import/requested", {"account": "a", "n": 2})
    h.advance("2h")
    by_n = {r.state.run.events[0]["data"]["n"]: r for r in h.runs("import")}
    assert by_n[1].status == "Cancelled" and "replaced by run" in (by_n[1].error or "")
    assert by_n[2].status == "Completed"


# -- debounce ------------------------------------------------------------------------------


def test_debounce_starts_once_with_the_last_event_per_key(make_harness: Any) -> None:
    started: dict[str, tuple[int, float]] = {}
    app = App("search")

    @app.function(id="reindex", trigger=TriggerEvent("doc/edited"),
                  debounce={"period": "5m", "key": "event.data.doc"})
    def reindex(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        ctx.step.run("index", lambda: started.setdefault(ctx.event.data["doc"],
                                                          (n, h.clock.now())))
        return n

    h = make_harness(app)
    t0 = h.clock.now()
    for n in range(1, 4):
        h.send("doc/edited", {"doc": "a", "n": n})
        h.advance("1m")
    h.send("doc/edited", {"doc": "b", "n": 9})
    assert not started  # nothing runs while edits keep coming
    h.advance("10m")
    assert {k: (n, round(t - t0)) for k, (n, t) in started.items()} == {
        "a": (3, 2 * 60 + 5 * 60), "b": (9, 3 * 60 + 5 * 60)}
    assert sorted(r.output for r in h.runs("reindex", "Completed")) == [3, 9]
    assert len(h.runs("reindex")) == 2


def test_debounce_timeout_caps_the_delay(make_harness: Any) -> None:
    app = App("search")

    @app.function(id="reindex", trigger=TriggerEvent("doc/edited"),
                  debounce={"period": "1m", "timeout": "3m"})
    def reindex(ctx: Context) -> list[Any]:
        return [ctx.event.data["n"], ctx.step.run("at", h.clock.now)]

    h = make_harness(app)
    t0 = h.clock.now()
    for n in range(10):  # an edit every 30 s: never a quiet minute
        h.send("doc/edited", {"n": n})
        h.advance("30s")
    h.advance("5m")
    runs = sorted((r.output[1] - t0, r.output[0]) for r in h.runs("reindex", "Completed"))
    assert runs == [(180, 5), (330, 9)]


# -- batching ------------------------------------------------------------------------------


def _batch_app(**options: Any) -> App:
    app = App("ledger")

    @app.function(id="write-rows", trigger=TriggerEvent("row/added"), batch_events=options)
    def write_rows(ctx: Context) -> list[int]:
        return sorted(int(e.data["n"]) for e in ctx.events)

    return app


def test_batches_start_when_full_or_when_the_timeout_passes(make_harness: Any) -> None:
    h = make_harness(_batch_app(max_size=3, timeout="10s"))
    h.send([{"name": "row/added", "data": {"n": n}} for n in range(7)])
    full = [r.output for r in h.runs("write-rows", "Completed")]
    assert sorted(len(o) for o in full) == [3, 3]  # two full batches at once
    h.advance("11s")
    outputs = [r.output for r in h.runs("write-rows", "Completed")]
    assert sorted(len(o) for o in outputs) == [1, 3, 3]
    assert sorted(n for o in outputs for n in o) == list(range(7))  # each event once


def test_batches_by_key_and_if(make_harness: Any) -> None:
    h = make_harness(_batch_app(max_size=10, timeout="5s", key="event.data.account",
                                **{"if": "event.data.bulk == true"}))
    h.send([{"name": "row/added", "data": {"n": n, "account": a, "bulk": True}}
            for n, a in ((1, "a"), (2, "a"), (3, "b"))])
    h.send("row/added", {"n": 4, "account": "a", "bulk": False})  # not batched: runs at once
    assert [r.output for r in h.runs("write-rows", "Completed")] == [[4]]
    h.advance("6s")
    assert sorted(r.output for r in h.runs("write-rows", "Completed")) == [[1, 2], [3], [4]]


def test_an_event_too_large_for_a_window_starts_its_own_run(make_harness: Any) -> None:
    h = make_harness(_batch_app(max_size=10, timeout="5s"))
    h.send([{"name": "row/added", "data": {"n": n}} for n in (1, 2)])
    h.send("row/added", {"n": 3, "blob": "b" * (400 * 1024)})  # over a window's 300 KiB
    assert [r.output for r in h.runs("write-rows", "Completed")] == [[3]]  # at once, alone
    h.advance("6s")
    assert sorted(r.output for r in h.runs("write-rows", "Completed")) == [[1, 2], [3]]


def test_every_event_of_a_busy_key_is_in_exactly_one_batch(make_harness: Any) -> None:
    h = make_harness(_batch_app(max_size=4, timeout="5s"))
    for first in range(0, 30, 10):  # three bursts, each closing windows as they fill
        h.send([{"name": "row/added", "data": {"n": n}} for n in range(first, first + 10)])
    h.advance("6s")
    runs = h.runs("write-rows")
    assert {r.status for r in runs} == {"Completed"}
    assert sorted(n for r in runs for n in r.output) == list(range(30))  # each event once
    assert all(1 <= len(r.output) <= 4 for r in runs)


def _orchestrator(h: Harness) -> Any:
    """The backend's (router's) orchestrator: what sends a message on the app's behalf."""
    return getattr(h.backend, "orchestrator", None) or h.backend.router.orchestrator  # type: ignore[attr-defined]


def test_an_event_that_meets_its_window_closing_joins_the_next(
        make_harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A close that lands between an event's seat and its join moves the event on, never fails it.

    The first join finds its window closed and its seat tombstoned (and the closer gone
    before starting the run: the event's own worker finishes that close); on DynamoDB the
    second also meets a transaction conflict on its items, every time it tries.
    """
    h = make_harness(_batch_app(max_size=10, timeout="5s"))
    store = h.backend.store  # type: ignore[attr-defined]
    join = type(store).join_window
    raced: list[str] = []

    def racing(self: Any, scope: str, run_id: str, seat: int, event: dict[str, Any],
               **kwargs: Any) -> Any:
        raced.append(run_id)
        if len(raced) == 1:  # a close (by a timer, say) lands first, then its worker crashes
            assert self.close_window(scope, "", run_id) is not None
            assert self.kill_seat(scope, run_id, seat, h.clock.now() + 3600)
        elif len(raced) == 2 and hasattr(self, "client"):  # DynamoDB: a conflict, each try
            real = self.client

            class Conflicting:
                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

                def transact_write_items(self, **kw: Any) -> Any:
                    raise ClientError({"Error": {"Code": "TransactionCanceledException",  # type: ignore[typeddict-unknown-key]
                                                 "Message": "conflict"},
                                       "CancellationReasons": [{"Code": "None"},
                                                               {"Code": "TransactionConflict"}]},
                                      "TransactWriteItems")

            self.client = Conflicting()
            try:
                return join(self, scope, run_id, seat, event, **kwargs)
            finally:
                self.client = real
        return join(self, scope, run_id, seat, event, **kwargs)

    monkeypatch.setattr(type(store), "join_window", racing)
    h.send("row/added", {"n": 1})
    h.send("row/added", {"n": 2})
    monkeypatch.undo()
    h.send("row/added", {"n": 3})
    h.advance("6s")
    runs = h.runs("write-rows")
    assert len(raced) >= 3 and len(set(raced)) >= 2  # the first join met a closed window
    assert [r.status for r in runs] == ["Completed"]  # the emptied window started no run
    assert sorted(runs[0].output) == [1, 2, 3]


def test_a_window_whose_closer_failed_before_its_first_step_starts_without_its_timer(
        make_harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker that closed a window, not one of its members, fails its run's first commit.

    Its own event goes on to the next window when its delivery comes back: the closed
    window's run, created but never begun, must be begun then, not at the window's timeout.
    """
    h = make_harness(_batch_app(max_size=10, timeout="1m"))
    store = h.backend.store  # type: ignore[attr-defined]
    commit = type(store).commit
    refused: list[str] = []

    def throttled_once(self: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
        if not refused:  # the first commit: the first window's first step
            refused.append(run_id)
            raise PushbackError("throttled")  # comes back in 1-2 s (deferred, not failed)
        return commit(self, run_id, *args, **kwargs)

    blob = "b" * (160 * 1024)  # two do not fit one window: the second event closes it
    h.send("row/added", {"n": 1, "blob": blob})
    monkeypatch.setattr(type(store), "commit", throttled_once)
    h.send("row/added", {"n": 2, "blob": blob})
    assert refused
    if h.chaos is None:
        assert not h.runs("write-rows", "Completed")
    # Under chaos a copy of the second event's START may close the window beside the closer
    # and begin its unbegun run at once (`_begin_unbegun`): sooner, which is no failure.
    # The second event's delivery is back in 1-2 s; chaos may defer it a few times more (its
    # faults, a loaded machine): half the window's minute is still long before its timer.
    h.advance("30s")
    # Under chaos a copy of the second event used to close its own window early too: it
    # did not fit beside the original (test_a_copy_of_a_seated_event_does_not_close_...).
    assert [r.output for r in h.runs("write-rows", "Completed")] == [[1]]
    h.advance("61s")
    assert sorted(r.output for r in h.runs("write-rows", "Completed")) == [[1], [2]]


def test_a_batch_window_open_at_deploy_is_flushed_once_the_old_way(make_harness: Any) -> None:
    """A window kept in one gate (before headers and seats) drains through the gate, once.

    Events that arrive while it is open join it; once its timer has started its run, the ids
    it flushed become memberships, and the key's next window is a header with seats.
    """
    h = make_harness(_batch_app(max_size=10, timeout="5s"))
    store, now = h.backend.store, h.clock.now()  # type: ignore[attr-defined]
    scope = "batch:write-rows"
    old = [{"id": f"old-{n}", "name": "row/added", "data": {"n": n}, "ts": int(now * 1000)}
           for n in (1, 2)]
    state = {"pending": "01OLDWINDOWRUN", "events": old, "first_at": now, "round": 1,
             "due": now + 5, "recent": {"flushed-before": [now + 3600, "01OLDERRUN"]}}
    assert store.put_gate(GateWrite(scope, "", state, 0, None))
    _orchestrator(h).queue.send([Message(  # its timer, as the old code armed it
        MessageKind.FLUSH, "write-rows", "01OLDWINDOWRUN", id="flush-01OLDWINDOWRUN-1",
        due=now + 5, payload=FlushPayload(scope, "", 1).to_json())])
    h.send("row/added", {"n": 3})  # joins the open gate window
    h.advance("6s")
    assert [sorted(r.output) for r in h.runs("write-rows")] == [[1, 2, 3]]
    assert h.runs("write-rows")[0].id == "01OLDWINDOWRUN"
    h.send("row/added", {"n": 4})  # the key's first header-and-seats window
    assert store.window_member(scope, "old-1") == "01OLDWINDOWRUN"
    assert store.window_member(scope, "flushed-before") == "01OLDERRUN"
    assert store.window(scope, "").run_id not in (None, "01OLDWINDOWRUN")
    h.advance("6s")
    assert sorted(sorted(r.output) for r in h.runs("write-rows")) == [[1, 2, 3], [4]]


# -- concurrency ---------------------------------------------------------------------------


def test_concurrency_never_exceeds_the_limit_and_all_complete(make_harness: Any) -> None:
    spans = Spans()
    app = App("digest")

    @app.function(id="send-digest", trigger=TriggerEvent("digest/due"), concurrency=2)
    def send_digest(ctx: Context) -> int:
        n = int(ctx.event.data["n"])
        ctx.step.run("render", lambda: spans.work("render"))
        ctx.step.run("send", lambda: spans.work("send"))
        return n

    h = _concurrent(make_harness(app))
    h.send([{"name": "digest/due", "data": {"n": i}} for i in range(8)])
    # (chaos: a slot whose write failed may wait out its 90 s lease, and a waiter whose
    # wake-up a fault lost comes back on its backstop, which doubles up to 900 s)
    h.advance("30m")
    assert len(h.runs("send-digest", status="Completed")) == 8
    assert _overlap(spans.all()) <= 2
    assert len(spans.all()) >= 16


def test_concurrency_keys_queue_separately(make_harness: Any) -> None:
    app = App("digest")
    ran: list[str] = []

    @app.function(id="sync", trigger=TriggerEvent("crm/changed"),
                  concurrency={"limit": 1, "key": "event.data.user"})
    def sync(ctx: Context) -> None:
        ctx.step.run("sync", lambda: ran.append(ctx.event.data["user"]))

    h = make_harness(app)
    _seize(h, "concurrency:sync", "a", lease_s=120)  # user a's only slot is taken
    h.send("crm/changed", {"user": "a"})
    h.send("crm/changed", {"user": "b"})
    assert h.once(ran) == ["b"]  # b has its own line
    a_run = next(r for r in h.runs("sync") if r.state.run.events[0]["data"]["user"] == "a")
    assert a_run.status == "Running" and not a_run.steps
    h.advance("10m")  # the taken slot's lease lapses: a runs
    assert sorted(h.once(ran)) == ["a", "b"]
    assert len(h.runs("sync", status="Completed")) == 2


def test_a_sleeping_run_holds_no_slot(make_harness: Any) -> None:
    app = App("digest")

    @app.function(id="drip", trigger=TriggerEvent("drip/start"), concurrency=1)
    def drip(ctx: Context) -> str:
        ctx.step.run("first", lambda: "x")
        ctx.step.sleep("wait", "1d")
        ctx.step.run("second", lambda: "y")
        return str(ctx.event.data["n"])

    h = make_harness(app)
    h.send("drip/start", {"n": 1})
    h.send("drip/start", {"n": 2})  # runs while run 1 sleeps
    h.send("drip/start", {"n": 3})
    h.advance("15m")  # (chaos: a crashed holder's slot lapses in 90 s; waiters come back
    # on backstops that double: 90 s, 180 s, 360 s)
    runs = h.runs("drip")
    assert len(runs) == 3 and all(r.step("wait").status == "Sleeping" for r in runs)
    h.advance("2d")
    assert sorted(r.output for r in h.runs("drip", status="Completed")) == ["1", "2", "3"]


def test_a_crashed_workers_slot_frees_itself_when_its_lease_lapses(make_harness: Any) -> None:
    app = App("digest")

    @app.function(id="report", trigger=TriggerEvent("report/due"), concurrency=1)
    def report(ctx: Context) -> str:
        return str(ctx.step.run("build", lambda: "built"))

    h = make_harness(app)
    # Default Lambda timeout 60 s: a lease lasts 90 s.
    _seize(h, "concurrency:report", "", lease_s=90)
    h.send("report/due", {})
    assert h.only_run("report").status == "Running"
    h.advance("1m")
    assert h.only_run("report").status == "Running"  # still within the crashed lease
    h.advance("10m")  # (chaos: a slot whose release failed waits out its own lease too)
    assert h.only_run("report").status == "Completed"


def test_priority_moves_work_ahead_in_the_line(make_harness: Any) -> None:
    order: list[str] = []
    app = App("digest")

    @app.function(id="answer", trigger=TriggerEvent("ticket/opened"), concurrency=1,
                  priority={"run": "event.data.plan == 'enterprise' ? 300 : 0"})
    def answer(ctx: Context) -> None:
        ctx.step.run("answer", lambda: order.append(ctx.event.data["plan"]))

    h = make_harness(app)
    _seize(h, "concurrency:answer", "", lease_s=90)
    h.send("ticket/opened", {"plan": "free"})
    h.clock.advance(1)
    h.send("ticket/opened", {"plan": "free"})
    h.clock.advance(1)
    h.send("ticket/opened", {"plan": "enterprise"})
    h.advance("15m")
    assert h.once(order)[0] == "enterprise"
    assert len(h.runs("answer", status="Completed")) == 3


def test_a_run_cancelled_while_queued_does_not_hold_up_the_line(make_harness: Any) -> None:
    ran: list[str] = []
    app = App("digest")

    @app.function(id="export", trigger=TriggerEvent("export/due"), concurrency=1)
    def export(ctx: Context) -> None:
        ctx.step.run("export", lambda: ran.append(ctx.event.data["n"]))

    h = make_harness(app)
    _seize(h, "concurrency:export", "", lease_s=90)
    h.send("export/due", {"n": "a"})
    h.clock.advance(1)
    h.send("export/due", {"n": "b"})
    first = next(r for r in h.runs("export") if r.state.run.events[0]["data"]["n"] == "a")
    assert h.cancel(first.state.run.run_id)
    # The lease lapses at 90 s; a's turn goes on to b then (left in line, a would hold b
    # back until a's place lapsed, 15 minutes later). (Chaos: a fault may cost b a backstop
    # round, 180 s.)
    h.advance("5m")
    assert h.once(ran) == ["b"]


def test_priority_orders_runs_delivered_together(make_harness: Any) -> None:
    order: list[str] = []
    app = App("digest")

    @app.function(id="triage", trigger=TriggerEvent("ticket/filed"), concurrency=1,
                  priority={"run": "event.data.plan == 'enterprise' ? 120 : 0"})
    def triage(ctx: Context) -> None:
        ctx.step.run("triage", lambda: order.append(ctx.event.data["n"]))

    h = make_harness(app)
    h.send([{"name": "ticket/filed", "data": {"n": "1", "plan": "free"}},
            {"name": "ticket/filed", "data": {"n": "2", "plan": "free"}},
            {"name": "ticket/filed", "data": {"n": "3", "plan": "enterprise"}}])
    h.advance("15m")
    assert len(h.runs("triage", status="Completed")) == 3
    # The last delivered, but ranked 120 s ahead. (Runs 1 and 2 are created at one instant
    # of the test's clock: equal ranks, in no promised order.) Only work that meets within
    # the gather second is ordered: in chaos mode an injected failure can hold run 3's start
    # back past it, so there only its completion is asserted.
    if not h.chaos:
        assert h.once(order)[0] == "3"


# -- registration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency.limit: Input should be greater than or equal to 1"),
        ({"concurrency": [1, 2, 3]}, "at most 2 constraints"),
        ({"throttle": {"limit": 1, "period": 60}}, "bare number is ambiguous"),
        ({"throttle": {"limit": 1, "period": "8d"}}, "throttle.period: 8 days"),
        ({"rate_limit": {"limit": 1, "period": "2d"}}, "rate_limit.period"),
        ({"singleton": {"mode": "queue"}}, "singleton.mode"),
        ({"priority": {"run": "1"}}, "give concurrency too"),
        ({"idempotency": "evnt.data.id"}, "unknown name 'evnt'"),
        ({"throttle": {"limit": 1, "period": "1m", "keys": "x"}}, "throttle.keys"),
        ({"debounce": {"period": "5s"}, "batch_events": {"max_size": 2, "timeout": "5s"}},
         "batch_events cannot be combined with debounce"),
        ({"debounce": {"period": "5s"}, "idempotency": "event.id"},
         "debounce cannot be combined with idempotency"),
        ({"batch_events": {"max_size": 10, "timeout": "2m"}}, "batch_events.timeout"),
        ({"batch_events": {"max_size": 0, "timeout": "2s"}}, "batch_events.max_size"),
        ({"debounce": {"period": "8d"}}, "debounce.period"),
    ],
)
def test_registration_names_the_function_and_option(options: dict[str, Any], message: str) -> None:
    app = App("a")
    with pytest.raises(ConfigurationError) as err:
        app.function(id="f", trigger=TriggerEvent("x/y"), **options)(lambda ctx: None)
    assert "function 'f'" in str(err.value) and message in str(err.value), str(err.value)


def test_a_copy_of_a_seated_event_does_not_close_its_window_early(make_harness: Any) -> None:
    """A second delivery of a large event already in the window is a copy, not a newcomer.

    It would not fit beside itself, so it used to close the window (the batch started
    before its timeout, smaller than it should be) and open an empty one.
    """
    h = make_harness(_batch_app(max_size=10, timeout="1m"), duplicate_deliveries=True)
    blob = "b" * (160 * 1024)  # two do not fit one window
    h.send("row/added", {"n": 1, "blob": blob})
    h.advance("30s")
    assert h.runs("write-rows") == []  # the window waits out its minute
    h.send("row/added", {"n": 2})
    h.advance("31s")
    assert [sorted(r.output) for r in h.runs("write-rows")] == [[1, 2]]


def test_a_copy_of_an_event_whose_window_started_opens_no_empty_window(
        make_harness: Any) -> None:
    """Every message delivered twice: a copy that comes after its window started is a copy.

    It used to open a new window (a header write and a timer) that later started nothing.
    """
    h = make_harness(_batch_app(max_size=2, timeout="1m"), duplicate_deliveries=True)
    h.send([{"name": "row/added", "data": {"n": n}} for n in (1, 2)])
    [run] = h.runs("write-rows")
    assert sorted(run.output) == [1, 2]
    window = h.backend.store.window("batch:write-rows", "")  # type: ignore[attr-defined]
    if h.chaos is None:
        assert (window.run_id, window.started) == (run.id, True)  # no window after it
    # Under chaos a copy racing its original's join may still open one: it stays empty.
    h.advance("61s")
    assert [r.id for r in h.runs("write-rows")] == [run.id]
