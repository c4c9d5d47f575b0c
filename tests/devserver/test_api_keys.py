"""Event keys through the dev API: ``/api/keys`` and its rotate and revoke, behind the guards."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from runtime.devserver import create_app
from runtime.ingress.keys import KEY_CACHE_SECONDS, EventKeys, KeyRefusedError, digest
from tests.devserver.test_api import Env, env

__all__ = ["env"]  # the dev API fixture, shared with test_api

def _listed(env: Env) -> list[dict[str, Any]]:
    resp = env.client.get("/api/keys")
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["keys"]
    return found


def _create(env: Env, **body: Any) -> dict[str, Any]:
    resp = env.client.post("/api/keys", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"  # it carries the key
    made: dict[str, Any] = resp.json()
    return made


def test_create_lists_the_key_without_the_key_or_its_digest(env: Env) -> None:
    assert _listed(env) == []
    made = _create(env, label="billing", prefixes=["billing/"])
    key = made.pop("key")
    assert made == {"id": key[3:15], "label": "billing", "prefixes": ["billing/"],
                    "created": "2026-03-02T08:00:00.000Z", "revoked": None,
                    "replaced_by": None, "live": True}
    assert EventKeys(env.backend.store, env.clock).check(key).id == made["id"]
    listed = env.client.get("/api/keys")
    assert listed.json() == {"keys": [made]}
    assert key not in listed.text and digest(key) not in listed.text
    assert "cache-control" not in listed.headers  # only the answers carrying a key
    # No body at all is a key for any name, without a label.
    bare = env.client.post("/api/keys")
    assert bare.status_code == 200, bare.text
    assert (bare.json()["label"], bare.json()["prefixes"]) == ("", [])


def test_rotate_with_a_grace_then_revoke(env: Env) -> None:
    old = _create(env, label="ci")
    resp = env.client.post(f"/api/keys/{old['id']}/rotate", json={"grace": "1h"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    new = resp.json()
    assert new["label"] == "ci" and new["key"] != old["key"]
    assert new["replaces"] == {**{k: v for k, v in old.items() if k != "key"},
                               "revoked": "2026-03-02T09:00:00.000Z", "replaced_by": new["id"],
                               "live": True}
    # Both made at the fake clock's instant: newest first cannot order them.
    assert {k["id"]: k["live"] for k in _listed(env)} == {old["id"]: True, new["id"]: True}
    env.clock.advance("1h")
    assert {k["id"]: k["live"] for k in _listed(env)} == {old["id"]: False, new["id"]: True}
    with pytest.raises(KeyRefusedError, match="revoked"):
        EventKeys(env.backend.store, env.clock).check(old["key"])

    # A whole key in the id's place names its id.
    revoked = env.client.post(f"/api/keys/{new['key']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] == "2026-03-02T09:00:00.000Z"
    assert "key" not in revoked.json()
    with pytest.raises(KeyRefusedError, match="revoked"):
        EventKeys(env.backend.store, env.clock).check(new["key"])


def test_bad_requests_are_400_and_unknown_ids_404(env: Env) -> None:
    for body in ({"prefixes": ["bad name/"]}, {"prefixes": "billing/"}, {"prefixes": [3]},
                 {"label": 3}, {"label": "x" * 101}, {"scope": "all"}, ["billing/"]):
        resp = env.client.post("/api/keys", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]
    assert _listed(env) == []
    made = _create(env)
    for grace in (3600, "soon", "-1h"):
        resp = env.client.post(f"/api/keys/{made['id']}/rotate", json={"grace": grace})
        assert resp.status_code == 400, (grace, resp.text)
    assert len(_listed(env)) == 1  # no refused rotation made a key
    unknown = env.client.post("/api/keys/0123456789ab/revoke")
    assert unknown.status_code == 404 and "no event key '0123456789ab'" in unknown.text
    assert env.client.post("/api/keys/0123456789ab/rotate").status_code == 404
    malformed = env.client.post("/api/keys/nope/revoke")
    assert malformed.status_code == 400 and "not an event key id" in malformed.text


def test_the_guards_refuse_a_cross_origin_or_form_post(env: Env) -> None:
    made = _create(env)
    other = {"Origin": "https://evil.example"}
    assert env.client.post("/api/keys", json={}, headers=other).status_code == 403
    assert env.client.post(f"/api/keys/{made['id']}/revoke", headers=other).status_code == 403
    form = env.client.post("/api/keys", content=b"label=x",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    rebound = env.client.get("/api/keys", headers={"Host": "attacker.example"})
    assert rebound.status_code == 403
    assert [(k["id"], k["live"]) for k in _listed(env)] == [(made["id"], True)]
    same = env.client.post("/api/keys", json={}, headers={"Origin": "http://testserver"})
    assert same.status_code == 200, same.text


def test_a_key_made_here_is_the_one_the_event_endpoint_takes(env: Env) -> None:
    endpoint = TestClient(create_app(env.backend, allowed_hosts=["testserver"],
                                     require_keys=True))
    made = _create(env, prefixes=["user/"])
    signup = {"name": "user/signup", "data": {"name": "ada"}}
    assert endpoint.post(f"/e/{made['key']}", json=signup).status_code == 200
    assert endpoint.post(f"/e/{made['key']}", json={"name": "job/flaky"}).status_code == 403
    assert env.client.post(f"/api/keys/{made['id']}/revoke").status_code == 200
    env.clock.advance(f"{KEY_CACHE_SECONDS}s")  # the endpoint's read of the key expires
    refused = endpoint.post(f"/e/{made['key']}", json=signup)
    assert refused.status_code == 401 and made["key"] not in refused.text
    endpoint.close()
