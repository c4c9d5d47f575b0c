"""The dashboard's actions, clicked through in headless Chromium driven by chromedriver.

Invoking a function by hand, rerunning a run (whole or from a step) and an event's resolved
waits. The browser is driven over the W3C WebDriver protocol (plain HTTP to ``chromedriver``,
from Debian's ``chromium-driver``, installed by ``scripts/install-test-deps.sh``), so no
WebDriver library is needed. Like the other browser tests these fail, rather than skip, when
Chromium or chromedriver is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.devserver.background import serve_in_background as serve
from runtime.orchestration.clock import FakeClock
from runtime.records import RunStatus

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
INSTALL_HINT = (
    "the dashboard browser tests need headless Chromium and chromedriver: run "
    "scripts/install-test-deps.sh (or `apt-get install -y chromium chromium-driver`)"
)
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
T = TypeVar("T")

app = App("browseractions")


@app.function(id="checkout", trigger=TriggerEvent("shop/checkout"))
def checkout(ctx: Context) -> dict[str, int]:
    total = ctx.step.run("compute-total", lambda: sum(ctx.event.data["items"]))
    ctx.step.sleep("cool-off", "10m")
    ctx.step.run("send-receipt", lambda: {"sent": True})
    return {"total": total}


@app.function(id="order", trigger=TriggerEvent("shop/order"))
def order(ctx: Context) -> bool:
    paid = ctx.step.wait_for_event("wait-payment", event="shop/paid", match="data.order_id",
                                   timeout="1h")
    return paid is not None


# -- a small WebDriver client --------------------------------------------------------------------


class WebDriverError(Exception):
    """An error answer from chromedriver."""


class Browser:
    """One chromedriver session: load pages, find, click and type, wait for the page."""

    def __init__(self, base: str, session: str, http: httpx.Client) -> None:
        self.base, self.session, self.http = base, session, http

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base}/session/{self.session}{path}"
        resp = self.http.request(method, url, json=body if method == "POST" else None)
        value = resp.json().get("value")
        if resp.status_code != 200:
            raise WebDriverError(f"{method} {path}: {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = 15) -> T:
        """Poll ``check`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = check()
            except WebDriverError:
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                page = self.js("return document.body.innerText")
                pytest.fail(f"timed out waiting for {what}; the page shows:\n{page}")
            time.sleep(0.1)

    def find(self, css: str) -> str:
        """The element ``css`` selects, once it is on the page and shown."""
        def shown() -> str | None:
            ref = self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]
            return str(ref) if self._call("GET", f"/element/{ref}/displayed") else None

        return self.wait(f"element {css!r}", shown)

    def click(self, css: str) -> None:
        """Click ``css``; found again if the page re-rendered it in between (its 2 s refresh
        replaces the run's header and rows: a stale reference is retried, not failed)."""
        def clicked() -> bool:
            self._call("POST", f"/element/{self.find(css)}/click", {})
            return True

        self.wait(f"a click on {css!r}", clicked)

    def type(self, css: str, text: str) -> None:
        ref = self.find(css)
        self._call("POST", f"/element/{ref}/clear", {})
        self._call("POST", f"/element/{ref}/value", {"text": text})

    def text(self, css: str) -> str:
        return str(self._call("GET", f"/element/{self.find(css)}/text"))

    def value(self, css: str) -> str:
        return str(self._call("GET", f"/element/{self.find(css)}/property/value"))

    def hash(self) -> str:
        return str(self.js("return location.hash"))

    def wait_text(self, css: str, part: str) -> str:
        """Wait until the element ``css`` shows ``part``; its text."""
        def showing() -> str | None:
            text = self.text(css)
            return text if part in text else None

        return self.wait(f"{part!r} in {css!r}", showing)

    def wait_run(self, old_hash: str) -> str:
        """Wait until the page moves to another run; that run's id."""
        def moved() -> str | None:
            now = self.hash()
            return now if now != old_hash and now.startswith("#run=") else None

        return self.wait("the page to show another run", moved).removeprefix("#run=")


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL_HINT, pytrace=False)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = _binary("chromium", "chromium-browser", "google-chrome")
    driver = _binary("chromedriver")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    profile = tmp_path_factory.mktemp("chromium-profile")
    try:
        with httpx.Client(timeout=60) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if http.get(f"{base}/status").json()["value"]["ready"]:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("chromedriver did not start", pytrace=False)
                time.sleep(0.05)
            options = {"binary": chromium, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--window-size=1280,900",
                f"--user-data-dir={profile}"]}
            resp = http.post(f"{base}/session", json={"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": options}}})
            assert resp.status_code == 200, resp.text
            session = resp.json()["value"]["sessionId"]
            try:
                yield Browser(base, session, http)
            finally:
                http.delete(f"{base}/session/{session}")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    clock = FakeClock(START)
    with LocalBackend(app, tmp_path / "dev.sqlite3", clock=clock) as b:
        b.send({"name": "shop/checkout", "data": {"items": [3, 4]}})
        b.run_until_idle()
        clock.advance("10m")
        b.run_until_idle()
        clock.advance("1m")
        yield b


def _done(backend: LocalBackend) -> str:
    (run,) = [r for r in backend.list_runs() if r.function_id == "checkout"]
    assert run.status is RunStatus.COMPLETED
    return run.run_id


# -- invoke a function now -----------------------------------------------------------------------


def test_invoke_a_function_from_the_functions_list(
    backend: LocalBackend, browser: Browser
) -> None:
    with serve(backend) as url:
        browser.get(url)
        browser.click('button[data-invoke="checkout"]')
        assert browser.text("#invoke-fn") == "checkout"
        assert "invoking" in str(browser.js(
            "return document.querySelector('li[data-function=\"checkout\"]').className"))

        # Not JSON, then not an object: said in the page, and nothing is sent.
        before = len(backend.list_runs())
        browser.type("#invoke-data", '{"items": [2,')
        browser.click("#invoke-submit")
        shown = browser.wait_text("#invoke-result", "data is not valid JSON")
        assert "nothing was sent" in shown
        assert "error" in str(browser.js("return document.getElementById('invoke-result')"
                                         ".className"))
        browser.type("#invoke-data", "[2, 5]")
        browser.click("#invoke-submit")
        browser.wait_text("#invoke-result", "data must be a JSON object")
        assert len(backend.list_runs()) == before
        assert browser.hash() == ""

        browser.type("#invoke-data", '{"items": [2, 5]}')
        browser.click("#invoke-submit")
        shown = browser.wait_text("#invoke-result", "started run ")
        run_id = shown.removeprefix("started run ").strip()
        assert browser.wait_run("") == run_id  # the page moved to the run it started
        assert browser.text(f'#invoke-result a[data-run-link="{run_id}"]') == run_id
        browser.wait_text("#run-message", "invoked checkout by hand")
        assert browser.text("#run-id") == run_id
        # No worker has taken its START yet (this backend works only when told to).
        assert browser.text("#run-status") == "Queued"
        assert "queued: it starts when a worker picks it up" in browser.text("#run-meta")

        backend.run_until_idle()  # the run does its work; the page follows it
        browser.find('#steps tr[data-step-key="cool-off"]')
        browser.wait_text("#run-status", "Running")
        assert browser.text("#run-message") == "invoked checkout by hand"  # kept until moving on
        state = backend.get_run(run_id)
        assert state is not None and state.run.function_id == "checkout"
        assert state.run.events[0]["name"] == "stepkit/function.invoked"
        assert state.run.events[0]["data"] == {"items": [2, 5]}
        assert browser.text('#steps tr[data-step-key="compute-total"]').startswith("Completed")


def test_invoke_a_runs_function_with_that_runs_data(
    backend: LocalBackend, browser: Browser
) -> None:
    done = _done(backend)
    with serve(backend) as url:
        browser.get(f"{url}/#run={done}")
        browser.wait_text("#run-id", done)
        browser.click("#invoke-run-fn")
        assert browser.text("#invoke-fn") == "checkout"
        assert json.loads(browser.value("#invoke-data")) == {"items": [3, 4]}
        browser.type("#invoke-data", '{"items": [10]}')
        browser.click("#invoke-submit")
        run_id = browser.wait_run(f"#run={done}")
        backend.run_until_idle()
        browser.wait_text("#run-id", run_id)
        browser.find('#steps tr[data-step-key="cool-off"]')
    state = backend.get_run(run_id)
    assert state is not None and state.steps["compute-total"].output == 10


# -- rerun -------------------------------------------------------------------------------------


def test_rerun_from_a_step_reuses_what_came_before_and_shows_the_new_run(
    backend: LocalBackend, browser: Browser
) -> None:
    done = _done(backend)
    original = backend.get_run(done)
    assert original is not None
    with serve(backend) as url:
        browser.get(f"{url}/#run={done}")
        browser.wait_text("#run-id", done)
        # One button per step; clicking it does not open the step's output.
        keys = browser.js("return [...document.querySelectorAll('button[data-rerun-from]')]"
                          ".map((b) => b.dataset.rerunFrom)")
        assert keys == ["compute-total", "cool-off", "send-receipt"]
        browser.click('button[data-rerun-from="send-receipt"]')
        fork = browser.wait_run(f"#run={done}")
        assert fork != done
        note = browser.wait_text("#run-message", "started as a rerun of ")
        assert note == (f"started as a rerun of {done} from step 'send-receipt' "
                        "(the results before it reused)")
        assert browser.text(f'#run-message a[data-run-link="{done}"]') == done

        backend.run_until_idle()  # the fork performs send-receipt, with the rest reused
        browser.wait_text("#run-status", "Completed")
        for key in ("compute-total", "cool-off", "send-receipt"):
            browser.find(f'#steps tr[data-step-key="{key}"]')
        # The run itself records its original (not only this page's message).
        meta = browser.wait_text("#run-meta", "Rerun of")
        assert f"Rerun of\n{done} from step 'send-receipt'" in meta
        # The link goes back to the original, which lists its reruns.
        browser.click(f'#run-message a[data-run-link="{done}"]')
        browser.wait_text("#run-id", done)
        assert f"Reruns\n{fork} (from 'send-receipt')" in browser.wait_text("#run-meta", "Reruns")
        browser.click(f'#run-meta a[data-run-link="{fork}"]')
        browser.wait_text("#run-id", fork)

    state = backend.get_run(fork)
    assert state is not None and state.run.status is RunStatus.COMPLETED
    for key in ("compute-total", "cool-off"):  # the recorded results, not new ones
        assert state.steps[key] == original.steps[key]
    assert state.steps["send-receipt"].started_at != original.steps["send-receipt"].started_at


def test_rerun_the_whole_run(backend: LocalBackend, browser: Browser) -> None:
    done = _done(backend)
    with serve(backend) as url:
        browser.get(f"{url}/#run={done}")
        browser.wait_text("#run-id", done)
        browser.click("#rerun-run")
        new = browser.wait_run(f"#run={done}")
        note = browser.wait_text("#run-message", "started as a rerun of ")
        assert note == f"started as a rerun of {done}"
        backend.run_until_idle()
        browser.wait_text("#run-status", "Running")  # sleeping in cool-off again
        browser.find('#steps tr[data-step-key="cool-off"]')
    state = backend.get_run(new)
    original = backend.get_run(done)
    assert state is not None and original is not None
    assert state.steps["compute-total"].started_at != original.steps["compute-total"].started_at


def test_a_rerun_the_api_refuses_says_why(
    backend: LocalBackend, browser: Browser, tmp_path: Path
) -> None:
    done = _done(backend)
    other = App("browseractions")  # the same app, with checkout since removed from the code
    with (LocalBackend(other, tmp_path / "dev.sqlite3", clock=backend.clock) as later,
          serve(later) as url):
        browser.get(f"{url}/#run={done}")
        browser.wait_text("#run-id", done)
        browser.click('button[data-rerun-from="send-receipt"]')
        shown = browser.wait_text("#run-message", "no longer registered")
        assert shown.startswith(f"cannot rerun run '{done}': its function 'checkout'")
        assert "error" in str(browser.js("return document.getElementById('run-message').className"))
        assert browser.hash() == f"#run={done}"  # still on the run


# -- events: the waits an event resolved -------------------------------------------------------


def test_an_event_lists_the_waits_it_resolved(backend: LocalBackend, browser: Browser) -> None:
    backend.send([{"name": "shop/order", "data": {"order_id": "o-1"}},
                  {"name": "shop/order", "data": {"order_id": "o-2"}}])
    backend.run_until_idle()
    cast(FakeClock, backend.clock).advance("1m")
    [paid] = backend.send({"name": "shop/paid", "data": {"order_id": "o-1"}})
    backend.run_until_idle()
    (waiter,) = [r for r in backend.list_runs()
                 if r.function_id == "order" and r.events[0]["data"]["order_id"] == "o-1"]
    assert waiter.status is RunStatus.COMPLETED
    with serve(backend) as url:
        browser.get(url)
        browser.click(f'#events tr[data-event-id="{paid}"]')
        browser.wait_text("#event-id", paid)
        assert browser.text("#event-runs") == "no runs"  # it triggers no function
        item = browser.wait_text(f'#event-waits li[data-run-id="{waiter.run_id}"]', "wait-payment")
        assert item == f"{waiter.run_id} order Completed in step wait-payment"
        assert len(browser.js("return document.querySelectorAll('#event-waits li')")) == 1
        payload = json.loads(browser.text("#event-payload"))
        assert payload["data"] == {"order_id": "o-1"} and "waits" not in payload
        # Through to the run that waited.
        browser.click(f'#event-waits a[href="#run={waiter.run_id}"]')
        browser.wait_text("#run-id", waiter.run_id)
        browser.find('#steps tr[data-step-key="wait-payment"]')

        # An event that resolved nothing says so.
        order_event = waiter.events[0]["id"]
        browser.click(f'#events tr[data-event-id="{order_event}"]')
        browser.wait_text("#event-waits", "no waiting run matched it")
        browser.find(f'#event-runs li[data-run-id="{waiter.run_id}"]')


def test_an_event_whose_id_holds_a_slash_and_a_percent_opens_its_own_page(
    backend: LocalBackend, browser: Browser
) -> None:
    odd = "order/42 50%#?"
    backend.send({"name": "shop/checkout", "id": odd, "data": {"items": [2]}})
    backend.run_until_idle()
    with serve(backend) as url:
        browser.get(url)
        browser.click(f'#events tr[data-event-id="{odd}"]')
        browser.wait_text("#event-id", odd)
        assert browser.hash() == "#event=order%2F42%2050%25%23%3F"
        payload = json.loads(browser.wait_text("#event-payload", odd))
        assert payload["id"] == odd and payload["data"] == {"items": [2]}
        browser.click("#event-runs a")  # through to the run it started
        run_id = browser.wait_run("#event=order%2F42%2050%25%23%3F")
        assert browser.wait_text("#run-id", run_id) == run_id


def test_pause_and_resume_a_function_from_the_functions_list(
    backend: LocalBackend, browser: Browser
) -> None:
    from runtime.orchestration.pausing import paused

    with serve(backend) as url:
        browser.get(url)
        browser.js("window.prompt = () => 'carrier outage';")  # the reason asked for
        browser.click('button[data-pause="checkout"]')
        badge = browser.wait_text('div[data-paused="checkout"]', "paused: carrier outage")
        assert "paused since" in str(browser.js(
            "return document.querySelector('div[data-paused=\"checkout\"]').title"))
        assert badge == "paused: carrier outage"
        found = paused(backend.store, "checkout")
        assert found is not None and found.reason == "carrier outage"

        browser.click('button[data-resume="checkout"]')
        browser.find('button[data-pause="checkout"]')
        assert paused(backend.store, "checkout") is None
        assert browser.js("return document.querySelector('div[data-paused]')") is None
