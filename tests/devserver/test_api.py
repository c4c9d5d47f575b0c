"""The dev server's HTTP API over a real LocalBackend on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.control.views import duration_ms, iso, step_attempts, timeline
from runtime.devserver import create_app
from runtime.orchestration.clock import FakeClock
from runtime.records import StepKind, StepRecord, StepStatus

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
JSON = {"content-type": "application/json"}

app = App("devtest")


@app.function(
    id="greet", trigger=TriggerEvent("user/signup", if_="event.data.name != 'nobody'"), retries=2
)
def greet(ctx: Context) -> str:
    name = ctx.step.run("fetch", lambda: ctx.event.data["name"])
    ctx.step.sleep("nap", "1h")
    return ctx.step.run("hello", lambda: f"hello {name}")


def _boom() -> None:
    raise ValueError("the flaky service is down")


@app.function(id="flaky", trigger=[TriggerEvent("job/flaky"), TriggerCron("0 9 * * *")], retries=1)
def flaky(ctx: Context) -> None:
    ctx.step.run("boom", _boom)


class Env:
    """A backend on a fake clock and a test client over the dev server."""

    def __init__(self, tmp_path: Path, served: App = app) -> None:
        self.clock = FakeClock(START)
        self.backend = LocalBackend(served, tmp_path / "dev.sqlite3", clock=self.clock)
        self.client = TestClient(create_app(self.backend, allowed_hosts=["testserver"]))

    def send(self, name: str, data: dict[str, Any] | None = None) -> str:
        resp = self.client.post("/api/events", json={"name": name, "data": data or {}})
        assert resp.status_code == 200, resp.text
        self.backend.run_until_idle()
        ids: list[str] = resp.json()["ids"]
        return ids[0]

    def runs(self, **params: Any) -> list[dict[str, Any]]:
        resp = self.client.get("/api/runs", params=params)
        assert resp.status_code == 200, resp.text
        runs: list[dict[str, Any]] = resp.json()["runs"]
        return runs

    def only_run(self, function_id: str) -> dict[str, Any]:
        runs = self.runs(function_id=function_id)
        assert len(runs) == 1, runs
        return self.run(runs[0]["run_id"])

    def run(self, run_id: str) -> dict[str, Any]:
        resp = self.client.get(f"/api/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        run: dict[str, Any] = resp.json()
        return run

    def advance(self, by: str) -> None:
        self.clock.advance(by)
        self.backend.run_until_idle()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.client.close()
    e.backend.close()


# -- plumbing --------------------------------------------------------------------------------


def test_healthz_and_dashboard(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"ok": True}
    page = env.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert env.client.get("/static/app.js").status_code == 200
    assert env.client.get("/static/style.css").status_code == 200


def test_unknown_endpoint_and_method_are_json_errors(env: Env) -> None:
    resp = env.client.get("/api/nope")
    assert resp.status_code == 404
    assert resp.json() == {"error": "no such endpoint: GET /api/nope"}
    resp = env.client.delete("/api/runs")
    assert resp.status_code == 405
    assert "DELETE" in resp.json()["error"]


def test_functions_lists_triggers_and_retries(env: Env) -> None:
    body = env.client.get("/api/functions").json()
    assert body["app_id"] == "devtest"
    fns = {f["id"]: f for f in body["functions"]}
    assert set(fns) == {"greet", "flaky"}
    assert fns["greet"]["retries"] == 2
    assert fns["greet"]["triggers"] == [
        {"type": "event", "event": "user/signup", "if": "event.data.name != 'nobody'"}
    ]
    assert fns["flaky"]["triggers"] == [
        {"type": "event", "event": "job/flaky", "if": None},
        {"type": "cron", "cron": "0 9 * * *"},
    ]


# -- events ----------------------------------------------------------------------------------


def test_send_one_event_and_a_list(env: Env) -> None:
    one = env.client.post("/api/events", json={"name": "user/signup", "data": {"name": "ada"}})
    assert one.status_code == 200
    assert len(one.json()["ids"]) == 1
    many = env.client.post(
        "/api/events",
        json=[
            {"name": "job/flaky", "id": "evt-1"},
            {"name": "user/signup", "data": {"name": "bo"}, "user": {"id": "u1"}, "ts": 1},
        ],
    )
    assert many.status_code == 200
    assert many.json()["ids"][0] == "evt-1"
    env.backend.run_until_idle()
    events = env.client.get("/api/events", params={"limit": 10}).json()["events"]
    assert {e["id"] for e in events} >= {"evt-1", *one.json()["ids"]}
    assert len(env.client.get("/api/events", params={"limit": 1}).json()["events"]) == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"data": {}}, "event.name"),
        ({"name": "user/signup", "data": [1]}, "event.data"),
        ({"name": "bad name!"}, "event.name"),
        ({"name": "stepkit/function.failed"}, "reserved"),
        ([{"name": "ok"}, {"nam": "typo"}], "event[1]"),
        ([], "empty"),
        ("just a string", "expected an event object"),
    ],
)
def test_invalid_events_are_400_naming_the_field(env: Env, body: Any, needle: str) -> None:
    resp = env.client.post("/api/events", json=body)
    assert resp.status_code == 400
    assert needle in resp.json()["error"]


def test_invalid_json_body_is_400(env: Env) -> None:
    resp = env.client.post(
        "/api/events", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("invalid JSON body:")
    empty = env.client.post("/api/events", content=b"")
    assert empty.status_code == 400
    assert "empty" in empty.json()["error"]


# -- runs ------------------------------------------------------------------------------------


def test_run_timeline_with_timestamps_and_durations(env: Env) -> None:
    env.send("user/signup", {"name": "ada"})
    run = env.only_run("greet")
    assert run["status"] == "Running"
    assert run["event"] == "user/signup"
    assert run["created_at"] == "2026-03-02T08:00:00.000Z"
    assert run["ended_at"] is None and run["duration_ms"] is None
    assert [(s["key"], s["status"]) for s in run["steps"]] == [
        ("fetch", "Completed"),
        ("nap", "Sleeping"),
    ]
    nap = run["steps"][1]
    assert nap["wake_at"] == "2026-03-02T09:00:00.000Z"
    assert nap["attempts"] == 1 and nap["max_attempts"] is None

    env.advance("1h")
    run = env.run(run["run_id"])
    assert run["status"] == "Completed"
    assert run["output"] == "hello ada"
    assert run["error"] is None
    assert run["ended_at"] == "2026-03-02T09:00:00.000Z"
    assert run["duration_ms"] == 3_600_000
    assert run["events"][0]["data"] == {"name": "ada"}
    steps = run["steps"]
    assert [s["id"] for s in steps] == ["fetch", "nap", "hello"]
    assert [s["kind"] for s in steps] == ["run", "sleep", "run"]
    fetch, nap, hello = steps
    assert fetch == {
        "key": "fetch",
        "id": "fetch",
        "kind": "run",
        "status": "Completed",
        "attempts": 1,
        "max_attempts": 3,
        "started_at": "2026-03-02T08:00:00.000Z",
        "ended_at": "2026-03-02T08:00:00.000Z",
        "duration_ms": 0,
        "output": "ada",
        "error": None,
        "wake_at": None,
        "branch": False,
        "detail": {},
    }
    assert nap["duration_ms"] == 3_600_000
    assert hello["output"] == "hello ada"


def test_retries_show_attempts_and_errors(env: Env) -> None:
    env.send("job/flaky")
    run = env.only_run("flaky")
    (boom,) = run["steps"]
    assert boom["status"] == "Retrying"
    assert (boom["attempts"], boom["max_attempts"]) == (1, 2)
    assert boom["error"]["name"] == "ValueError"
    assert boom["error"]["message"] == "the flaky service is down"
    assert boom["wake_at"] is not None

    env.advance("1m")
    run = env.run(run["run_id"])
    assert run["status"] == "Failed"
    (boom,) = run["steps"]
    assert (boom["status"], boom["attempts"]) == ("Failed", 2)
    assert run["error"]["name"] == "StepError"
    assert "the flaky service is down" in run["error"]["message"]


def test_list_filters_and_limit(env: Env) -> None:
    env.send("user/signup", {"name": "ada"})
    env.send("user/signup", {"name": "nobody"})  # filtered out by the trigger's `if`
    env.send("job/flaky")
    env.clock.advance("1s")
    env.send("user/signup", {"name": "bo"})
    assert len(env.runs()) == 3
    newest = env.runs(limit=1)
    assert len(newest) == 1 and newest[0]["function_id"] == "greet"
    assert set(newest[0]) == {
        "run_id",
        "function_id",
        "status",
        "event",
        "created_at",
        "ended_at",
        "duration_ms",
        "waiting",
        "blocked",
    }
    assert newest[0]["waiting"] is None  # no flow control holds it back
    assert [r["function_id"] for r in env.runs(function_id="greet")] == ["greet", "greet"]
    assert [r["function_id"] for r in env.runs(status="Completed")] == []
    assert [r["function_id"] for r in env.runs(status="running", function_id="flaky")] == ["flaky"]
    assert env.runs(function_id="no-such-function") == []


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"status": "Done"}, "status: expected one of Running, Blocked, Completed, Failed"),
        ({"limit": "0"}, "limit: expected an integer 1-1000"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_bad_list_parameters_are_400(env: Env, params: dict[str, str], needle: str) -> None:
    resp = env.client.get("/api/runs", params=params)
    assert resp.status_code == 400
    assert needle in resp.json()["error"]


def test_unknown_run_is_404(env: Env) -> None:
    for method, path in [
        ("GET", "/api/runs/nope"),
        ("POST", "/api/runs/nope/cancel"),
        ("POST", "/api/runs/nope/rerun"),
    ]:
        resp = env.client.request(method, path)
        assert resp.status_code == 404
        assert resp.json() == {"error": "no run 'nope'"}


def test_cancel_a_sleeping_run(env: Env) -> None:
    env.send("user/signup", {"name": "ada"})
    run_id = env.only_run("greet")["run_id"]
    resp = env.client.post(f"/api/runs/{run_id}/cancel")
    assert resp.json() == {"cancelled": True, "status": "Cancelled"}
    run = env.run(run_id)
    assert run["status"] == "Cancelled"
    assert run["error"]["name"] == "FunctionCancelled"
    again = env.client.post(f"/api/runs/{run_id}/cancel")
    assert again.json() == {"cancelled": False, "status": "Cancelled"}
    env.advance("2h")  # the sleep's wake-up finds the run cancelled
    assert env.run(run_id)["status"] == "Cancelled"


def test_rerun_starts_a_new_run_with_the_same_event(env: Env) -> None:
    env.send("user/signup", {"name": "ada"})
    env.advance("1h")
    old = env.only_run("greet")
    resp = env.client.post(f"/api/runs/{old['run_id']}/rerun")
    assert resp.status_code == 200
    new_id = resp.json()["run_id"]
    assert new_id != old["run_id"]
    env.backend.run_until_idle()
    new = env.run(new_id)
    assert new["function_id"] == "greet"
    assert new["events"] == old["events"]
    assert [s["key"] for s in new["steps"]] == ["fetch", "nap"]


def test_actions_on_a_run_of_an_unregistered_function_are_409(tmp_path: Path) -> None:
    clock = FakeClock(START)
    with LocalBackend(app, tmp_path / "db.sqlite3", clock=clock) as backend:
        backend.send({"name": "user/signup", "data": {"name": "ada"}})
        backend.run_until_idle()
        (run,) = backend.list_runs()
    other = App("devtest")  # the function was since removed from the code
    with (
        LocalBackend(other, tmp_path / "db.sqlite3", clock=clock) as backend,
        TestClient(create_app(backend, allowed_hosts=["testserver"])) as client,
    ):
        detail = client.get(f"/api/runs/{run.run_id}").json()
        assert detail["steps"][0]["max_attempts"] is None
        for action in ("cancel", "rerun"):
            resp = client.post(f"/api/runs/{run.run_id}/{action}")
            assert resp.status_code == 409
            assert "no longer registered" in resp.json()["error"]


# -- views -----------------------------------------------------------------------------------


def test_iso_and_duration() -> None:
    assert iso(None) is None
    assert iso(START.timestamp() + 0.25) == "2026-03-02T08:00:00.250Z"
    assert duration_ms(None, 1.0) is None
    assert duration_ms(1.0, 2.5) == 1500


@pytest.mark.parametrize(
    ("status", "attempt", "expected"),
    [
        (StepStatus.SCHEDULED, 0, 0),
        (StepStatus.RETRYING, 2, 2),
        (StepStatus.COMPLETED, 0, 1),
        (StepStatus.FAILED, 3, 4),
        (StepStatus.SLEEPING, 0, 1),
    ],
)
def test_step_attempts(status: StepStatus, attempt: int, expected: int) -> None:
    rec = StepRecord(key="k", id="k", kind=StepKind.RUN, status=status, attempt=attempt)
    assert step_attempts(rec) == expected


def test_timeline_orders_by_start_then_store_order() -> None:
    def rec(key: str, started: float | None) -> StepRecord:
        return StepRecord(key, key, StepKind.RUN, StepStatus.COMPLETED, started_at=started)

    steps = {r.key: r for r in [rec("c", 3.0), rec("a", 1.0), rec("b2", 2.0), rec("b1", 2.0)]}
    steps["x"] = rec("x", None)
    assert [r.key for r in timeline(steps)] == ["a", "b2", "b1", "c", "x"]


def test_dlq_endpoints_list_and_redrive_and_name_bad_requests(env: Env) -> None:
    from runtime.records import Message, MessageKind

    assert env.client.get("/api/dlq").json() == {"count": 0, "messages": []}
    queue = env.backend.queue
    queue.max_receives = 1
    queue.send([Message(MessageKind.CONTINUE, "greet", "r1", version=2)])
    (delivery,) = queue.receive(1)
    assert queue.release(delivery, error="boom")
    listed = env.client.get("/api/dlq").json()
    assert listed["count"] == 1
    (dead,) = listed["messages"]
    assert (dead["queue"], dead["kind"], dead["run_id"], dead["error"]) == (
        "greet", "continue", "r1", "boom"
    )
    bad = {
        '{"queue": 1}': "queue: expected a string, got int",
        '{"bogus": "x"}': "unknown field(s) bogus; expected queue, id",
        "[]": "expected a JSON object",
        "{nope": "invalid JSON body",
    }
    for body, error in bad.items():
        resp = env.client.post("/api/dlq/redrive", content=body, headers=JSON)
        assert resp.status_code == 400 and error in resp.json()["error"], (body, resp.text)
    resp = env.client.post("/api/dlq/redrive", json={"id": "12345"})
    assert resp.status_code == 404 and resp.json() == {"error": "no dead-lettered message '12345'"}
    resp = env.client.post("/api/dlq/redrive")  # no body: everything
    assert resp.json() == {"redriven": [dead["message_id"]]}
    assert env.client.get("/api/dlq").json()["count"] == 0


def test_a_run_says_what_it_is_doing_and_a_finished_runs_pending_steps_are_abandoned(
    env: Env,
) -> None:
    env.send("user/signup", {"name": "ada"})
    run = env.only_run("greet")
    assert run["activity"] == [{
        "kind": "sleeping", "step": "nap", "until": "2026-03-02T09:00:00.000Z",
        "message": "sleeping in step 'nap' until 2026-03-02T09:00:00Z"}]
    assert env.client.post(f"/api/runs/{run['run_id']}/cancel").json()["cancelled"] is True
    run = env.run(run["run_id"])
    assert run["status"] == "Cancelled" and run["activity"] == []
    nap = next(s for s in run["steps"] if s["key"] == "nap")
    assert nap["status"] == "Abandoned"  # not "sleeping until ..." on a cancelled run

    env.send("job/flaky")
    flaky = env.only_run("flaky")
    [doing] = flaky["activity"]
    assert doing["kind"] == "retrying" and doing["step"] == "boom"
    assert (doing["attempt"], doing["of"]) == (2, 2)
    assert doing["last_error"] == "ValueError: the flaky service is down"
    assert doing["message"].startswith("retrying step 'boom': attempt 2 of 2 at 2026-03-02T08:00:")


def test_a_steps_failed_attempts_are_kept_each_with_its_error(env: Env) -> None:
    env.send("job/flaky")
    env.clock.advance("1m")  # past the retry's backoff, before the 09:00 cron fires
    env.backend.run_until_idle()
    run = env.only_run("flaky")
    boom = next(s for s in run["steps"] if s["key"] == "boom")
    assert boom["status"] == "Failed"
    assert [(e["attempt"], e["error"]) for e in boom["detail"]["errors"]] == [
        (1, "ValueError: the flaky service is down"),
        (2, "ValueError: the flaky service is down"),
    ]
    assert boom["detail"]["errors"][0]["at"] == "2026-03-02T08:00:00.000Z"


def test_skip_ends_a_sleep_now_once(env: Env) -> None:
    env.send("user/signup", {"name": "ada"})
    run = env.only_run("greet")
    skip = f"/api/runs/{run['run_id']}/steps/nap/skip"
    assert env.client.post(skip).json() == {"skipped": True}
    assert env.client.post(skip).json() == {"skipped": True}  # still sleeping until handled
    env.backend.run_until_idle()
    run = env.run(run["run_id"])
    assert run["status"] == "Completed" and run["output"] == "hello ada"  # no clock moved
    assert env.client.post(skip).json() == {"skipped": False}  # nothing left to skip
    assert env.client.post("/api/runs/nope/steps/nap/skip").status_code == 404


def test_a_cron_fires_by_hand_as_its_schedule_would(env: Env) -> None:
    resp = env.client.post("/api/functions/flaky/cron")
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["run_id"]
    env.backend.run_until_idle()
    run = env.run(run_id)
    assert run["event"] == "stepkit/scheduled.timer"
    assert run["events"][0]["data"] == {"cron": "0 9 * * *"}
    assert env.client.post("/api/functions/greet/cron").status_code == 409  # no cron trigger
    assert env.client.post("/api/functions/nope/cron").status_code == 404


def test_runs_can_be_filtered_by_time(env: Env) -> None:
    env.send("user/signup", {"name": "ada"})
    env.clock.advance("10m")
    env.send("user/signup", {"name": "bob"})
    everyone = env.runs()
    recent = env.runs(since="2026-03-02T08:05:00Z")
    assert len(everyone) == 2 and [r["run_id"] for r in recent] == [everyone[0]["run_id"]]
    bad = env.client.get("/api/runs", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]
