"""`stepkit keys` against a live dev server: the key is printed once and kept nowhere."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import Result

from runtime.backends.local import LocalBackend
from runtime.cli.keys import SHOWN_ONCE
from runtime.ingress.keys import EventKeys, KeyRefusedError, digest
from runtime.orchestration.clock import FakeClock
from tests.devserver.test_cli import backend, stepkit, url

KEY = re.compile(r"sk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")

__all__ = ["backend", "url"]  # the dev server fixtures, shared with test_cli

def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _check(backend: LocalBackend, key: str) -> str:
    """The id the endpoint takes ``key`` for, read fresh (no container's cache)."""
    return EventKeys(backend.store, backend.clock).check(key).id


def _kept(path: Path) -> str:
    """Every value of every table of the dev server's database, as one text."""
    with sqlite3.connect(path) as db:
        return "\n".join(db.iterdump())


def test_create_prints_the_key_once_and_list_never_shows_it(
    backend: LocalBackend, url: str, tmp_path: Path
) -> None:
    out = _ok(stepkit("keys", "create", "--label", "billing", "--prefix", "billing/",
                      "--prefix", "invoice.", "--url", url))
    (key,) = KEY.findall(out)
    ident = key[3:15]
    assert out.splitlines() == [
        f"created event key {ident} 'billing' for billing/, invoice.:", key, SHOWN_ONCE]
    assert _check(backend, key) == ident

    listed = _ok(stepkit("keys", "list", "--url", url))
    header, row = listed.splitlines()
    assert header.split() == ["ID", "LABEL", "PREFIXES", "CREATED", "STATE"]
    assert row.split() == [ident, "billing", "billing/,", "invoice.", "2026-03-02",
                           "08:00:00Z", "live"]
    as_json = _ok(stepkit("keys", "list", "--json", "--url", url))
    assert [k["id"] for k in json.loads(as_json)] == [ident]
    for shown in (listed, as_json):
        assert key not in shown and digest(key) not in shown
        assert key.split("_", 2)[2] not in shown  # not even the secret part
    database = _kept(tmp_path / "dev.sqlite3")
    assert digest(key) in database and key.split("_", 2)[2] not in database


def test_create_json_carries_the_key(backend: LocalBackend, url: str) -> None:
    made = json.loads(_ok(stepkit("keys", "create", "--json", "--url", url)))
    assert KEY.fullmatch(made["key"])
    assert (made["label"], made["prefixes"], made["live"]) == ("", [], True)
    assert _check(backend, made["key"]) == made["id"]
    listed = _ok(stepkit("keys", "list", "--url", url))
    assert "(any name)" in listed and made["key"] not in listed


def test_rotate_with_grace_then_revoke_by_the_pasted_key(backend: LocalBackend,
                                                          url: str) -> None:
    assert isinstance(backend.clock, FakeClock)
    old = json.loads(_ok(stepkit("keys", "create", "--label", "ci", "--json", "--url", url)))
    rotated = _ok(stepkit("keys", "rotate", old["id"], "--grace", "1h", "--url", url))
    (new_key,) = KEY.findall(rotated)
    new_id = new_key[3:15]
    first, *rest = rotated.splitlines()
    assert first == (f"rotated {old['id']} (revokes at 2026-03-02 09:00:00Z, replaced by "
                     f"{new_id}) to {new_id}:")
    assert rest == [new_key, SHOWN_ONCE]
    assert _check(backend, old["key"]) == old["id"]  # within the grace
    assert _check(backend, new_key) == new_id

    backend.clock.advance("1h")
    listed = _ok(stepkit("keys", "list", "--url", url))
    assert f"revoked at 2026-03-02 09:00:00Z, replaced by {new_id}" in listed
    with pytest.raises(KeyRefusedError, match="revoked"):
        _check(backend, old["key"])

    # People paste keys: the whole key names its id (and only the id is sent).
    revoked = _ok(stepkit("keys", "revoke", new_key, "--url", url))
    assert revoked.strip() == f"{new_id}: revoked at 2026-03-02 09:00:00Z"
    assert new_key not in revoked
    with pytest.raises(KeyRefusedError, match="revoked"):
        _check(backend, new_key)
    again = json.loads(_ok(stepkit("keys", "revoke", new_id, "--json", "--url", url)))
    assert (again["id"], again["live"]) == (new_id, False)


def test_errors_are_one_line(backend: LocalBackend, url: str) -> None:
    for args, message in (
        (["revoke", "0123456789ab"], "Error: no event key '0123456789ab'"),
        (["rotate", "0123456789ab"], "Error: no event key '0123456789ab'"),
        (["revoke", "not-a-key"], "Error: not an event key id"),
        (["create", "--prefix", "bad name"], "Error: prefixes: 'bad name' cannot start"),
        (["create", "--label", "x" * 101], "Error: label: a string of at most 100"),
    ):
        result = stepkit("keys", *args, "--url", url)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith(message), (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    made = json.loads(_ok(stepkit("keys", "create", "--json", "--url", url)))
    bare = stepkit("keys", "rotate", made["id"], "--grace", "3600", "--url", url)
    assert bare.exit_code == 2 and "invalid duration '3600'" in bare.output  # click's usage
    assert [k["id"] for k in json.loads(_ok(stepkit("keys", "list", "--json", "--url", url)))
            ] == [made["id"]]
    gone = stepkit("keys", "list", "--url", "http://127.0.0.1:9")
    assert gone.exit_code == 1 and "no stepkit dev server" in gone.output


def test_empty_list(url: str) -> None:
    assert _ok(stepkit("keys", "list", "--url", url)).strip() == (
        "no event keys; make one with `stepkit keys create`")
    assert json.loads(_ok(stepkit("keys", "list", "--json", "--url", url))) == []

