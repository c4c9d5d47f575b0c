"""``ctx.patched``: a deliberate change that runs in flight before it keep replaying as before.

Deployed as a user would: a new ``App`` with the same id and a new harness on the same SQLite
file, with the clock where the first left it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from runtime import App, Context, TriggerEvent
from runtime.testing import Harness

T0 = 1_800_000_000.0
CALLS: Counter[str] = Counter()


def _call(name: str) -> str:
    CALLS[name] += 1
    return name


def before(ctx: Context) -> str:
    ctx.step.run("reserve-stock", lambda: _call("reserve"))
    charged = ctx.step.run("charge-card", lambda: _call("charge"))
    ctx.step.sleep("cool-down", "1h")
    return charged


def after(ctx: Context) -> str:
    ctx.step.run("reserve-stock", lambda: _call("reserve"))
    if ctx.patched("charge-with-fee"):
        charged = ctx.step.run("charge-card-with-fee", lambda: _call("charge-with-fee"))
    else:
        charged = ctx.step.run("charge-card", lambda: _call("charge"))
    ctx.step.sleep("cool-down", "1h")
    assert ctx.patched("charge-with-fee") is (charged == "charge-with-fee")  # the same answer
    return charged


def _deploy(handler: object, path: Path, start: float) -> Harness:
    app = App("shop")
    app.function(id="checkout", trigger=TriggerEvent("shop/order.placed"), retries=0)(handler)
    return Harness.local(app, path=path, start=start)


def test_runs_past_the_change_replay_the_old_code_and_new_runs_take_the_new(
    tmp_path: Path,
) -> None:
    CALLS.clear()
    path = tmp_path / "db.sqlite3"
    old = _deploy(before, path, T0)
    old.send("shop/order.placed", {"order": 1})
    [in_flight] = old.runs("checkout")
    assert old.run(in_flight.id).step("cool-down").status == "Sleeping"
    old.close()

    new = _deploy(after, path, T0 + 60)
    new.send("shop/order.placed", {"order": 2})
    new.advance("2h")
    runs = {r.id: r for r in new.runs("checkout")}
    assert runs[in_flight.id].status == "Completed"
    assert runs[in_flight.id].output == "charge"  # recorded past the change: the old code
    [fresh] = [r for r in runs.values() if r.id != in_flight.id]
    assert fresh.status == "Completed" and fresh.output == "charge-with-fee"
    assert new.run(fresh.id).step("patched:charge-with-fee").output is True
    assert CALLS == {"reserve": 2, "charge": 1, "charge-with-fee": 1}  # nothing redone
    new.close()


def test_a_run_that_reaches_the_change_under_the_new_code_takes_it(tmp_path: Path) -> None:
    def sleeps_first(ctx: Context) -> str:
        ctx.step.sleep("wait-for-stock", "1h")
        return before(ctx)

    def sleeps_then_patched(ctx: Context) -> str:
        ctx.step.sleep("wait-for-stock", "1h")
        return after(ctx)

    CALLS.clear()
    path = tmp_path / "db.sqlite3"
    old = _deploy(sleeps_first, path, T0)
    old.send("shop/order.placed", {"order": 1})
    old.close()
    new = _deploy(sleeps_then_patched, path, T0 + 60)
    new.advance("3h")
    run = new.only_run("checkout")
    assert run.status == "Completed" and run.output == "charge-with-fee"
    assert CALLS == {"reserve": 1, "charge-with-fee": 1}
    new.close()


def test_in_a_parallel_branch_it_is_refused_naming_the_change(tmp_path: Path) -> None:
    def in_branch(ctx: Context) -> None:
        ctx.step.parallel([lambda: ctx.patched("fee")])

    h = _deploy(in_branch, tmp_path / "db.sqlite3", T0)
    h.send("shop/order.placed", {"order": 1})
    run = h.only_run("checkout")
    assert run.status == "Failed"
    assert "ctx.patched('fee') in a parallel branch" in (run.error or "")
    h.close()
