"""Bulk actions by filter: cancel every matching run, replay failed ones (runtime.control.bulk).

Each case runs on both backends in both modes, through the harness's control plane (the one
the dev server's API and the CLI use).
"""

from __future__ import annotations

from typing import Any

from runtime import App, Context, TriggerEvent
from runtime.client import Deployment
from runtime.control import Cancelled, ControlPlane
from runtime.control.aws import AwsControl
from runtime.control.bulk import (
    Operation,
    Pacer,
    Progress,
    RunFilter,
    cancel_matching,
    matching,
    replay_matching,
)
from runtime.records import RerunOf, RunStatus
from runtime.testing import Harness
from stepkit_emulators.aws import AwsBackend


def _control(h: Harness) -> ControlPlane:
    """The harness's control plane; on AWS, the deployed app's (``stepkit ... --aws``).

    On AWS a cancel or a rerun is a message to the run's queue, as the CLI sends it; the
    plane reads the table with the harness's clock (its runs are kept until then).
    """
    if not isinstance(h.backend, AwsBackend):
        return h.control
    r = h.backend.resources
    control = AwsControl(Deployment(r.app_id, r.bus, r.table), clients=h.backend.clients)
    control.store = h.backend.store
    return control


def _cancelled(h: Harness) -> str:
    """What a cancel of a running run is reported as: queued to its worker on AWS."""
    return "queued" if isinstance(h.backend, AwsBackend) else "cancelled"


def _unpaced() -> Pacer:
    """A pacer at the default rate whose waits take no time (the fake clock never moves)."""
    return Pacer(20, clock=lambda: 0.0, sleep=lambda _: None)


def _shop(shipped: list[str]) -> App:
    app = App("shop")

    @app.function(id="fulfil", trigger=TriggerEvent("order/created"))
    def fulfil(ctx: Context) -> str:
        ctx.step.sleep("cooling-off", "1h")
        ctx.step.run("ship", lambda: shipped.append(ctx.event.data["order_id"]))
        return "shipped"

    @app.function(id="audit", trigger=TriggerEvent("order/created"))
    def audit(ctx: Context) -> str:
        ctx.step.sleep("later", "1h")
        return "audited"

    return app


def _begin(h: Harness) -> Operation:
    """An operation beginning a second after the runs so far (the fake clock stands still)."""
    h.advance("1s")
    return Operation.begin(h.clock.now())


def test_cancel_matching_runs_dry_run_first_then_for_real(make_harness: Any) -> None:
    shipped: list[str] = []
    h = make_harness(_shop(shipped))
    for i, plan in enumerate(["pro", "free", "pro", "free", "pro"]):
        h.send("order/created", {"order_id": f"o{i}", "plan": plan})
    where = RunFilter(function_id="fulfil", status=RunStatus.RUNNING,
                      condition="event.data.plan == 'pro'")

    dry = cancel_matching(_control(h), where, operation=_begin(h), dry_run=True)
    assert (dry.matched, dry.counts) == (3, {})
    assert all(r.status == "Running" for r in h.runs())  # a dry run touches nothing

    seen: list[Progress] = []
    report = cancel_matching(_control(h), where, operation=_begin(h), pacer=_unpaced(),
                             progress=seen.append)
    h.settle()
    assert report.counts == {_cancelled(h): 3}
    assert [(p.done, p.total) for p in seen] == [(1, 3), (2, 3), (3, 3)]
    status = {r.state.run.events[0]["data"]["order_id"]: r.status for r in h.runs("fulfil")}
    assert status == {"o0": "Cancelled", "o1": "Running", "o2": "Cancelled",
                      "o3": "Running", "o4": "Cancelled"}
    assert all(r.status == "Running" for r in h.runs("audit"))  # another function's runs

    again = cancel_matching(_control(h), RunFilter(function_id="fulfil"), operation=_begin(h),
                            pacer=_unpaced())
    assert (again.matched, again.counts) == (2, {_cancelled(h): 2})  # the finished ones left out
    h.advance("2h")
    assert shipped == []


class _CountingControl:
    """A control plane that notes the statuses listed and the runs read one by one."""

    def __init__(self, control: ControlPlane) -> None:
        self.control = control
        self.listed: list[Any] = []
        self.read: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.control, name)

    def list_runs(self, query: Any) -> Any:
        self.listed.append(query.status)
        return self.control.list_runs(query)

    def run(self, run_id: str) -> Any:
        self.read.append(run_id)
        return self.control.run(run_id)


def test_a_cancel_reads_the_runs_in_flight_not_the_history(make_harness: Any) -> None:
    """Without --status a cancel lists through the status index the statuses it acts on,
    and --if reads only those runs: its cost follows the runs in flight, not all kept."""
    shipped: list[str] = []
    h = make_harness(_shop(shipped))
    for i in range(4):
        h.send("order/created", {"order_id": f"done{i}", "plan": "pro"})
    h.advance("2h")  # these finish: the history
    h.send("order/created", {"order_id": "live", "plan": "pro"})
    counting = _CountingControl(_control(h))
    report = cancel_matching(counting, RunFilter(function_id="fulfil",  # type: ignore[arg-type]
                                                 condition="event.data.plan == 'pro'"),
                             operation=_begin(h), pacer=_unpaced())
    assert report.matched == 1
    assert set(counting.listed) <= {RunStatus.RUNNING, RunStatus.BLOCKED}
    assert len(counting.read) == 1  # the one run in flight, not the four finished


class _RacingControl:
    """A control plane whose runs move on by themselves between the listing and a cancel."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.control = _control(h)
        self.cancels = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.control, name)

    def cancel(self, run_id: str) -> Cancelled:
        self.cancels += 1
        if self.cancels == 2:  # the runs' sleeps end and they complete before this cancel
            self.h.advance("2h")
        return self.control.cancel(run_id)


def test_bulk_cancel_racing_the_runs_own_progress(make_harness: Any) -> None:
    shipped: list[str] = []
    h = make_harness(_shop(shipped))
    for i in range(3):
        h.send("order/created", {"order_id": f"o{i}"})
    control: ControlPlane = _RacingControl(h)  # type: ignore[assignment]

    report = cancel_matching(control, RunFilter(function_id="fulfil"), operation=_begin(h),
                             pacer=_unpaced())
    h.settle()
    assert report.matched == 3
    assert report.counts == {_cancelled(h): 1, "already_finished": 2}
    runs = h.runs("fulfil")
    # The newest was cancelled first; the two others finished on their own, untouched.
    assert [r.status for r in runs] == ["Cancelled", "Completed", "Completed"]
    assert sorted(h.once(shipped)) == sorted(
        r.state.run.events[0]["data"]["order_id"] for r in runs[1:])


def _payments(broken: dict[str, bool], fetched: list[str]) -> App:
    app = App("payments")

    @app.function(id="charge", trigger=TriggerEvent("invoice/due"), retries=0)
    def charge(ctx: Context) -> str:
        invoice = ctx.event.data["invoice"]
        ctx.step.run("fetch", lambda: fetched.append(invoice))

        def pay() -> str:
            if broken["api"]:
                raise RuntimeError("payment API down")
            return f"paid {invoice}"

        return str(ctx.step.run("pay", pay))

    return app


def test_replay_failed_runs_from_a_step_each_once_linked_to_its_original(
        make_harness: Any) -> None:
    broken, fetched = {"api": True}, []
    h = make_harness(_payments(broken, fetched))
    for i in range(4):
        h.send("invoice/due", {"invoice": f"i{i}"})
    failed = {r.id for r in h.runs("charge", "Failed")}
    assert len(failed) == 4
    broken["api"] = False
    op = _begin(h)
    where = RunFilter(function_id="charge", status=RunStatus.FAILED)

    assert replay_matching(_control(h), where, operation=op, dry_run=True).matched == 4
    assert len(h.runs("charge")) == 4

    report = replay_matching(_control(h), where, from_step="pay", operation=op,
                             pacer=_unpaced())
    h.settle()
    assert report.counts == {"replayed": 4}
    replays = [r for r in h.runs("charge") if r.id not in failed]
    assert {r.state.run.rerun_of for r in replays} == {RerunOf(i, "pay") for i in failed}
    assert all(r.status == "Completed" for r in replays)
    assert sorted(h.once(fetched)) == ["i0", "i1", "i2", "i3"]  # "fetch" was not run again

    # Interrupted or not, the same operation again replays nothing twice.
    resumed = replay_matching(_control(h), where, operation=Operation.resume(op.id),
                              pacer=_unpaced())
    h.settle()
    assert resumed.counts == {"already_replayed": 4}
    assert len(h.runs("charge")) == 8


def test_an_interrupted_replay_resumed_replays_each_run_once(make_harness: Any) -> None:
    broken, fetched = {"api": True}, []
    h = make_harness(_payments(broken, fetched))
    for i in range(5):
        h.send("invoice/due", {"invoice": f"i{i}"})
    broken["api"] = False
    op, where = _begin(h), RunFilter(function_id="charge", status=RunStatus.FAILED)

    counting = _CountingControl(_control(h))
    first = replay_matching(counting, where, operation=op,  # type: ignore[arg-type]
                            pacer=_unpaced(), limit=2)
    assert counting.read == []  # a new operation's replays cannot exist: none is looked up
    # Interrupted before the queued replays ran: the originals are still Failed.
    rest = replay_matching(_control(h), where, operation=Operation.resume(op.id),
                           pacer=_unpaced())
    h.settle()
    assert first.counts == {"replayed": 2}
    # The two replays still queued are sent again under the same ids: they start nothing.
    assert rest.counts == {"replayed": 5}
    replays = [r for r in h.runs("charge") if r.state.run.rerun_of is not None]
    assert len(replays) == 5
    assert len({r.state.run.rerun_of for r in replays}) == 5
    assert all(r.status == "Completed" for r in replays)
    # Resumed once more, now that they ran: each is found and none is sent again.
    last = replay_matching(_control(h), where, operation=Operation.resume(op.id),
                           pacer=_unpaced())
    assert last.counts == {"already_replayed": 5}


def test_replay_of_a_run_that_is_itself_a_replay(make_harness: Any) -> None:
    broken, fetched = {"api": True}, []
    h = make_harness(_payments(broken, fetched))
    h.send("invoice/due", {"invoice": "i0"})
    original = h.only_run("charge")
    where = RunFilter(function_id="charge", status=RunStatus.FAILED)

    replay_matching(_control(h), where, operation=_begin(h), pacer=_unpaced())
    h.settle()
    [first] = [r for r in h.runs("charge") if r.id != original.id]
    assert first.status == "Failed"  # the API is still down
    since = first.state.run.created_at

    broken["api"] = False
    report = replay_matching(_control(h), RunFilter(function_id="charge", since=since),
                             operation=_begin(h), pacer=_unpaced())
    h.settle()
    assert report.matched == 1  # only the replay was created since
    [second] = [r for r in h.runs("charge") if r.id not in {original.id, first.id}]
    assert second.state.run.rerun_of == RerunOf(first.id, None)
    assert (second.status, second.output) == ("Completed", "paid i0")
    assert second.state.run.events == original.state.run.events


def test_listing_pages_through_runs_created_in_the_same_millisecond(
        make_harness: Any) -> None:
    h = make_harness(_shop([]))
    h.send([{"name": "order/created", "data": {"order_id": f"a{i}"}} for i in range(5)])
    h.advance("1s")
    h.send([{"name": "order/created", "data": {"order_id": f"b{i}"}} for i in range(3)])
    op = _begin(h)

    found = list(matching(_control(h), RunFilter(function_id="fulfil"), op.began_at, page=2))
    assert len({r["run_id"] for r in found}) == len(found) == 8
    assert [r["run_id"] for r in found] == [r.id for r in h.runs("fulfil")]
    later = list(matching(_control(h), RunFilter(function_id="fulfil"), op.began_at - 1.5,
                          page=2))
    assert len(later) == 5  # ``until``: only those created before it
