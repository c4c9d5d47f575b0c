"""The dashboard, rendered by headless Chromium against a live dev server.

Needs the Debian ``chromium`` package, installed by ``scripts/install-test-deps.sh``. The test
fails, rather than skips, when it is missing, so CI cannot pass without checking the page.
Set ``STEPKIT_SCREENSHOT=/path/shot.png`` to also save a screenshot of the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from runtime import App, Context, TriggerCron, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.devserver.background import serve_in_background as serve
from runtime.orchestration.clock import FakeClock
from runtime.records import Message, MessageKind

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
INSTALL_HINT = (
    "the dashboard browser test needs headless Chromium, which is not on PATH: run "
    "scripts/install-test-deps.sh (or `apt-get update && apt-get install -y chromium`)"
)

app = App("browsertest")


def _flaky() -> None:
    raise ConnectionError("payment gateway timed out")


@app.function(id="checkout", trigger=TriggerEvent("shop/checkout"), retries=3)
def checkout(ctx: Context) -> dict[str, int]:
    total = ctx.step.run("compute-total", lambda: sum(ctx.event.data["items"]))
    ctx.step.sleep("cool-off", "10m")
    ctx.step.run("send-receipt", lambda: {"sent": True})
    return {"total": total}


@app.function(id="charge", trigger=TriggerEvent("shop/charge"), retries=3)
def charge(ctx: Context) -> None:
    ctx.step.run("charge-card", _flaky)


@app.function(id="paced", trigger=TriggerEvent("shop/paced"),
              throttle={"limit": 1, "period": "1h"})
def paced(ctx: Context) -> str:
    return "ok"


@app.function(id="nightly", trigger=TriggerCron("0 2 * * *"))  # never due in these tests
def nightly(ctx: Context) -> str:
    return "done"


@app.function(id="receipts", trigger=TriggerEvent("shop/receipt"),
              batch_events={"max_size": 50, "timeout": "30s"})
def receipts(ctx: Context) -> int:
    return len(ctx.events)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT, pytrace=False)


def browse(browser: str, url: str, tmp_path: Path, *mode: str) -> str:
    """Load ``url`` in headless Chromium, let its scripts run, and return stdout."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
        *mode,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    clock = FakeClock(START)
    with LocalBackend(app, tmp_path / "dev.sqlite3", clock=clock) as b:
        b.send({"name": "shop/checkout", "data": {"items": [3, 4]}})
        b.run_until_idle()
        clock.advance("10m")
        b.run_until_idle()
        clock.advance("1m")
        b.send({"name": "shop/charge", "data": {"card": "4242"}})
        b.send({"name": "shop/checkout", "data": {"items": [1]}})
        b.run_until_idle()
        yield b


def test_dashboard_renders_runs_and_a_step_timeline(backend: LocalBackend, tmp_path: Path) -> None:
    browser = chromium()
    runs = {r.function_id + ("-done" if r.status.finished else ""): r for r in backend.list_runs()}
    done = runs["checkout-done"].run_id
    with serve(backend) as url:
        dom = browse(browser, f"{url}/#run={done}", tmp_path, "--dump-dom")
        shot = os.environ.get("STEPKIT_SCREENSHOT")
        if shot:
            browse(browser, f"{url}/#run={done}", tmp_path, f"--screenshot={shot}")

    # The functions list and the runs table, filled in by the page's script.
    assert 'class="fn-id"' in dom and ">checkout<" in dom and ">charge<" in dom
    # Functions with a cron trigger can be fired by hand; the others cannot.
    assert re.findall(r'data-fire="([^"]+)"', dom) == ["nightly"]
    for run in runs.values():
        assert f'data-run-id="{run.run_id}"' in dom, f"run {run.run_id} not in the runs table"
    assert 'class="pill s-Running"' in dom and 'class="pill s-Completed"' in dom
    # The selected run's step timeline, in order, with statuses, attempts and output.
    keys = [
        k for k in ("compute-total", "cool-off", "send-receipt") if f'data-step-key="{k}"' in dom
    ]
    assert keys == ["compute-total", "cool-off", "send-receipt"], "step timeline not rendered"
    order = [dom.index(f'data-step-key="{k}"') for k in keys]
    assert order == sorted(order)
    assert f'<code id="run-id">{done}</code>' in dom
    assert "1 / 4" in dom  # attempts of a run step out of retries + 1
    assert "&quot;total&quot;: 7" in dom or '"total": 7' in dom  # the run's output JSON


def test_dashboard_offers_to_skip_a_sleep(backend: LocalBackend, tmp_path: Path) -> None:
    browser = chromium()
    sleeping = next(r for r in backend.list_runs()
                    if r.function_id == "checkout" and not r.status.finished)
    with serve(backend) as url:
        dom = browse(browser, f"{url}/#run={sleeping.run_id}", tmp_path, "--dump-dom")
    assert dom.count('data-skip="') == 1 and 'data-skip="cool-off"' in dom
    assert ">Skip sleep</button>" in dom


def test_dashboard_shows_a_retrying_step_error(backend: LocalBackend, tmp_path: Path) -> None:
    browser = chromium()
    (failing,) = [r for r in backend.list_runs() if r.function_id == "charge"]
    with serve(backend) as url:
        dom = browse(browser, f"{url}/#run={failing.run_id}", tmp_path, "--dump-dom")
    assert 'data-step-key="charge-card"' in dom
    assert 'class="pill s-Retrying"' in dom
    assert "ConnectionError: payment gateway timed out" in dom
    assert "next attempt" in dom
    # Each failed attempt, with when and why (not only the last error).
    assert re.search(r'<li data-attempt="1">attempt 1 failed [^<]*\d (UTC|GMT): '
                     r"ConnectionError: payment gateway timed out</li>", dom)
    # What the run is doing, in its header: the step, the attempt, when, and the last error.
    assert "<dt>Doing</dt><dd>retrying step 'charge-card': attempt 2 of " in dom
    assert "(last error ConnectionError: payment gateway timed out)</dd>" in dom


def test_dashboard_shows_how_many_messages_are_dead_lettered(
    backend: LocalBackend, tmp_path: Path
) -> None:
    browser = chromium()
    with serve(backend) as url:
        before = browse(browser, url, tmp_path, "--dump-dom")
        backend.queue.max_receives = 1
        backend.queue.send([Message(MessageKind.CONTINUE, "charge", "r1", version=9),
                            Message(MessageKind.CONTINUE, "charge", "r2", version=9)])
        for delivery in backend.queue.receive(2):  # each fails its only delivery
            assert backend.queue.release(delivery, error="table unreachable")
        after = browse(browser, url, tmp_path, "--dump-dom")
    assert '<span id="dlq" class="dlq" role="status" hidden=""' in before
    assert "2 messages in dead-letter queues: stepkit dlq list</span>" in after
    assert '<span id="dlq" class="dlq" role="status" title=' in after  # shown: not hidden


def test_dashboard_says_why_a_run_is_held_back(backend: LocalBackend, tmp_path: Path) -> None:
    browser = chromium()
    backend.send([{"name": "shop/paced", "data": {}}, {"name": "shop/paced", "data": {}},
                  {"name": "shop/receipt", "data": {}}])
    backend.run_until_idle()
    (held,) = [r for r in backend.list_runs() if r.function_id == "paced" and r.held_by]
    with serve(backend) as url:
        dom = browse(browser, f"{url}/#run={held.run_id}", tmp_path, "--dump-dom")
    assert dom.count('class="why"') == 1  # in the runs table, under the held run's status
    assert "throttled until 2026-03-02T09:11:00Z" in dom
    # The batch has no run yet: its function says what it is gathering.
    assert '<div class="why window">batching 1/50 until 2026-03-02T08:11:30Z</div>' in dom
    assert '<span class="trigger flow" title=' in dom and ">batch events</span>" in dom
    assert "<dt>Waiting</dt><dd>throttled until 2026-03-02T09:11:00Z</dd>" in dom


def test_dashboard_events_tab_shows_payload_and_the_runs_an_event_started(
    backend: LocalBackend, tmp_path: Path
) -> None:
    browser = chromium()
    event = next(e for e in backend.list_events() if e["name"] == "shop/charge")
    (run,) = [r for r in backend.list_runs() if r.function_id == "charge"]
    with serve(backend) as url:
        dom = browse(browser, f"{url}/#event={event['id']}", tmp_path, "--dump-dom")
    assert f'data-event-id="{event["id"]}"' in dom  # listed in the events table
    assert f'<code id="event-id">{event["id"]}</code>' in dom
    assert '<span id="event-name-shown" class="muted">shop/charge</span>' in dom
    assert f'<li data-run-id="{run.run_id}"><a href="#run={run.run_id}">' in dom
    assert "&quot;card&quot;: &quot;4242&quot;" in dom or '"card": "4242"' in dom  # payload
    # Times say their zone.
    assert re.search(r">[A-Z][a-z]{2} \d+ \d\d:\d\d:\d\d\.\d{3} (UTC|GMT)<", dom)


def test_dashboard_opens_an_event_whose_id_holds_a_slash_and_a_percent(
    backend: LocalBackend, tmp_path: Path
) -> None:
    browser = chromium()
    odd = "order/42 50%#?"
    backend.send({"name": "shop/paced", "id": odd, "data": {"note": "odd id"}})
    backend.run_until_idle()
    (run,) = [r for r in backend.list_runs() if r.function_id == "paced"]
    with serve(backend) as url:
        dom = browse(browser, f"{url}/#event={quote(odd, safe='')}", tmp_path, "--dump-dom")
    assert f'<code id="event-id">{odd}</code>' in dom
    assert f'<li data-run-id="{run.run_id}"><a href="#run={run.run_id}">' in dom
    assert "&quot;note&quot;: &quot;odd id&quot;" in dom or '"note": "odd id"' in dom


def test_dashboard_search_finds_a_run_or_an_event_by_id(
    backend: LocalBackend, tmp_path: Path
) -> None:
    browser = chromium()
    (run,) = [r for r in backend.list_runs() if r.function_id == "charge"]
    event = next(e for e in backend.list_events() if e["name"] == "shop/charge")
    with serve(backend) as url:
        by_run = browse(browser, f"{url}/#q={run.run_id}", tmp_path, "--dump-dom")
        by_event = browse(browser, f"{url}/#q={event['id']}", tmp_path, "--dump-dom")
        missing = browse(browser, f"{url}/#q=nope", tmp_path, "--dump-dom")
    assert f'<code id="run-id">{run.run_id}</code>' in by_run
    assert f'<code id="event-id">{event["id"]}</code>' in by_event
    assert "no run or recent event with id nope" in missing


def test_dashboard_pages_past_100_runs(backend: LocalBackend, tmp_path: Path) -> None:
    browser = chromium()
    with serve(backend) as url:
        few = browse(browser, url, tmp_path, "--dump-dom")
        backend.send([{"name": "shop/paced", "data": {}} for _ in range(101)])
        backend.run_until_idle()
        many = browse(browser, url, tmp_path, "--dump-dom")
    assert '<button id="more-runs" type="button" hidden="">' in few  # all shown: no more
    assert '<button id="more-runs" type="button">Show 100 more</button>' in many
    assert many.count("data-run-id=") >= 100
