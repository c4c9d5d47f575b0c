"""The `stepkit` CLI against a live dev server on a loopback port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.cli import cli
from runtime.cli.output import fmt_duration
from runtime.devserver.background import serve_in_background as serve
from runtime.orchestration.clock import FakeClock

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

app = App("clitest")


@app.function(id="greet", trigger=TriggerEvent("user/signup"), retries=2)
def greet(ctx: Context) -> str:
    name = ctx.step.run("fetch-name", lambda: ctx.event.data["name"])
    ctx.step.sleep("nap", "1h")
    return ctx.step.run("say-hello", lambda: f"hello {name}")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    with LocalBackend(app, tmp_path / "dev.sqlite3", clock=FakeClock(START)) as b:
        yield b


@pytest.fixture
def url(backend: LocalBackend) -> Iterator[str]:
    with serve(backend) as u:
        yield u


def stepkit(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="stepkit", input=input)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- send, runs, run ---------------------------------------------------------------------------


def test_send_then_runs_then_run(backend: LocalBackend, url: str) -> None:
    sent = stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    assert sent.exit_code == 0, sent.output
    (event_id,) = sent.output.split()
    backend.run_until_idle()
    assert [e["id"] for e in backend.list_events()] == [event_id]

    listed = stepkit("runs", "--url", url)
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == ["RUN", "ID", "FUNCTION", "STATUS", "EVENT", "CREATED", "DURATION"]
    run_id, fn, status, event, day, clock, duration = row.split()
    assert (fn, status, event, duration) == ("greet", "Running", "user/signup", "-")
    assert f"{day} {clock}" == "2026-03-02 08:00:00Z"

    shown = stepkit("run", run_id, "--url", url)
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert f"Run       {run_id}" in out
    assert "Status    Running" in out
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("STEP"))
    assert lines[head].split() == [
        "STEP",
        "KIND",
        "STATUS",
        "ATTEMPTS",
        "STARTED",
        "DURATION",
        "NOTE",
    ]
    assert lines[head + 1].split() == ["fetch-name", "run", "Completed", "1/3", "+0ms", "0ms"]
    assert lines[head + 2].split() == [
        "nap",
        "sleep",
        "Sleeping",
        "1",
        "+0ms",
        "-",
        "until",
        "2026-03-02",
        "09:00:00Z",
    ]

    backend.clock.advance("1h")  # type: ignore[attr-defined]
    backend.run_until_idle()
    done = stepkit("run", run_id, "--url", url)
    assert "Status    Completed" in done.output
    assert 'Output    "hello ada"' in done.output
    assert "Duration  1h" in done.output
    assert re.search(r"^say-hello\s+run\s+Completed\s+1/3\s+\+1h\s+0ms\s*$", done.output, re.M)

    raw = stepkit("run", run_id, "--json", "--url", url)
    body = json.loads(raw.output)
    assert [s["id"] for s in body["steps"]] == ["fetch-name", "nap", "say-hello"]
    listed = stepkit("runs", "--status", "completed", "--function", "greet", "--url", url)
    assert run_id in listed.output
    assert stepkit("runs", "--status", "Failed", "--url", url).output.strip() == "no runs"


def test_send_with_user_and_id(backend: LocalBackend, url: str) -> None:
    sent = stepkit(
        "send",
        "user/signup",
        "--data",
        '{"name": "bo"}',
        "--user",
        '{"id": "u1"}',
        "--id",
        "evt-42",
        "--url",
        url,
    )
    assert sent.exit_code == 0, sent.output
    assert sent.output.strip() == "evt-42"
    backend.run_until_idle()
    (event,) = backend.list_events()
    assert event["user"] == {"id": "u1"}


def test_runs_limit(backend: LocalBackend, url: str) -> None:
    for name in ("a", "b", "c"):
        assert stepkit("send", "user/signup", "--data", json.dumps({"name": name}), "--url", url)
    backend.run_until_idle()
    out = stepkit("runs", "--limit", "2", "--json", "--url", url).output
    assert len(json.loads(out)) == 2


# -- dead letters ------------------------------------------------------------------------------


def test_a_dead_lettered_message_is_listed_redriven_and_its_run_completes(
    backend: LocalBackend, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store failing on every delivery is what leaves a message in the dead letters (a
    # failing step fails its run instead): here, a start whose run cannot be created.
    def unavailable(*args: object, **kwargs: object) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(backend.store, "create_run", unavailable)
    stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    for _ in range(12):  # each failure comes again after its backoff (a minute, doubling)
        backend.run_until_idle()
        backend.clock.advance("15m")  # type: ignore[attr-defined]
    assert stepkit("runs", "--url", url).output.splitlines() == [
        "no runs",
        "1 message in dead-letter queues: stepkit dlq list",
    ]
    listed = stepkit("dlq", "list", "--url", url)
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == [
        "QUEUE", "ID", "KIND", "FUNCTION", "RUN", "STEP", "RECEIVES", "SENT", "ERROR"
    ]
    (dead,) = json.loads(stepkit("dlq", "list", "--json", "--url", url).output)
    assert dead["queue"] == dead["function_id"] == "greet"
    assert (dead["kind"], dead["step"], dead["receive_count"]) == ("start", None, 10)
    assert dead["error"] == "OperationalError: disk I/O error"
    assert dead["sent_at"].startswith("2026-03-02T")  # the copy its last failure sent again
    assert row.split()[:5] == ["greet", dead["message_id"], "start", "greet", dead["run_id"]]

    monkeypatch.undo()  # the store is back
    missing = stepkit("dlq", "redrive", "--id", "999", "--url", url)
    assert missing.exit_code == 1 and "no dead-lettered message '999'" in missing.output
    redriven = stepkit("dlq", "redrive", "--id", dead["message_id"], "--url", url)
    assert redriven.exit_code == 0, redriven.output
    assert redriven.output.strip() == "redrove 1 message"
    assert stepkit("dlq", "redrive", "--url", url).output.strip() == "redrove 0 messages"
    assert stepkit("dlq", "list", "--url", url).output.strip() == "no dead-lettered messages"
    backend.run_until_idle()
    backend.clock.advance("1h")  # type: ignore[attr-defined]
    backend.run_until_idle()
    run = backend.get_run(dead["run_id"])
    assert run is not None and run.run.status.value == "Completed"
    assert run.run.output == "hello ada"
    (line,) = stepkit("runs", "--url", url).output.splitlines()[1:]
    assert "Completed" in line


def test_redrive_is_idempotent_and_takes_a_queue(backend: LocalBackend) -> None:
    from runtime.records import Message, MessageKind

    queue = backend.queue
    queue.max_receives = 1
    queue.send([Message(MessageKind.CONTINUE, "greet", "r1", id="m1", version=3)])
    queue.send([Message(MessageKind.CONTINUE, "other", "r2", id="m2", version=1)])
    for delivery in queue.receive(2):
        assert queue.release(delivery, error="boom")
    assert queue.dead_count() == 2
    assert queue.redrive(queue="nope") == []
    (first,) = queue.redrive(queue="greet")
    assert queue.redrive(queue="greet") == [] and queue.dead_count() == 1
    (back,) = queue.receive(2)
    assert str(back.seq) == first and back.receive_count == 1
    # marked re-sent: the worker handles it as a redelivery (re-sends a landed commit's outbox)
    assert back.message.payload == {"resend": True}
    assert (back.message.id, back.message.version) == ("m1", 3)


# -- errors ------------------------------------------------------------------------------------


def test_no_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["send", "x/y"], ["runs"], ["run", "r1"]):
        result = stepkit(*args, "--url", url)
        assert result.exit_code == 1
        assert f"no stepkit dev server at {url}; start one with `stepkit dev`" in result.output


def test_invalid_data_json_is_a_usage_error(url: str) -> None:
    result = stepkit("send", "user/signup", "--data", "{name: ada}", "--url", url)
    assert result.exit_code == 2
    assert "Invalid value for '--data': not valid JSON" in result.output
    result = stepkit("send", "user/signup", "--user", "[1]", "--url", url)
    assert result.exit_code == 2
    assert "Invalid value for '--user': expected a JSON object" in result.output


def test_server_errors_are_reported(url: str) -> None:
    result = stepkit("send", "bad name!", "--url", url)
    assert result.exit_code == 1
    assert "Error: event.name:" in result.output
    result = stepkit("run", "nope", "--url", url)
    assert result.exit_code == 1
    assert "Error: no run 'nope'" in result.output


def test_usage_errors_exit_2() -> None:
    assert stepkit("runs", "--status", "Done").exit_code == 2
    assert stepkit("runs", "--limit", "0").exit_code == 2
    assert stepkit("bogus").exit_code == 2
    assert stepkit("--help").exit_code == 0


def test_fmt_duration() -> None:
    assert fmt_duration(None) == "-"
    assert fmt_duration(350) == "350ms"
    assert fmt_duration(1250) == "1.25s"
    assert fmt_duration(42_000) == "42.0s"
    assert fmt_duration(182_000) == "3m 2s"
    assert fmt_duration(3_600_000) == "1h"
    assert fmt_duration(2 * 86_400_000 + 4 * 3_600_000 + 60_000) == "2d 4h"


# -- stepkit dev -------------------------------------------------------------------------------

PROJECT = """
from runtime import App, TriggerEvent

app = App("devproj")


@app.function(id="hello", trigger=TriggerEvent("demo/hello"))
def hello(ctx):
    return ctx.step.run("greet", lambda: "hi " + ctx.event.data.get("who", "there"))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    pkg = tmp_path / "devproj_functions"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(PROJECT))
    return tmp_path


@contextmanager
def dev_process(project: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `stepkit dev` on a free port in ``project``; yield the process and its URL."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "dev",
            "--port",
            "0",
            "--functions",
            "devproj_functions",
            "--db",
            ".stepkit/dev.sqlite3",
            "--workers",
            "2",
        ],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", first)
        assert match, f"unexpected first line {first!r}; rest: {proc.stdout.read()}"
        url = match.group(1)
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1, trust_env=False)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "stepkit dev never answered /healthz"
                time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> str:
    """Signal ``proc``, wait for it and return the rest of its output."""
    proc.send_signal(sig)
    proc.wait(timeout=20)
    assert proc.stdout is not None
    return proc.stdout.read()


def _wait_completed(url: str) -> str:
    deadline = time.monotonic() + 15
    while True:
        runs = json.loads(stepkit("runs", "--json", "--url", url).output)
        if runs and runs[0]["status"] == "Completed":
            return str(runs[0]["run_id"])
        assert time.monotonic() < deadline, f"run did not complete: {runs}"
        time.sleep(0.05)


def test_dev_serves_runs_and_keeps_them_across_restarts(project: Path) -> None:
    with dev_process(project) as (proc, url):
        assert (
            stepkit("send", "demo/hello", "--data", '{"who": "ada"}', "--url", url).exit_code == 0
        )
        run_id = _wait_completed(url)
        assert httpx.get(f"{url}/api/runs/{run_id}", trust_env=False).json()["output"] == "hi ada"
        assert "stepkit dev" in httpx.get(url + "/", trust_env=False).text
        out = stop(proc, signal.SIGINT)
        assert proc.returncode == 0, out
        assert "functions: hello" in out
        assert "stopping" in out
    assert (project / ".stepkit" / "dev.sqlite3").exists()

    with dev_process(project) as (proc, url):
        assert run_id in stepkit("runs", "--url", url).output
        out = stop(proc, signal.SIGTERM)
        assert proc.returncode == 0, out


def test_dev_reports_a_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = stepkit("dev", "--functions", "no_such_pkg_here", "--port", "0")
    assert result.exit_code == 1
    assert "cannot import functions package 'no_such_pkg_here'" in result.output


def test_dev_reports_a_busy_port(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = stepkit("dev", "--functions", "devproj_functions", "--port", str(port))
    sys.modules.pop("devproj_functions", None)
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output
    assert not (project / ".stepkit").exists()


def test_the_printed_address_takes_connections_before_the_server_runs() -> None:
    """The URL is printed between `listen` and `serve`: a client that follows it at once waits.

    A socket that was only bound refused it (the dashboard test's CI failure).
    """
    from runtime.cli.dev import listen

    with listen("127.0.0.1", 0) as sock, socket.create_connection(
            ("127.0.0.1", sock.getsockname()[1]), timeout=5):
        pass


def _project(tmp_path: Path, source: str) -> Path:
    pkg = tmp_path / "functions"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(source))
    return tmp_path


def test_dev_names_the_file_and_line_of_a_functions_package_that_fails_to_import(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path, """
        from runtime import App
        app = App("broken")
        raise RuntimeError("missing setting")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "dev", "--port", "0"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "RuntimeError: missing setting" in done.stderr
    assert "functions/__init__.py, line 4" in done.stderr


def test_dev_refuses_a_db_that_is_not_sqlite_without_a_traceback(tmp_path: Path) -> None:
    root = _project(tmp_path, """
        from runtime import App
        app = App("fine")
    """)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for db in (str(junk), str(junk / "below-a-file.sqlite3")):
        done = subprocess.run(
            [sys.executable, "-m", "runtime.cli", "dev", "--port", "0", "--db", db],
            cwd=root, env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert f"cannot use --db {db}" in done.stderr


def test_dev_outside_a_project_says_there_is_no_functions_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The editable install puts this checkout (and its example functions/) on the import
    # path: run elsewhere, stepkit dev must not serve that app as if it were the user's.
    import functions  # noqa: F401 - importable from here, as from anywhere

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = stepkit("dev", "--port", "0")
    assert result.exit_code == 1
    assert f"no 'functions/' package in {tmp_path.resolve()}" in result.output
    assert "another project's" in result.output and "--functions" in result.output


# -- functions, events, cancel, rerun, --version, send's notes ---------------------------------


def test_send_says_what_it_sends_without_data_and_reports_a_reused_id(
    backend: LocalBackend, url: str
) -> None:
    first = stepkit("send", "user/signup", "--id", "e-1", "--url", url)
    assert first.exit_code == 0, first.output
    assert first.stdout.split() == ["e-1"]
    assert "no --data given: sent {} as the event's data" in first.stderr
    backend.run_until_idle()
    again = stepkit("send", "user/signup", "--id", "e-1", "--data", "{}", "--url", url)
    assert again.exit_code == 0, again.output
    assert again.stdout.split() == ["e-1"]
    assert "event id e-1 was received before: it starts no new run" in again.stderr
    backend.run_until_idle()
    assert len(backend.list_runs()) == 1


def test_functions_events_cancel_and_rerun(backend: LocalBackend, url: str) -> None:
    listed = stepkit("functions", "--url", url)
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0] == "app clitest"
    assert listed.output.splitlines()[1].split() == ["FUNCTION", "TRIGGERS", "RETRIES",
                                                     "FLOW", "CONTROL"]
    assert listed.output.splitlines()[2].split() == ["greet", "user/signup", "2", "-"]
    assert json.loads(stepkit("functions", "--json", "--url", url).output)["functions"][0][
        "id"] == "greet"

    sent = stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    (event_id,) = sent.stdout.split()
    backend.run_until_idle()
    shown = stepkit("events", "--url", url)
    assert shown.exit_code == 0, shown.output
    header, row = shown.output.splitlines()
    assert header.split() == ["EVENT", "ID", "NAME", "TIME", "DATA"]
    assert row.split()[:2] == [event_id, "user/signup"] and '{"name":"ada"}' in row
    assert json.loads(stepkit("events", "--json", "--url", url).output)[0]["id"] == event_id

    (run,) = backend.list_runs()
    again = stepkit("rerun", run.run_id, "--url", url)
    assert again.exit_code == 0, again.output
    new_id = again.output.strip()
    backend.run_until_idle()
    assert {r.run_id for r in backend.list_runs()} == {run.run_id, new_id}

    stopped = stepkit("cancel", run.run_id, "--url", url)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.output.strip() == f"run {run.run_id} cancelled"
    assert stepkit("cancel", run.run_id, "--url", url).output.strip() == (
        f"run {run.run_id} was not running (status Cancelled)")
    assert stepkit("cancel", "nope", "--url", url).exit_code == 1


def test_version() -> None:
    result = stepkit("--version")
    assert result.exit_code == 0
    assert re.fullmatch(r"stepkit \d+\.\d+\.\d+\S*\n", result.output)


def test_run_says_what_the_run_is_doing(backend: LocalBackend, url: str) -> None:
    stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    backend.run_until_idle()
    (run,) = backend.list_runs()
    shown = stepkit("run", run.run_id, "--url", url)
    assert "Doing     sleeping in step 'nap' until 2026-03-02T09:00:00Z" in shown.output
    stepkit("cancel", run.run_id, "--url", url)
    shown = stepkit("run", run.run_id, "--url", url)
    assert "Doing" not in shown.output
    assert re.search(r"^nap\s+sleep\s+Abandoned\s", shown.output, re.M)


def test_invoke_starts_a_run_by_hand(backend: LocalBackend, url: str) -> None:
    result = stepkit("invoke", "greet", "--data", '{"name": "grace"}', "--url", url)
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    backend.run_until_idle()
    state = backend.get_run(run_id)
    assert state is not None and state.run.function_id == "greet"
    assert state.run.events[0]["name"] == "stepkit/function.invoked"
    assert state.steps["fetch-name"].output == "grace"  # the data is the run's event data
    missing = stepkit("invoke", "nope", "--url", url)
    assert missing.exit_code == 1 and "no function 'nope'" in missing.output
    assert "no --data given" not in missing.output  # a failure says only what failed


def test_dev_reload_restarts_on_a_change_to_the_functions_and_keeps_the_runs(
    project: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "dev", "--reload", "--port", str(port),
         "--functions", "devproj_functions", "--workers", "1"],
        cwd=project, env={**os.environ, "PYTHONPATH": path, "NO_COLOR": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    def functions() -> list[str] | None:
        try:
            got = httpx.get(url + "/api/functions", timeout=1, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return None
        return sorted(f["id"] for f in got["functions"])

    def wait_for(expected: list[str]) -> None:
        deadline = time.monotonic() + 30
        while functions() != expected:
            assert time.monotonic() < deadline, f"functions never became {expected}"
            time.sleep(0.1)

    try:
        wait_for(["hello"])
        stepkit("send", "demo/hello", "--data", "{}", "--url", url)
        run_id = _wait_completed(url)
        (project / "devproj_functions" / "more.py").write_text(textwrap.dedent("""
            from devproj_functions import app
            from runtime import TriggerEvent

            @app.function(id="goodbye", trigger=TriggerEvent("demo/bye"))
            def goodbye(ctx):
                return "bye"
        """))
        wait_for(["goodbye", "hello"])  # the restarted server loaded the new module
        assert run_id in stepkit("runs", "--url", url).output  # and kept the runs
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert "reloading: more.py changed" in out


def test_dev_reload_needs_a_fixed_port(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    result = stepkit("dev", "--reload", "--port", "0", "--functions", "devproj_functions")
    assert result.exit_code == 1 and "--reload needs a fixed --port" in result.output


def test_fire_starts_a_cron_run_by_hand(tmp_path: Path) -> None:
    crons = App("crons")

    @crons.function(id="nightly", trigger=TriggerCron("0 2 * * *"))
    def nightly(ctx: Context) -> str:
        return "done"

    with LocalBackend(crons, tmp_path / "c.sqlite3", clock=FakeClock(START)) as b, \
            serve(b) as u:
        result = stepkit("fire", "nightly", "--url", u)
        assert result.exit_code == 0, result.output
        b.run_until_idle()
        state = b.get_run(result.output.strip())
        assert state is not None and state.run.output == "done"


def test_every_command_that_answers_has_json(backend: LocalBackend, url: str) -> None:
    sent = stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--id", "j-1",
                   "--json", "--url", url)
    assert json.loads(sent.stdout) == {"ids": ["j-1"], "duplicates": []}
    backend.run_until_idle()
    (run,) = backend.list_runs()
    again = json.loads(stepkit("rerun", run.run_id, "--json", "--url", url).stdout)
    invoked = json.loads(stepkit("invoke", "greet", "--data", '{"name": "x"}', "--json",
                                 "--url", url).stdout)
    assert set(again) == set(invoked) == {"run_id"}
    cancelled = json.loads(stepkit("cancel", run.run_id, "--json", "--url", url).stdout)
    assert cancelled == {"run_id": run.run_id, "cancelled": True, "status": "Cancelled"}


def test_rerun_from_a_step_forks_the_run(backend: LocalBackend, url: str) -> None:
    stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    backend.run_until_idle()
    (run,) = backend.list_runs()
    fork = stepkit("rerun", run.run_id, "--from", "nap", "--url", url)
    assert fork.exit_code == 0, fork.output
    backend.run_until_idle()
    state = backend.get_run(fork.stdout.strip())
    assert state is not None and set(state.steps) == {"fetch-name", "nap"}
    assert state.steps["fetch-name"] == backend.get_run(run.run_id).steps["fetch-name"]  # reused
    missing = stepkit("rerun", run.run_id, "--from", "nope", "--url", url)
    assert missing.exit_code == 1 and "has no step 'nope'" in missing.output
    # Each side names the other.
    shown = stepkit("run", fork.stdout.strip(), "--url", url).output
    assert f"Rerun of  {run.run_id} from step 'nap'" in shown
    assert f"Reruns    {fork.stdout.strip()}" in stepkit("run", run.run_id, "--url", url).output


# -- rich on a terminal, --since, help ---------------------------------------------------------

BLUE, GREEN = "\x1b[34m", "\x1b[32m"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """stdout and stderr count as a terminal (80 columns would wrap the tables)."""
    monkeypatch.setattr("runtime.cli.output.is_terminal", lambda stream: True)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "COLORTERM"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_terminal_gets_rich_tables_with_coloured_statuses(
    backend: LocalBackend, url: str, terminal: pytest.MonkeyPatch
) -> None:
    stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--id", "e-rich", "--url", url)
    backend.run_until_idle()
    (run,) = backend.list_runs()

    listed = stepkit("runs", "--url", url)
    assert listed.exit_code == 0, listed.output
    out = listed.output
    assert "─" in out  # rich's rule under the header: not the plain table
    for cell in ("RUN ID", "FUNCTION", "STATUS", run.run_id, "greet", "user/signup",
                 "2026-03-02 08:00:00Z"):
        assert cell in out
    assert f"{BLUE}Running" in out  # the status in its colour

    shown = stepkit("run", run.run_id, "--url", url).output
    assert "Status    \x1b[1;34mRunning" in shown  # bold and blue
    assert f"{GREEN}Completed" in shown and f"{BLUE}Sleeping" in shown
    for cell in ("ATTEMPTS", "fetch-name", "1/3", "nap", "until 2026-03-02 09:00:00Z"):
        assert cell in shown

    functions = stepkit("functions", "--url", url).output
    assert "app clitest" in functions and "FLOW CONTROL" in functions and "─" in functions
    events = stepkit("events", "--url", url).output
    assert "e-rich" in events and '{"name":"ada"}' in events and "─" in events

    # --json is the same, terminal or not
    terminal.undo()
    piped = stepkit("runs", "--json", "--url", url).output
    terminal.setattr("runtime.cli.output.is_terminal", lambda stream: True)
    assert stepkit("runs", "--json", "--url", url).output == piped


def test_no_color_keeps_the_rich_table_without_colour(
    backend: LocalBackend, url: str, terminal: pytest.MonkeyPatch
) -> None:
    stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    backend.run_until_idle()
    terminal.setenv("NO_COLOR", "1")
    out = stepkit("runs", "--url", url).output
    assert "─" in out and "Running" in out
    assert BLUE not in out and GREEN not in out


def test_piped_output_is_plain_text(backend: LocalBackend, url: str) -> None:
    stepkit("send", "user/signup", "--data", '{"name": "ada"}', "--url", url)
    backend.run_until_idle()
    (run,) = backend.list_runs()
    for args in (["runs"], ["run", run.run_id], ["functions"], ["events"], ["dlq", "list"]):
        out = stepkit(*args, "--url", url).output
        assert "\x1b" not in out and "─" not in out, (args, out)


def test_the_dead_letter_notice_is_red_on_a_terminal(
    backend: LocalBackend, url: str, terminal: pytest.MonkeyPatch
) -> None:
    from runtime.records import Message, MessageKind

    backend.queue.max_receives = 1
    backend.queue.send([Message(MessageKind.CONTINUE, "greet", "r1", id="m1", version=3)])
    for delivery in backend.queue.receive(1):
        backend.queue.release(delivery, error="boom")
    out = stepkit("runs", "--url", url).output
    assert "\x1b[31m1 message in dead-letter queues: stepkit dlq list" in out
    listed = stepkit("dlq", "list", "--url", url).output
    assert "─" in listed and "RECEIVES" in listed and "continue" in listed and "boom" in listed


def test_runs_since_a_duration_or_a_time(
    backend: LocalBackend, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stepkit("send", "user/signup", "--data", '{"name": "early"}', "--url", url)
    backend.run_until_idle()
    backend.clock.advance("2h")  # type: ignore[attr-defined]
    stepkit("send", "user/signup", "--data", '{"name": "late"}', "--url", url)
    backend.run_until_idle()
    early, late = sorted(backend.list_runs(), key=lambda r: r.created_at)
    # The CLI counts a duration back from its own clock: 3 h after the first run.
    monkeypatch.setattr("runtime.cli.runs.now", lambda: START.timestamp() + 3 * 3600)

    def since(value: str) -> list[str]:
        result = stepkit("runs", "--since", value, "--json", "--url", url)
        assert result.exit_code == 0, result.output
        return [r["run_id"] for r in json.loads(result.output)]

    assert since("2h") == [late.run_id]
    assert since("1h30m") == [late.run_id]
    assert since("4h") == [late.run_id, early.run_id]
    assert since("2026-03-02T09:00:00Z") == [late.run_id]
    assert since("2026-03-02T09:00:00") == [late.run_id]  # naive: UTC
    assert since("2026-03-02T10:00:00+02:00") == [late.run_id, early.run_id]
    assert since("2026-03-02") == [late.run_id, early.run_id]
    assert since("2026-03-03T00:00:00Z") == []
    assert since("100000w") == [late.run_id, early.run_id]  # before 1970: every run
    table = stepkit("runs", "--since", "2h", "--url", url).output
    assert late.run_id in table and early.run_id not in table
    for bad in ("yesterday", "5000", "-2h", ""):
        result = stepkit("runs", "--since", bad, "--url", url)
        assert result.exit_code == 2, (bad, result.output)
        assert "Invalid value for '--since'" in result.output
        assert "duration back from now" in result.output and "ISO 8601" in result.output


def test_fire_refuses_a_function_without_a_cron(url: str) -> None:
    result = stepkit("fire", "greet", "--url", url)
    assert result.exit_code == 1
    assert "function 'greet' has no cron trigger to fire" in result.output


def test_every_option_says_what_it_does() -> None:
    import click

    def commands(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from commands(sub, f"{path} {name}")

    for path, cmd in commands(cli, "stepkit"):
        assert cmd.help, f"{path} has no help"
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help and len(param.help) > 10, f"{path} {param.opts}: no help"
        shown = stepkit(*path.split()[1:], "--help")
        assert shown.exit_code == 0, shown.output


# -- stepkit event ------------------------------------------------------------------------------

waits_app = App("waits")


@waits_app.function(id="order", trigger=TriggerEvent("shop/order"))
def order(ctx: Context) -> bool:
    paid = ctx.step.wait_for_event("wait-payment", event="shop/paid", timeout="1h",
                                   if_="async.data.order == event.data.order")
    return paid is not None


def test_event_shows_its_payload_the_runs_it_started_and_the_waits_it_resolved(
    tmp_path: Path,
) -> None:
    with LocalBackend(waits_app, tmp_path / "dev.sqlite3", clock=FakeClock(START)) as b, \
            serve(b) as url:
        (ordered,) = stepkit("send", "shop/order", "--data", '{"order": "o1"}',
                             "--url", url).stdout.split()
        b.run_until_idle()
        (paid,) = stepkit("send", "shop/paid", "--data", '{"order": "o1"}',
                          "--url", url).stdout.split()
        b.run_until_idle()
        (run,) = b.list_runs()
        assert run.status == "Completed"

        shown = stepkit("event", ordered, "--url", url)
        assert shown.exit_code == 0, shown.output
        out = shown.output
        assert f"Event     {ordered}" in out and "Name      shop/order" in out
        assert 'Payload   {"order":"o1"}' in out
        assert re.search(rf"^{run.run_id}\s+order\s+Completed\s*$", out, re.M)
        assert "resolved no wait" in out

        payment = stepkit("event", paid, "--url", url).output
        assert "started no run" in payment
        assert re.search(rf"^{run.run_id}\s+order\s+wait-payment\s*$", payment, re.M)
        as_json = json.loads(stepkit("event", paid, "--json", "--url", url).output)
        assert as_json["waits"] == [{"run_id": run.run_id, "function_id": "order",
                                     "status": "Completed", "step": "wait-payment"}]

        missing = stepkit("event", "nope", "--url", url)
        assert missing.exit_code == 1 and "no recent event 'nope'" in missing.output
