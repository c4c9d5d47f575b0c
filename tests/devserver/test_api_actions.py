"""The dev server's actions and event detail: invoke, rerun from a step, waits an event resolved."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.control.local import InProcessControl
from runtime.orchestration.protocols import Store
from runtime.records import RunState
from tests.devserver.test_api import Env

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

app = App("actionstest")
calls: list[str] = []


def _record(name: str) -> str:
    calls.append(name)
    return name


@app.function(id="order", trigger=TriggerEvent("shop/order"))
def order(ctx: Context) -> dict[str, Any]:
    ctx.step.run("reserve", _record, "reserve")
    paid = ctx.step.wait_for_event("wait-payment", event="shop/paid", match="data.order_id",
                                   timeout="1h")
    ctx.step.run("ship", _record, "ship")
    return {"paid": paid is not None, "data": ctx.event.data}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    calls.clear()
    e = Env(tmp_path, app)
    try:
        yield e
    finally:
        e.backend.close()


def _paid_order(env: Env, order_id: str) -> tuple[str, str]:
    """An order run whose wait the payment event resolved; (run id, payment event id)."""
    env.send("shop/order", {"order_id": order_id})
    (run,) = [r for r in env.backend.list_runs() if r.events[0]["data"]["order_id"] == order_id]
    env.advance("1m")
    paid = env.send("shop/paid", {"order_id": order_id})
    assert env.run(run.run_id)["status"] == "Completed"
    return run.run_id, paid


def test_invoke_starts_a_run_with_the_data(env: Env) -> None:
    resp = env.client.post("/api/functions/order/invoke", json={"data": {"order_id": "o-1"}})
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["run_id"]
    env.backend.run_until_idle()
    run = env.run(run_id)
    assert run["function_id"] == "order"
    assert run["event"] == "stepkit/function.invoked"
    assert run["events"][0]["data"] == {"order_id": "o-1"}
    assert [s["key"] for s in run["steps"]] == ["reserve", "wait-payment"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"data": [1]}, 400, 'expected a JSON object like {"data": {"user_id": "ada"}}'),
        ("{not json", 400, "invalid JSON body"),
    ],
)
def test_invoke_refuses_data_that_is_not_an_object(
    env: Env, body: Any, status: int, error: str
) -> None:
    if isinstance(body, str):
        resp = env.client.post("/api/functions/order/invoke", content=body,
                               headers={"content-type": "application/json"})
    else:
        resp = env.client.post("/api/functions/order/invoke", json=body)
    assert resp.status_code == status
    assert error in resp.json()["error"]
    assert env.backend.list_runs() == []


def test_invoke_of_an_unknown_function_is_404(env: Env) -> None:
    resp = env.client.post("/api/functions/nope/invoke", json={"data": {}})
    assert resp.status_code == 404
    assert "nope" in resp.json()["error"]


def test_rerun_from_a_step_reuses_the_results_recorded_before_it(env: Env) -> None:
    original, _ = _paid_order(env, "o-1")
    assert calls == ["reserve", "ship"]
    env.advance("1m")
    resp = env.client.post(f"/api/runs/{original}/rerun", json={"from": "ship"})
    assert resp.status_code == 200, resp.text
    fork = resp.json()["run_id"]
    assert fork != original
    env.backend.run_until_idle()
    run = env.run(fork)
    assert run["status"] == "Completed"
    assert run["output"] == {"paid": True, "data": {"order_id": "o-1"}}
    assert calls == ["reserve", "ship", "ship"]  # reserve and the wait were reused


def test_rerun_from_a_step_the_run_does_not_have_is_404(env: Env) -> None:
    original, _ = _paid_order(env, "o-1")
    resp = env.client.post(f"/api/runs/{original}/rerun", json={"from": "nope"})
    assert resp.status_code == 404
    assert "has no step 'nope'" in resp.json()["error"]
    resp = env.client.post(f"/api/runs/{original}/rerun", json={"from": 3})
    assert resp.status_code == 400


def test_event_detail_lists_the_runs_it_started_and_the_waits_it_resolved(env: Env) -> None:
    first, paid = _paid_order(env, "o-1")
    _paid_order(env, "o-2")  # another order's payment resolves only its own wait
    (started,) = [r for r in env.backend.list_runs() if r.run_id == first]
    order_event = started.events[0]["id"]

    resp = env.client.get(f"/api/events/{paid}")
    assert resp.status_code == 200, resp.text
    detail = resp.json()
    assert detail["id"] == paid and detail["name"] == "shop/paid"
    assert detail["data"] == {"order_id": "o-1"}
    assert detail["runs"] == []  # it triggers no function
    assert detail["waits"] == [{"run_id": first, "function_id": "order",
                                "status": "Completed", "step": "wait-payment"}]

    ordered = env.client.get(f"/api/events/{order_event}").json()
    assert [r["run_id"] for r in ordered["runs"]] == [first]
    assert ordered["waits"] == []


def test_a_fork_that_reused_a_resolved_wait_is_not_listed_as_resolved_by_the_event(
    env: Env,
) -> None:
    original, paid = _paid_order(env, "o-1")
    env.advance("1m")
    fork = env.client.post(f"/api/runs/{original}/rerun", json={"from": "ship"}).json()["run_id"]
    env.backend.run_until_idle()
    assert env.run(fork)["status"] == "Completed"
    waits = env.client.get(f"/api/events/{paid}").json()["waits"]
    assert [w["run_id"] for w in waits] == [original]


def test_a_wait_resolved_by_lookback_is_listed(env: Env) -> None:
    # The payment arrives before the run reaches its wait: the lookback matches it.
    env.client.post("/api/events", json={"name": "shop/order", "data": {"order_id": "o-9"}})
    paid = env.send("shop/paid", {"order_id": "o-9"})
    (run,) = env.backend.list_runs()
    assert env.run(run.run_id)["status"] == "Completed"
    waits = env.client.get(f"/api/events/{paid}").json()["waits"]
    assert [w["run_id"] for w in waits] == [run.run_id]


def test_event_detail_of_an_unknown_event_is_404(env: Env) -> None:
    resp = env.client.get("/api/events/nope")
    assert resp.status_code == 404
    assert "no recent event 'nope'" in resp.json()["error"]


class _OtherStore:
    """The SQLite store seen as a store that is not SQLite: the generic path."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def load(self, run_id: str) -> RunState | None:
        return self.inner.load(run_id)


def test_waits_resolved_read_run_by_run_over_another_store(env: Env) -> None:
    original, paid = _paid_order(env, "o-1")
    _paid_order(env, "o-2")
    env.advance("1m")
    env.client.post(f"/api/runs/{original}/rerun", json={"from": "ship"})
    env.backend.run_until_idle()
    backend = env.backend
    other = InProcessControl(backend.orchestrator, app=backend.app, clock=backend.clock,
                             store=_OtherStore(backend.store))  # type: ignore[arg-type]
    generic = other.resolved_waits(paid)
    assert generic == InProcessControl.over(backend).resolved_waits(paid)
    assert generic == [{"run_id": original, "function_id": "order",
                        "status": "Completed", "step": "wait-payment"}]
