"""The dashboard's "Cancel matching", clicked through in headless Chromium (chromedriver)."""

from __future__ import annotations

from runtime.backends.local import LocalBackend
from runtime.devserver.background import serve_in_background as serve
from tests.devserver.test_dashboard_actions import Browser, backend, browser

__all__ = ["backend", "browser"]  # the fixtures, shared with the other actions' tests


def test_cancel_matching_counts_first_then_cancels_the_runs_the_filters_show(
        backend: LocalBackend, browser: Browser) -> None:
    for items in ([1], [2]):
        backend.send({"name": "shop/checkout", "data": {"items": items}})
    backend.run_until_idle()
    backend.clock.advance(1)  # type: ignore[attr-defined]  # the runs predate the action
    with serve(backend) as url:
        browser.get(f"{url}/")
        browser.find("#cancel-matching")
        browser.js("const s = document.getElementById('filter-status'); s.value = 'Running';"
                   " s.dispatchEvent(new Event('change'));"
                   " window.confirm = (m) => { window.asked = m; return true; };")
        browser.click("#cancel-matching")
        shown = browser.wait_text("#bulk-result", "cancelled 2")
        assert shown.startswith("cancel ")
        assert browser.js("return window.asked") == "Cancel 2 run(s)?"
    backend.run_until_idle()
    assert sorted(r.status.value for r in backend.list_runs()) == [
        "Cancelled", "Cancelled", "Completed"]
