"""The event endpoint's cost bench (bench/ingress_cost.py), in its quick configuration.

What it counts must be what the code's layout says one request makes: one consistent GetItem
of the key's gate (1 RRU) on a cold container and none warm, none for a webhook; one
PutEvents per ``MAX_BATCH`` entries; one S3 put for an event whose entry is over
``MAX_ENTRY_BYTES``; nothing else. Its model must price those counts at the constants it names.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import ingress_cost
from runtime.backends.aws.bus import MAX_BATCH, MAX_ENTRY_BYTES
from stepkit_emulators.emulators import AwsEmulators

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.aws


@pytest.fixture(scope="module")
def figures(aws_session: AwsEmulators) -> Iterator[dict[str, Any]]:
    aws_session.reset()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in aws_session.env().items():
            patch.setenv(key, value)
        yield ingress_cost.measure(aws_session, ingress_cost.QUICK, repeats=2)


def layout_problems(fig: dict[str, Any]) -> list[str]:
    """Where the counted calls differ from what the endpoint's code makes (empty: none)."""
    problems = []
    for row, case in zip(fig["rows"], ingress_cost.QUICK, strict=True):
        # Every case's event is well clear of the limit either way: its padding decides.
        offloaded = case.pad > MAX_ENTRY_BYTES
        for temp in ("cold", "warm"):
            c = row[temp]
            expected: dict[str, Any] = {
                "status": 200,
                "get_item": 1 if temp == "cold" and not case.webhook else 0,
                "put_events": math.ceil(case.events / MAX_BATCH),
                "entries": case.events,
                "chunks": case.events,  # small entries, or a stub pointing at S3
                "s3_puts": 1 if offloaded else 0,
                "other_calls": {},
            }
            expected["rru"] = float(expected["get_item"])  # a key gate is well under 4 KB
            for name, value in expected.items():
                if c.get(name) != value:
                    problems.append(f"{row['case']} {temp}: {name} {c.get(name)!r}, "
                                    f"not {value!r}")
    return problems


def test_each_request_makes_the_calls_the_endpoint_code_lays_out(
        figures: dict[str, Any]) -> None:
    assert [r["case"] for r in figures["rows"]] == [c.name for c in ingress_cost.QUICK]
    assert layout_problems(figures) == []
    # DynamoDB Local's own report agrees with the RRU derived from the item read.
    for row in figures["rows"]:
        assert row["cold"]["rru_reported"] == row["cold"]["rru"], row["case"]
        assert row["cold"]["emulator_ms"] > 0 and row["warm"]["emulator_ms"] > 0


def test_a_wrong_count_is_named() -> None:
    # The check above must be able to fail: a warm request that read its key again.
    fig = {"rows": [{"case": c.name, "cold": {}, "warm": {}} for c in ingress_cost.QUICK]}
    ok = {"status": 200, "get_item": 0, "rru": 0.0, "put_events": 1, "entries": 1,
          "chunks": 1, "s3_puts": 0, "other_calls": {}}
    fig["rows"][0]["cold"] = {**ok, "get_item": 1, "rru": 1.0}
    fig["rows"][0]["warm"] = {**ok, "get_item": 1, "rru": 1.0}
    problems = layout_problems(fig)
    assert "1 event warm: get_item 1, not 0" in problems
    assert "1 event warm: rru 1.0, not 0.0" in problems


def test_the_model_prices_the_counts_at_the_named_prices(figures: dict[str, Any]) -> None:
    rows = {r["case"]: r for r in figures["rows"]}
    # One small event, worked by hand from the published prices: API Gateway $1/M, Lambda
    # $0.20/M + 0.5 GB x 0.05 s x $0.0000133334, EventBridge $1/M; the key read cached.
    one = 1.00 + 0.20 + 0.5 * 0.05 * 0.0000133334 * 1e6 + 1.00
    assert rows["1 event"]["usd_per_million_events"] == pytest.approx(one)
    # Batching spreads the per-request prices: each event then costs about its entry.
    per_m = [rows[n]["usd_per_million_events"] for n in ("1 event", "batch of 10", "batch of 25")]
    assert per_m == sorted(per_m, reverse=True) and per_m[-1] > 1.00
    # The 300 KB event: one 512 KB API Gateway increment, one S3 put ($5/M), a stub entry.
    big = rows["300 KB event"]["usd_per_request"]
    assert big["api_gateway"] == pytest.approx(1e-6)
    assert big["s3"] == pytest.approx(5e-6) and big["eventbridge"] == pytest.approx(1e-6)
    load = figures["load"]
    assert load["stage_concurrency"] == pytest.approx(100 * 0.05)
    assert load["key_reads_per_s_at_stage_rate"] == pytest.approx(5 / 30)
    assert load["keys_before_partition_limit_at_account_rate"] == 3000 * 30 // 500
    assert load["put_events_quota_share"]["us-east-1"] == pytest.approx(100 / 10_000)


def test_the_meter_bills_a_read_of_a_missing_item(aws_session: AwsEmulators) -> None:
    # A strongly consistent GetItem is 1 RRU even when nothing is there; eventually, 0.5.
    aws_session.reset()
    client = aws_session.client("dynamodb")
    client.create_table(TableName="meter", BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    calls = ingress_cost.Calls()
    calls.attach(client)
    client.get_item(TableName="meter", Key={"pk": {"S": "none"}}, ConsistentRead=True)
    client.get_item(TableName="meter", Key={"pk": {"S": "none"}})
    assert calls.ops == {"dynamodb.GetItem": 2} and calls.rru == 1.5


def test_json_prints_the_figures() -> None:
    out = subprocess.run([sys.executable, "bench/ingress_cost.py", "--quick", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=110, check=True)
    fig = json.loads(out.stdout)
    assert fig["region"] == "us-east-1"
    assert layout_problems(fig) == []
