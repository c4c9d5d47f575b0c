"""`stepkit cancel-all` / `replay-all` and `POST /api/runs/bulk/...` against a live dev server."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.orchestration.clock import FakeClock
from tests.devserver.test_cli import stepkit, url

__all__ = ["url"]  # the dev server fixture of test_cli, over this module's backend

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
broken = {"api": True}

app = App("bulktest")


@app.function(id="slow", trigger=TriggerEvent("job/slow"))
def slow(ctx: Context) -> str:
    ctx.step.sleep("nap", "1h")
    return "done"


@app.function(id="charge", trigger=TriggerEvent("invoice/due"), retries=0)
def charge(ctx: Context) -> str:
    if ctx.event.data.get("plan"):  # a plan's invoice waits out its grace period first
        ctx.step.sleep("grace", "1h")

    def pay() -> str:
        if broken["api"]:
            raise RuntimeError("payment API down")
        return "paid"

    return str(ctx.step.run("pay", pay))


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    broken["api"] = True
    with LocalBackend(app, tmp_path / "dev.sqlite3", clock=FakeClock(START)) as b:
        yield b


def _send(backend: LocalBackend, name: str, *data: dict[str, int]) -> None:
    backend.send([{"name": name, "data": d} for d in data])
    backend.run_until_idle()


def test_cancel_all_counts_asks_then_cancels_with_progress(
        backend: LocalBackend, url: str) -> None:
    _send(backend, "job/slow", {"n": 0}, {"n": 1}, {"n": 2})
    _send(backend, "invoice/due", {"n": 0})

    dry = stepkit("cancel-all", "--function", "slow", "--dry-run", "--url", url)
    assert dry.exit_code == 0, dry.output
    assert "would cancel 3 run(s)" in dry.stdout
    assert {r.status.value for r in backend.list_runs()} == {"Running", "Failed"}

    refused = stepkit("cancel-all", "--function", "slow", "--url", url, input="n\n")
    assert refused.exit_code == 1 and "Cancel these 3 run(s)?" in refused.output
    assert {r.status.value for r in backend.list_runs()} == {"Running", "Failed"}

    done = stepkit("cancel-all", "--function", "slow", "--if", "event.data.n > 0",
                   "--url", url, input="y\n")
    assert done.exit_code == 0, done.output
    assert "cancelled 2" in done.stdout
    assert "2/2 runs" in done.stderr  # plain progress lines when not on a terminal
    backend.run_until_idle()
    by_n = {r.events[0]["data"]["n"]: r.status.value
            for r in backend.list_runs() if r.function_id == "slow"}
    assert by_n == {0: "Running", 1: "Cancelled", 2: "Cancelled"}

    bad = stepkit("cancel-all", "--if", "event.data.n >", "--url", url)
    assert bad.exit_code == 2 and "invalid CEL expression" in bad.output


def test_replay_all_then_resume_replays_no_run_twice(backend: LocalBackend, url: str) -> None:
    _send(backend, "invoice/due", {"n": 0}, {"n": 1})
    broken["api"] = False

    first = stepkit("replay-all", "--function", "charge", "--status", "failed", "--yes",
                    "--json", "--url", url)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["counts"] == {"replayed": 2}
    assert f"--resume {report['operation']}" in first.stderr
    backend.run_until_idle()
    runs = backend.list_runs()
    assert sorted(r.status.value for r in runs) == ["Completed", "Completed", "Failed", "Failed"]
    assert {r.rerun_of.run_id for r in runs if r.rerun_of} == set(report["new_runs"])

    again = stepkit("replay-all", "--function", "charge", "--yes", "--json",
                    "--resume", report["operation"], "--url", url)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"] == {"already_replayed": 2}
    backend.run_until_idle()
    assert len(backend.list_runs()) == 4

    wrong = stepkit("replay-all", "--status", "Running", "--url", url)
    assert wrong.exit_code == 2


def test_the_api_answers_the_report_and_refuses_bad_bodies(
        backend: LocalBackend, url: str) -> None:
    _send(backend, "invoice/due", {"n": 0}, {"n": 1}, {"n": 2})
    broken["api"] = False
    backend.clock.advance(1)  # type: ignore[attr-defined]  # runs before the operation
    endpoint = f"{url}/api/runs/bulk/replay"

    dry = httpx.post(endpoint, json={"function_id": "charge", "dry_run": True}).json()
    assert (dry["dry_run"], dry["matched"], dry["counts"], dry["capped"]) == (
        True, 3, {}, False)
    assert len(dry["sample"]) == 3

    done = httpx.post(endpoint, json={"function_id": "charge", "from": "pay", "limit": 2})
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["matched"], body["counts"], body["capped"]) == (2, {"replayed": 2}, True)
    backend.run_until_idle()
    rest = httpx.post(endpoint, json={"function_id": "charge",
                                      "operation": body["operation"]}).json()
    assert rest["counts"] == {"already_replayed": 2, "replayed": 1}
    backend.run_until_idle()
    assert sorted(r.status.value for r in backend.list_runs()) == ["Completed"] * 3 + [
        "Failed"] * 3

    for bad in ({"status": "Nope"}, {"dry_run": "yes"}, {"rate": 0}, {"whatever": 1},
                {"if": "event.data.n >"}, {"status": "Running"}, [1]):
        answer = httpx.post(endpoint, json=bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]
    cancel = httpx.post(f"{url}/api/runs/bulk/cancel", json={"dry_run": True}).json()
    assert cancel["matched"] == 0  # all finished


def test_the_readmes_bulk_commands_run_as_written(backend: LocalBackend, url: str) -> None:
    """README's two lines, their optional [...] parts given.

    The CLI counts ``--since 1h`` back from the wall clock, so the runs are made now.
    """
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = [line for line in readme.splitlines()
             if line.startswith(("stepkit cancel-all ", "stepkit replay-all "))]
    assert len(lines) == 2
    cancel, replay = (shlex.split(line.replace("[", "").replace("]", ""))[1:] for line in lines)
    backend.clock.advance(time.time() - 60 - START.timestamp())  # type: ignore[attr-defined]
    _send(backend, "invoice/due", {"plan": "pro"}, {"plan": "free"})  # in their grace
    _send(backend, "invoice/due", {"n": 0}, {"n": 1})  # failed: the payment API is down

    done = stepkit(*cancel, "--yes", "--json", "--url", url)
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["counts"] == {"cancelled": 1}  # the pro plan's run
    backend.run_until_idle()
    broken["api"] = False
    again = stepkit(*replay, "--yes", "--json", "--url", url)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["counts"] == {"replayed": 2}
    backend.run_until_idle()
    runs = backend.list_runs()
    by_plan = sorted((str(r.events[0]["data"].get("plan")), r.status.value) for r in runs)
    assert by_plan == [("None", "Completed"), ("None", "Completed"), ("None", "Failed"),
                       ("None", "Failed"), ("free", "Running"), ("pro", "Cancelled")]
