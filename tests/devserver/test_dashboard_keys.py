"""The dashboard's event keys, clicked through in headless Chromium (chromedriver).

The server checks keys (``stepkit dev --require-keys``), so a key shown by the page is tried
for real at ``POST /e/<key>``. A key made or rotated is shown once: only in its box, never in
the URL, the page's storage or its state, and gone once dismissed or navigated away from.
"""

from __future__ import annotations

import re
from typing import Any, cast

import httpx

from runtime.backends.local import LocalBackend
from runtime.devserver.background import serve_in_background as serve
from runtime.ingress.keys import KEY_CACHE_SECONDS
from runtime.orchestration.clock import FakeClock
from tests.devserver.test_dashboard_actions import Browser, backend, browser

__all__ = ["backend", "browser"]  # the fixtures, shared with the other actions' tests

HOSTILE = "<img src=x onerror=alert(1)>"
EVENT = {"name": "shop/checkout", "data": {"items": [1]}}
#: Everywhere the page could keep a key besides its box: the URL, storage and its state.
KEPT = ("return location.href + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)"
        " + JSON.stringify(state, (k, v) => v instanceof Set ? [...v] : v)")
PAGE = "return document.documentElement.outerHTML + document.body.innerText"


def _shown_key(browser: Browser) -> str:
    """The key in the shown-once box, once there; checked to be a whole key."""
    key = str(browser.wait("a key shown once", lambda: browser.js(
        "return document.getElementById('key-secret').textContent")))
    assert re.fullmatch(r"sk_[0-9a-f]{12}_[A-Za-z0-9_-]+", key), key
    assert "it will not be shown again" in browser.text("#key-once")
    assert key not in str(browser.js(KEPT))
    return key


def _keys(http: httpx.Client, url: str) -> dict[str, dict[str, Any]]:
    resp = http.get(f"{url}/api/keys")
    assert resp.status_code == 200, resp.text
    return {k["id"]: k for k in resp.json()["keys"]}


def test_create_a_key_shown_once_that_works_then_revoke_it(
        backend: LocalBackend, browser: Browser) -> None:
    with serve(backend, require_keys=True) as url, httpx.Client(timeout=10) as http:
        browser.get(f"{url}/")
        browser.wait_text("#keys", "no event keys yet")
        browser.type("#key-label", HOSTILE)
        browser.type("#key-prefixes", " shop/, billing/ ,")
        browser.click("#key-create")
        key = _shown_key(browser)
        ident = key[3:15]
        assert browser.text("#key-once-what") == f"New key sk_{ident}_… ({HOSTILE}):"

        # It is a key the endpoint takes, for the names its prefixes allow.
        sent = http.post(f"{url}/e/{key}", json=EVENT)
        assert sent.status_code == 200, sent.text
        assert http.post(f"{url}/e/{key}", json={"name": "other/thing"}).status_code == 403

        # Listed live, by its id only; the label is text, not markup.
        row = f'#keys tr[data-key-id="{ident}"]'
        assert browser.wait_text(f'[data-key-state="{ident}"]', "live") == "live"
        assert browser.text(f"{row} td:nth-child(1)") == f"sk_{ident}_…"
        assert browser.text(f"{row} td:nth-child(2)") == HOSTILE
        assert browser.text(f"{row} td:nth-child(3)") == "shop/, billing/"
        assert browser.js("return document.querySelectorAll('#keys-panel img').length") == 0
        assert browser.value("#key-label") == ""  # the form is ready for the next one

        browser.click("#key-dismiss")
        assert browser.js("return document.getElementById('key-once').hidden") is True
        assert key not in str(browser.js(PAGE))

        # Revoking asks first; a "no" changes nothing.
        browser.js("window.confirm = (m) => { window.asked = m; return false; };")
        browser.click(f'button[data-revoke="{ident}"]')
        assert str(browser.js("return window.asked")).startswith(f"Revoke sk_{ident}_…?")
        assert _keys(http, url)[ident]["live"] is True
        browser.js("window.confirm = () => true;")
        browser.click(f'button[data-revoke="{ident}"]')
        assert browser.wait_text(f'[data-key-state="{ident}"]', "revoked at").startswith(
            "revoked at ")
        assert browser.text("#keys-result") == f"revoked sk_{ident}_…"
        assert browser.js(f"return document.querySelector('{row} button')") is None
        assert _keys(http, url)[ident]["live"] is False

        # The endpoint trusts its last read of a key for a while; past it, the key is refused.
        cast(FakeClock, backend.clock).advance(KEY_CACHE_SECONDS + 1)
        refused = http.post(f"{url}/e/{key}", json=EVENT)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"], refused.text


def test_rotate_shows_the_new_key_once_and_keeps_the_old_one_through_its_grace(
        backend: LocalBackend, browser: Browser) -> None:
    with serve(backend, require_keys=True) as url, httpx.Client(timeout=10) as http:
        made = http.post(f"{url}/api/keys", json={"label": "ci"}).json()
        old = made["id"]
        browser.get(f"{url}/")
        grace = f'input[data-grace="{old}"]'
        assert browser.value(grace) == "0s"  # by default the old key stops now

        browser.type(grace, "soon")
        browser.click(f'button[data-rotate="{old}"]')
        assert "grace" in browser.wait_text("#keys-result", "soon")
        assert list(_keys(http, url)) == [old]  # nothing rotated

        browser.type(grace, "1h")
        browser.click(f'button[data-rotate="{old}"]')
        key = _shown_key(browser)
        new = key[3:15]
        assert key != made["key"]
        assert browser.text("#key-once-what").startswith(
            f"New key sk_{new}_… in the place of sk_{old}_…; sk_{old}_… works until ")
        assert browser.wait_text(f'[data-key-state="{old}"]', "revokes at ").startswith(
            "revokes at ")
        assert browser.text(f'#keys tr[data-key-id="{old}"] td:nth-child(6)') == f"sk_{new}_…"
        for works in (key, made["key"]):  # both, until the grace is over
            sent = http.post(f"{url}/e/{works}", json=EVENT)
            assert sent.status_code == 200, sent.text

        # Moving on in the page (here: opening an event) clears the key shown.
        browser.js("location.hash = '#event=none'")
        browser.wait("the key to be cleared",
                     lambda: browser.js("return document.getElementById('key-once').hidden"))
        assert key not in str(browser.js(PAGE))

        # With the default grace the replaced key stops at once.
        browser.click(f'button[data-rotate="{new}"]')
        newer = _shown_key(browser)
        assert newer not in (key, made["key"])
        assert browser.text("#key-once-what").endswith(f"; sk_{new}_… is revoked:")
        browser.wait_text(f'[data-key-state="{new}"]', "revoked at ")
        listed = _keys(http, url)
        assert (listed[new]["live"], listed[new]["replaced_by"]) == (False, newer[3:15])
        assert listed[old]["live"] is True and listed[newer[3:15]]["live"] is True
