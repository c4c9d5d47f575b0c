"""Event keys of a deployed app (`AwsControl`, `stepkit keys ... --aws`) on the emulators.

The table must hold a key's digest and nothing from which the key could be read: the test
scans every item and searches every attribute value for the key and its secret part.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from runtime import App, Context, TriggerEvent
from runtime.cli import cli
from runtime.client import Deployment
from runtime.control import EventKeyNotFoundError
from runtime.control.aws import AwsControl
from runtime.ingress.keys import EventKeys, KeyRefusedError, digest
from runtime.orchestration.clock import SystemClock
from stepkit_emulators.emulators import AwsEmulators
from tests.aws_emulators.fixtures import deploy_for_cli

pytestmark = pytest.mark.aws

app = App("keyshop")


@app.function(id="bill", trigger=TriggerEvent("billing/charge"))
def bill(ctx: Context) -> str:
    return "billed"


def _strings(value: Any) -> Iterator[str]:
    """Every string in a DynamoDB item (names and values, nested maps, lists and sets)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).decode("latin-1")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple | set):
        for v in value:
            yield from _strings(v)


def _table_text(aws: AwsEmulators, table: str) -> list[str]:
    """Each item of the table, as the strings it holds joined (one strongly consistent scan)."""
    pages = aws.client("dynamodb").get_paginator("scan").paginate(TableName=table,
                                                                   ConsistentRead=True)
    return ["\n".join(_strings(item)) for page in pages for item in page["Items"]]


def test_keys_on_aws_are_kept_as_digests_and_revoked_for_the_endpoint(
    aws: AwsEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, backend = deploy_for_cli(app, aws, monkeypatch)
    r = backend.resources
    control = AwsControl(Deployment(r.app_id, r.bus, r.table), clients=backend.clients)
    endpoint = EventKeys(control.store, SystemClock(), ttl=0)  # a fresh read each check
    runner = CliRunner()

    made = control.create_key(label="billing", prefixes=["billing/"])
    key = made.pop("key")
    assert made["live"] and made["prefixes"] == ["billing/"]
    created = runner.invoke(cli, ["keys", "create", "--label", "ci", "--aws", "--json"])
    assert created.exit_code == 0, created.output
    other = json.loads(created.output)
    assert endpoint.check(key).id == made["id"]
    assert endpoint.check(other["key"]).id == other["id"]

    listed = control.event_keys()
    assert {k["id"]: k["label"] for k in listed} == {made["id"]: "billing", other["id"]: "ci"}
    cli_list = runner.invoke(cli, ["keys", "list", "--aws"])
    assert cli_list.exit_code == 0, cli_list.output
    for shown in (json.dumps(listed), cli_list.output):
        for k in (key, other["key"]):
            assert k not in shown and digest(k) not in shown

    items = _table_text(aws, r.table)
    for k in (key, other["key"]):
        secret = k.split("_", 2)[2]
        assert [i for i in items if k in i or secret in i] == []
        # The scan did reach the key's item: its digest, and only that, is kept.
        assert len([i for i in items if digest(k) in i]) == 1

    revoked = runner.invoke(cli, ["keys", "revoke", other["key"], "--aws"])  # a pasted key
    assert revoked.exit_code == 0, revoked.output
    assert revoked.output.startswith(f"{other['id']}: revoked at ")
    with pytest.raises(KeyRefusedError, match="revoked"):
        endpoint.check(other["key"])
    assert endpoint.check(key).id == made["id"]

    rotated = control.rotate_key(made["id"], 3600.0)
    assert rotated["replaces"]["live"] and rotated["replaces"]["replaced_by"] == rotated["id"]
    assert endpoint.check(key).id == made["id"]  # within the grace
    assert endpoint.check(rotated["key"]).id == rotated["id"]
    assert rotated["key"] not in "\n".join(_table_text(aws, r.table))

    with pytest.raises(EventKeyNotFoundError, match="no event key '0123456789ab'"):
        control.revoke_key("0123456789ab")
    unknown = runner.invoke(cli, ["keys", "rotate", "0123456789ab", "--aws"])
    assert unknown.exit_code == 1 and "no event key '0123456789ab'" in unknown.output
    h.close()
