"""The stores under test: every contract test runs on SqliteStore and DynamoStore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.backends.aws.store import DynamoStore
from runtime.backends.aws.table import table_spec, ttl_spec
from runtime.backends.local.store import SqliteStore
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import Store
from tests.stores.helpers import START

TABLE = "stepkit-test-state"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture(params=["sqlite", pytest.param("dynamo", marks=pytest.mark.aws)],
                ids=["sqlite", "dynamo"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "db.sqlite3", clock=clock)
        yield sqlite
        sqlite.close()
    else:
        client = request.getfixturevalue("aws").client("dynamodb")  # started only for dynamo
        client.create_table(**table_spec(TABLE))
        client.update_time_to_live(**ttl_spec(TABLE))
        yield DynamoStore(TABLE, client=client, clock=clock)
