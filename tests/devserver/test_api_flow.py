"""The API, CLI and dashboard say why flow control holds a run back (issue 9)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.cli.runs import render_run, render_runs
from runtime.concurrency import SlotLease
from runtime.devserver import create_app
from runtime.orchestration.clock import FakeClock

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
app = App("flowapi")


@app.function(id="paced", trigger=TriggerEvent("job/paced"), throttle={"limit": 1, "period": "1m"})
def paced(ctx: Context) -> str:
    return "ok"


@app.function(id="limited", trigger=TriggerEvent("job/limited"),
              rate_limit={"limit": 1, "period": "1h"})
def limited(ctx: Context) -> str:
    return "ok"


@app.function(id="narrow", trigger=TriggerEvent("job/narrow"),
              concurrency={"limit": 1, "key": "event.data.user"})
def narrow(ctx: Context) -> str:
    return str(ctx.step.run("work", lambda: "done"))


@app.function(id="settle", trigger=TriggerEvent("doc/edited"),
              debounce={"period": "5m", "key": "event.data.doc"})
def settle(ctx: Context) -> str:
    return "ok"


@app.function(id="rows", trigger=TriggerEvent("row/added"),
              batch_events={"max_size": 10, "timeout": "30s"})
def rows(ctx: Context) -> int:
    return len(ctx.events)


def _env(tmp_path: Path) -> tuple[LocalBackend, TestClient]:
    backend = LocalBackend(app, tmp_path / "dev.sqlite3", clock=FakeClock(START))
    return backend, TestClient(create_app(backend, allowed_hosts=["testserver"]))


def _send(backend: LocalBackend, client: TestClient, name: str, data: dict[str, Any]) -> None:
    assert client.post("/api/events", json={"name": name, "data": data}).status_code == 200
    backend.run_until_idle()


def _runs(client: TestClient, fn: str) -> list[dict[str, Any]]:
    resp = client.get("/api/runs", params={"function_id": fn})
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["runs"]
    return found


def test_throttled_and_skipped_runs_say_why(tmp_path: Path) -> None:
    backend, client = _env(tmp_path)
    for _ in range(2):
        _send(backend, client, "job/paced", {})
        _send(backend, client, "job/limited", {})
    held = [r for r in _runs(client, "paced") if r["waiting"]]
    assert len(held) == 1 and held[0]["status"] == "Running"
    assert held[0]["waiting"] == {"kind": "throttled", "until": "2026-03-02T08:01:00.000Z",
                                  "message": "throttled until 2026-03-02T08:01:00Z"}
    skipped = client.get("/api/runs", params={"status": "Skipped"}).json()["runs"]
    assert [r["function_id"] for r in skipped] == ["limited"]
    assert skipped[0]["waiting"]["message"] == "rate limit of 1 per 1:00:00 reached"
    detail = client.get(f"/api/runs/{held[0]['run_id']}").json()
    assert detail["waiting"]["kind"] == "throttled"
    assert "Waiting   throttled until 2026-03-02T08:01:00Z" in render_run(detail)
    table = render_runs(_runs(client, "paced"))
    assert "WHY" in table and "throttled until" in table
    assert "WHY" not in render_runs([{**r, "waiting": None} for r in _runs(client, "paced")])


def test_a_run_waiting_for_a_concurrency_slot_says_where_it_is_in_line(tmp_path: Path) -> None:
    backend, client = _env(tmp_path)
    scope, until = "concurrency:narrow", backend.clock.now() + 90
    assert backend.store.claim_slot(SlotLease(scope, "u1", 0, 0, "x", "crashed", until),
                                     backend.clock.now())
    _send(backend, client, "job/narrow", {"user": "u1"})
    _send(backend, client, "job/narrow", {"user": "u2"})
    by_user = {r["run_id"]: r for r in _runs(client, "narrow")}
    waiting = [r["waiting"] for r in by_user.values() if r["waiting"]]
    assert waiting == [{"kind": "queued", "until": None,
                        "message": "queued behind concurrency limit 1 key 'u1' (0 ahead)"}]
    assert sum(r["status"] == "Completed" for r in by_user.values()) == 1
    _send(backend, client, "job/narrow", {"user": "u1"})  # a second run in the same line
    reads: list[tuple[str, str]] = []
    line = backend.store.line

    def counted(scope: str, key: str, shard: int, limit: int) -> Any:
        reads.append((scope, key))
        return line(scope, key, shard, limit)

    backend.store.line = counted  # type: ignore[method-assign]
    listed = _runs(client, "narrow")
    assert [r["waiting"]["message"] for r in listed if r["waiting"]] == [
        "queued behind concurrency limit 1 key 'u1' (1 ahead)",
        "queued behind concurrency limit 1 key 'u1' (0 ahead)"]
    assert reads == [(scope, "u1")]  # one read of the line for the whole listing


def test_functions_list_their_flow_control_and_open_windows(tmp_path: Path) -> None:
    backend, client = _env(tmp_path)
    _send(backend, client, "doc/edited", {"doc": "d1"})
    for n in range(3):
        _send(backend, client, "row/added", {"n": n})
    fns = {f["id"]: f for f in client.get("/api/functions").json()["functions"]}
    assert fns["paced"]["flow"] == {"throttle": {"limit": 1, "period": "PT1M", "burst": 0}}
    assert fns["rows"]["flow"]["batch_events"]["max_size"] == 10
    assert fns["settle"]["windows"] == [{
        "kind": "debounce", "key": "d1", "run_id": fns["settle"]["windows"][0]["run_id"],
        "events": 1, "until": "2026-03-02T08:05:00.000Z",
        "message": "debounced until 2026-03-02T08:05:00Z (key 'd1')"}]
    assert [w["message"] for w in fns["rows"]["windows"]] == [
        "batching 3/10 until 2026-03-02T08:00:30Z"]
    assert fns["paced"]["windows"] == []
    assert _runs(client, "settle") == [] and _runs(client, "rows") == []
