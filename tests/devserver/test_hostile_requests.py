"""The dev server against hostile and malformed requests (issue 23).

Other web pages can neither read nor change its state (Host, Origin and Content-Type rules);
bodies and lists are bounded (413); malformed input is a 400 naming the problem, never a 500;
a list is validated whole before any event is routed, and a routing failure part way answers
with the ids that make a retry route the rest without duplicates.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from runtime.backends.local import LocalBackend
from runtime.devserver import create_app
from runtime.devserver.api import MAX_BATCH_EVENTS
from runtime.devserver.bodies import MAX_BODY_BYTES, BodyError, read_body
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import RunQuery
from tests.devserver.test_api import START, app

JSON = {"content-type": "application/json"}
SIGNUP = {"name": "user/signup", "data": {"name": "ada"}}


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    b = LocalBackend(app, tmp_path / "dev.sqlite3", clock=FakeClock(START))
    yield b
    b.close()


def _client(backend: LocalBackend, base_url: str = "http://localhost:8288",
            allowed_hosts: tuple[str, ...] = ()) -> TestClient:
    """A client addressing the server as ``base_url`` (its Host header)."""
    return TestClient(create_app(backend, allowed_hosts=allowed_hosts), base_url=base_url,
                      raise_server_exceptions=False)


@pytest.fixture
def client(backend: LocalBackend) -> Iterator[TestClient]:
    with _client(backend) as c:
        yield c


def _runs(backend: LocalBackend) -> list[Any]:
    backend.run_until_idle()
    return backend.control.list_runs(RunQuery(limit=1000))


# -- Host: DNS rebinding ---------------------------------------------------------------------


@pytest.mark.parametrize("base_url", [
    "http://localhost:8288", "http://127.0.0.1", "http://[::1]:9000", "http://LOCALHOST:1"])
def test_loopback_hosts_are_answered(backend: LocalBackend, base_url: str) -> None:
    with _client(backend, base_url) as c:
        assert c.get("/api/runs").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8288", "localhost.evil.example",
                                  "10.0.0.5:8288", ""])
def test_a_foreign_host_is_refused_before_anything_is_read_or_done(
    backend: LocalBackend, client: TestClient, host: str
) -> None:
    for method, path in (("GET", "/api/runs"), ("GET", "/api/events"), ("GET", "/"),
                         ("POST", "/api/events")):
        resp = client.request(method, path, headers={"host": host, **JSON},
                              content=json.dumps(SIGNUP))
        assert resp.status_code == 403, (method, path, resp.text)
        assert "DNS rebinding" in resp.json()["error"]
    assert _runs(backend) == []


def test_the_bound_address_is_answered_and_a_wildcard_bind_answers_address_literals(
    backend: LocalBackend,
) -> None:
    with _client(backend, "http://192.168.1.5:8288", allowed_hosts=("192.168.1.5",)) as c:
        assert c.get("/api/runs").status_code == 200
        assert c.get("/api/runs", headers={"host": "192.168.1.6:8288"}).status_code == 403
    with _client(backend, "http://192.168.1.5:8288", allowed_hosts=("0.0.0.0",)) as c:
        assert c.get("/api/runs").status_code == 200
        assert c.get("/api/runs", headers={"host": "[fe80::1]:8288"}).status_code == 200
        assert c.get("/api/runs", headers={"host": "evil.example"}).status_code == 403


# -- Origin and Content-Type: cross-site request forgery -------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:3000",
                                    "https://localhost:8288", "http://127.0.0.1:8288"])
def test_a_post_from_another_origin_is_refused(
    backend: LocalBackend, client: TestClient, origin: str
) -> None:
    for path in ("/api/events", "/api/functions/greet/invoke", "/api/functions/flaky/cron",
                 "/api/runs/r1/cancel", "/api/dlq/redrive"):
        resp = client.post(path, json=SIGNUP, headers={"origin": origin})
        assert resp.status_code == 403, (path, resp.text)
        assert "cross-site request forgery" in resp.json()["error"]
    assert _runs(backend) == []


def test_a_post_from_its_own_origin_or_without_one_is_served(
    backend: LocalBackend, client: TestClient
) -> None:
    own = client.post("/api/events", json=SIGNUP, headers={"origin": "http://localhost:8288"})
    assert own.status_code == 200, own.text
    assert client.post("/api/events", json=SIGNUP).status_code == 200  # the CLI sends none
    assert len(_runs(backend)) == 2


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonp", None])
def test_a_body_that_is_not_declared_json_is_refused(
    backend: LocalBackend, client: TestClient, content_type: str | None
) -> None:
    # What <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) can send.
    headers = {} if content_type is None else {"content-type": content_type}
    resp = client.post("/api/events", content=json.dumps(SIGNUP), headers=headers)
    assert resp.status_code == 415, resp.text
    assert "application/json" in resp.json()["error"]
    assert _runs(backend) == []


def test_json_with_a_charset_and_an_action_without_a_body_are_accepted(
    client: TestClient,
) -> None:
    resp = client.post("/api/events", content=json.dumps(SIGNUP),
                       headers={"content-type": "Application/JSON; charset=utf-8"})
    assert resp.status_code == 200, resp.text
    resp = client.post("/api/functions/flaky/cron")  # no body, no content type
    assert resp.status_code == 200, resp.text


def test_reads_from_another_origin_are_not_refused_but_get_no_cors_grant(
    client: TestClient,
) -> None:
    # A GET changes nothing; the browser keeps its answer from the other page (no CORS
    # header), and a rebinding page is refused by the Host rule above.
    resp = client.get("/api/runs", headers={"origin": "http://evil.example"})
    assert resp.status_code == 200
    assert "access-control-allow-origin" not in resp.headers


# -- size limits ------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413(backend: LocalBackend, client: TestClient) -> None:
    big = json.dumps({**SIGNUP, "data": {"blob": "x" * MAX_BODY_BYTES}})
    resp = client.post("/api/events", content=big, headers=JSON)
    assert resp.status_code == 413
    assert "16 MiB" in resp.json()["error"]
    chunks = (b"x" * (1024 * 1024) for _ in range(17))  # no Content-Length: counted as read
    resp = client.post("/api/events", content=chunks, headers=JSON)
    assert resp.status_code == 413
    assert _runs(backend) == []


def test_reading_stops_at_the_limit_without_reading_the_rest() -> None:
    sent = []

    async def receive() -> dict[str, Any]:
        sent.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": len(sent) < 100}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(BodyError) as err:
        asyncio.run(read_body(request, limit=2500))
    assert err.value.status == 413
    assert len(sent) == 3  # of 100 chunks


def test_too_many_events_in_one_list_is_413_and_none_is_routed(
    backend: LocalBackend, client: TestClient
) -> None:
    resp = client.post("/api/events", json=[SIGNUP] * (MAX_BATCH_EVENTS + 1))
    assert resp.status_code == 413
    assert f"{MAX_BATCH_EVENTS}-event limit" in resp.json()["error"]
    assert _runs(backend) == []
    assert client.post("/api/events", json=[SIGNUP] * 3).status_code == 200


# -- malformed input: 400, never 500 ----------------------------------------------------------


MALFORMED = {
    "lone surrogate in an id": ('{"id": "\\ud800", "name": "user/signup"}', "lone surrogate"),
    "lone surrogate in a key": ('{"name": "user/signup", "data": {"\\udc80": 1}}',
                                "lone surrogate"),
    "10,000-deep JSON": ("[" * 10_000 + "]" * 10_000, "nested deeper than"),
    "200-deep JSON": ('{"name": "user/signup", "data": {"a": ' + "[" * 200 + "]" * 200 + "}}",
                      "nested deeper than"),
    "4,301-digit integer": ('{"name": "user/signup", "data": {"n": ' + "7" * 4301 + "}}",
                            "more than 4300 digits"),
    "invalid JSON": ('{"name": ', "invalid JSON body"),
    "not UTF-8": (b'{"name": "\xff"}', "not UTF-8"),
    "NaN": ('{"name": "user/signup", "data": {"n": NaN}}', "NaN is not JSON"),
    "a number": ("42", "expected an event object or a list"),
    "a string": ('"user/signup"', "expected an event object or a list"),
    "a list of numbers": ("[1, 2]", "event[0]: expected a JSON object"),
    "null": ("null", "expected an event object or a list"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_event_body_is_400_with_the_problem(
    backend: LocalBackend, client: TestClient, case: str
) -> None:
    body, problem = MALFORMED[case]
    resp = client.post("/api/events", content=body, headers=JSON)
    assert resp.status_code == 400, resp.text
    assert problem in resp.json()["error"]
    assert _runs(backend) == []


@pytest.mark.parametrize("path", ["/api/dlq/redrive", "/api/runs/r1/rerun",
                                  "/api/functions/greet/invoke"])
def test_every_endpoint_taking_a_body_refuses_what_cannot_be_stored(
    client: TestClient, path: str
) -> None:
    for body in ('{"queue": "\\ud800", "from": "\\ud800", "data": {"a": "\\ud800"}}',
                 "[" * 10_000 + "]" * 10_000):
        resp = client.post(path, content=body, headers=JSON)
        assert resp.status_code == 400, (path, resp.text)


@pytest.mark.parametrize(("query", "problem"), [
    ("/api/events?limit=abc", "limit: expected an integer 1-1000"),
    ("/api/events?limit=-1", "limit: expected an integer 1-1000"),
    ("/api/runs?limit=" + "1" + "0" * 30, "limit: expected an integer 1-1000"),
    ("/api/runs?limit=" + "9" * 5000, "limit: expected an integer 1-1000"),
    ("/api/runs?status=%00", "status: expected one of"),
    ("/api/runs?since=yesterday", "since: invalid time"),
    ("/api/events?summary=maybe", "summary: expected true or false"),
])
def test_wrong_query_parameters_are_400(client: TestClient, query: str, problem: str) -> None:
    resp = client.get(query)
    assert resp.status_code == 400, resp.text
    assert problem in resp.json()["error"]


# -- ids in paths ------------------------------------------------------------------------------


ODD_IDS = ["order/42", "50%off", "a#b?c=d", "with space", "x/cancel", "%2F"]


def test_ids_with_reserved_characters_round_trip_through_the_path(
    backend: LocalBackend, client: TestClient
) -> None:
    resp = client.post("/api/events", json=[{**SIGNUP, "id": i} for i in ODD_IDS])
    assert resp.status_code == 200, resp.text
    backend.run_until_idle()
    for event_id in ODD_IDS:
        found = client.get("/api/events/" + quote(event_id, safe=""))
        assert found.status_code == 200, (event_id, found.text)
        assert found.json()["id"] == event_id
        (run,) = found.json()["runs"]
        shown = client.get("/api/runs/" + quote(run["run_id"], safe=""))
        assert shown.json()["events"][0]["id"] == event_id


def test_an_encoded_slash_is_part_of_the_id_not_another_route(client: TestClient) -> None:
    resp = client.get("/api/runs/x%2Fcancel")
    assert resp.status_code == 404
    assert resp.json()["error"] == "no run 'x/cancel'"
    resp = client.post("/api/runs/a%2Fb/cancel")
    assert resp.status_code == 404
    assert resp.json()["error"] == "no run 'a/b'"


# -- the events list without payloads ---------------------------------------------------------


def test_the_events_summary_leaves_payloads_out(backend: LocalBackend, client: TestClient) -> None:
    client.post("/api/events", json={**SIGNUP, "id": "e1", "user": {"id": "u"}})
    backend.run_until_idle()
    (full,) = client.get("/api/events").json()["events"]
    assert full["data"] == {"name": "ada"} and full["user"] == {"id": "u"}
    (row,) = client.get("/api/events?summary=true").json()["events"]
    assert "data" not in row and "user" not in row
    assert (row["id"], row["name"], len(row["runs"])) == ("e1", "user/signup", 1)
    assert client.get("/api/events/e1").json()["data"] == {"name": "ada"}


# -- a list: validated whole, then routed; a failure part way is retry-safe -------------------


def test_a_list_with_one_invalid_event_routes_none(
    backend: LocalBackend, client: TestClient
) -> None:
    resp = client.post("/api/events", json=[SIGNUP, SIGNUP, {"name": "bad name!"}])
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("event[2].name")
    assert _runs(backend) == []


def test_a_routing_failure_part_way_answers_the_ids_and_a_retry_routes_the_rest_once(
    backend: LocalBackend, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    remember = backend.store.remember_event
    calls = []

    def disk_full_on_the_second(event: dict[str, Any], *, now: float, ttl: float) -> bool:
        calls.append(event["id"])
        if len(calls) == 2:
            raise OSError("disk I/O error")
        return remember(event, now=now, ttl=ttl)

    monkeypatch.setattr(backend.store, "remember_event", disk_full_on_the_second)
    events = [{**SIGNUP, "id": "given-1"}, SIGNUP, {**SIGNUP, "id": "given-3"}]
    resp = client.post("/api/events", json=events)
    assert resp.status_code == 500
    body = resp.json()
    ids = body["ids"]
    assert (ids[0], ids[2], body["routed"]) == ("given-1", "given-3", ["given-1"])
    assert "routing failed after 1 of 3 event(s) (OSError: disk I/O error)" in body["error"]
    assert ids[1] in body["error"]

    retry = client.post("/api/events", json=[{**e, "id": i} for e, i in zip(events, ids,
                                                                             strict=True)])
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"ids": ids, "duplicates": ["given-1"]}
    assert len(_runs(backend)) == 3  # one run per event: none twice, none lost
    for event_id in ids:
        assert len(client.get(f"/api/events/{event_id}").json()["runs"]) == 1, event_id
