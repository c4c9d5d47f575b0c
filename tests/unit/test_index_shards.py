"""The sharded keys of the listing indexes: stable, spread, and every shard listed."""

from __future__ import annotations

import collections
import uuid

from runtime.backends.aws import table as t
from runtime.records import RunStatus


def test_a_shard_is_a_stable_hash_of_the_id() -> None:
    # crc32, not hash(): another process (another Lambda container) must find the same shard.
    assert [t.shard(i) for i in ("r1", "r2", "e1")] == [1, 3, 7]
    assert t.function_pk("fn", "r1") == "FN#fn#1"
    assert t.status_pk(RunStatus.RUNNING, "r1") == "STATUS#Running#1"
    assert t.status_pk(RunStatus.COMPLETED, "r1") == "STATUS#Completed#1"  # same shard
    assert t.day_pk("2026-03-02", "e1") == "EVENTS#2026-03-02#7"


def test_shard_pks_name_every_shard_a_key_is_written_to() -> None:
    pks = t.shard_pks("FN#fn")
    assert len(pks) == t.INDEX_SHARDS == 8
    assert {t.function_pk("fn", uuid.uuid4().hex) for _ in range(200)} == set(pks)


def test_ids_spread_evenly_enough_that_no_shard_takes_much_over_its_share() -> None:
    counts = collections.Counter(t.shard(uuid.uuid5(uuid.NAMESPACE_URL, str(i)).hex)
                                 for i in range(80_000))
    share = 80_000 / t.INDEX_SHARDS
    assert max(counts.values()) < 1.05 * share


def test_the_run_item_and_a_status_change_carry_the_runs_shard() -> None:
    from tests.stores.helpers import make_run

    item = t.run_item(make_run("r2", "fn"), None)
    assert (item["gsi1pk"], item["gsi2pk"]) == ({"S": "FN#fn#3"}, {"S": "STATUS#Running#3"})
    assert t.run_fields("r2", status=RunStatus.FAILED)["gsi2pk"] == {"S": "STATUS#Failed#3"}
    assert "gsi2pk" not in t.run_fields("r2", attempt=1)  # no status: the index is untouched


def test_the_event_index_holds_keys_only() -> None:
    [events] = [i for i in t.table_spec("x")["GlobalSecondaryIndexes"]
                if i["IndexName"] == t.GSI_EVENTS_BY_DAY]
    assert events["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    item = t.event_item({"id": "e1", "name": "n"}, 1_772_438_400.0, 60)
    assert item["gsi3pk"] == {"S": "EVENTS#2026-03-02#7"}
