"""The WindowStore contract (batch windows: header, seats, members), on both stores."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runtime.backends.aws.dynamo import CONFLICT_TRIES
from runtime.backends.aws.store import DynamoStore
from runtime.backends.aws.table import table_spec
from runtime.flow import Window
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import Store
from tests.stores.conftest import TABLE
from tests.stores.helpers import START
from tests.stores.test_store_contract import _race

S = "batch:fn"
UNTIL = START + 3600


def _ev(n: int, size: int = 0) -> dict[str, Any]:
    return {"id": f"e{n}", "name": "row/added", "data": {"n": n, "pad": "x" * size}, "ts": 0}


def _open(store: Store, run_id: str = "r1", key: str = "k", cap: int = 3) -> Window:
    window = Window(run_id, cap=cap, first_at=START, due=START + 5, version=1)
    assert store.open_window(S, key, window)
    return window


def test_a_window_never_opened_reads_empty_and_opens_once_per_version(store: Store) -> None:
    assert store.window(S, "k") == Window()
    wins = _race(lambda k: store.open_window(S, "k", Window(f"r{k}", due=START, version=1)))
    assert len(wins) == 1 and store.window(S, "k").run_id == f"r{wins[0]}"
    assert not store.open_window(S, "k", Window("late", version=1))  # version 1 is taken
    assert store.close_window(S, "k", f"r{wins[0]}") is not None
    assert store.open_window(S, "k", Window("r9", due=START, version=3))  # after the close
    assert store.window(S, "k") == Window("r9", due=START, version=3)


def test_seats_are_counted_up_to_the_cap_and_byte_limit(store: Store) -> None:
    _open(store)
    assert [store.take_seat(S, "k", "r1", 100, 1000) for _ in range(4)] == [1, 2, 3, None]
    _open(store, "r2", "j", cap=10)
    assert store.take_seat(S, "j", "r2", 900, 1000) == 1
    assert store.take_seat(S, "j", "r2", 200, 1000) is None  # 1,100 bytes would not fit
    assert store.take_seat(S, "j", "other-run", 10, 1000) is None  # not its window
    assert store.window(S, "j").count == 1 and store.window(S, "j").bytes == 900


def test_racing_seat_takers_get_distinct_seats(store: Store) -> None:
    _open(store, cap=5)
    seats: list[int | None] = []
    _race(lambda k: seats.append(store.take_seat(S, "k", "r1", 10, 10_000)) or True)
    assert sorted(s for s in seats if s is not None) == [1, 2, 3, 4, 5]
    assert seats.count(None) == 3


def test_an_event_joins_once_and_a_copy_learns_its_run(store: Store) -> None:
    _open(store)
    assert store.join_window(S, "r1", 1, _ev(1), member_until=UNTIL,
                             seat_until=UNTIL).run_id == "r1"
    copy = store.join_window(S, "r1", 2, _ev(1), member_until=UNTIL, seat_until=UNTIL)
    assert copy.duplicate and copy.run_id == "r1"
    assert store.window_member(S, "e1") == "r1" and store.window_member(S, "e2") is None
    assert store.window_seats(S, "r1", 3) == {1: _ev(1)}  # the copy filled nothing


def test_a_membership_lapses(store: Store, clock: FakeClock) -> None:
    _open(store)
    store.join_window(S, "r1", 1, _ev(1), member_until=START + 10, seat_until=UNTIL)
    clock.advance(11)
    assert store.window_member(S, "e1") is None
    assert store.join_window(S, "r1", 2, _ev(1), member_until=UNTIL,
                             seat_until=UNTIL).run_id == "r1"


def test_close_stops_seats_and_a_tombstoned_seat_cannot_be_filled(store: Store) -> None:
    _open(store)
    assert store.take_seat(S, "k", "r1", 10, 1000) == 1
    assert store.take_seat(S, "k", "r1", 10, 1000) == 2
    store.join_window(S, "r1", 1, _ev(1), member_until=UNTIL, seat_until=UNTIL)
    closed = store.close_window(S, "k", "r1")
    assert closed is not None and closed.closed and closed.count == 2
    assert store.close_window(S, "k", "r1") is None  # closed once
    assert store.take_seat(S, "k", "r1", 10, 1000) is None
    assert not store.kill_seat(S, "r1", 1, UNTIL)  # filled: stays filled
    assert store.kill_seat(S, "r1", 2, UNTIL) and store.kill_seat(S, "r1", 2, UNTIL)
    late = store.join_window(S, "r1", 2, _ev(2), member_until=UNTIL, seat_until=UNTIL)
    assert late.lost and store.window_member(S, "e2") is None  # nothing of it landed
    assert store.window_seats(S, "r1", 2) == {1: _ev(1), 2: {}}


def test_a_seat_is_filled_or_tombstoned_once_under_a_race(store: Store) -> None:
    _open(store, cap=8)
    for n in range(1, 9):
        assert store.take_seat(S, "k", "r1", 10, 10_000) == n

    def attempt(k: int) -> bool:
        seat = k // 2 + 1  # two racers per seat: an event's join and the close's tombstone
        if k % 2:
            return store.kill_seat(S, "r1", seat, UNTIL)
        return not store.join_window(S, "r1", seat, _ev(seat), member_until=UNTIL,
                                     seat_until=UNTIL).lost

    wins = _race(attempt)
    seats = store.window_seats(S, "r1", 4)
    assert sorted(wins) == sorted(k for k in range(8) if (seats[k // 2 + 1] != {}) == (k % 2 == 0))


def test_marks_need_their_window_state(store: Store) -> None:
    _open(store)
    assert not store.mark_window(S, "k", "r1", started=True)  # not closed yet
    assert store.mark_window(S, "k", "r1", round=2, expect_round=1)
    assert not store.mark_window(S, "k", "r1", round=2, expect_round=1)  # moved already
    assert store.window(S, "k").round == 2
    store.close_window(S, "k", "r1")
    assert not store.mark_window(S, "k", "r1", round=3, expect_round=2)  # closed
    assert store.mark_window(S, "k", "r1", started=True)
    assert replace(store.window(S, "k"), version=0) == Window(
        "r1", cap=3, first_at=START, due=START + 5, round=2, closed=True, started=True)


def test_the_cap_only_rises_while_the_window_is_open(store: Store) -> None:
    _open(store, cap=1)
    assert store.take_seat(S, "k", "r1", 10, 1000) == 1
    assert store.take_seat(S, "k", "r1", 10, 1000) is None
    assert store.mark_window(S, "k", "r1", cap=2)
    assert not store.mark_window(S, "k", "r1", cap=2)  # raised already
    assert store.take_seat(S, "k", "r1", 10, 1000) == 2
    store.close_window(S, "k", "r1")
    assert not store.mark_window(S, "k", "r1", cap=5)


def test_adopted_members_keep_those_that_exist(store: Store) -> None:
    _open(store)
    store.join_window(S, "r1", 1, _ev(1), member_until=UNTIL, seat_until=UNTIL)
    store.adopt_members(S, [("e1", "old", UNTIL), ("e2", "old", UNTIL)])
    assert store.window_member(S, "e1") == "r1" and store.window_member(S, "e2") == "old"


def test_list_windows_lists_open_ones_sorted_by_key(store: Store) -> None:
    for n, key in enumerate(["b", "", "a", "c"]):
        _open(store, f"r{n}", key)
    store.close_window(S, "c", "r3")
    listed = store.list_windows(S)
    assert [(k, w.run_id) for k, w in listed] == [("", "r1"), ("a", "r2"), ("b", "r0")]
    assert [k for k, _ in store.list_windows(S, limit=2)] == ["", "a"]
    assert store.list_windows("batch:other") == []


@pytest.mark.aws
def test_a_join_caught_in_a_conflicting_transaction_is_lost_not_an_error(
        request: pytest.FixtureRequest, clock: FakeClock) -> None:
    real = request.getfixturevalue("aws").client("dynamodb")
    real.create_table(**table_spec(TABLE))
    calls: list[str] = []

    class Conflicting:
        """The client, but every transaction meets another one on the seat (as a close)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def transact_write_items(self, **kwargs: Any) -> Any:
            calls.append("tx")
            raise ClientError({"Error": {"Code": "TransactionCanceledException",  # type: ignore[typeddict-unknown-key]
                                         "Message": "conflict"},
                               "CancellationReasons": [{"Code": "None"},
                                                       {"Code": "TransactionConflict"}]},
                              "TransactWriteItems")

    store = DynamoStore(TABLE, client=real, clock=clock)
    _open(store)
    store.client = Conflicting()  # type: ignore[assignment]
    joined = store.join_window(S, "r1", 1, _ev(1), member_until=UNTIL, seat_until=UNTIL)
    store.client = real
    assert joined.lost and len(calls) == CONFLICT_TRIES  # moved: read again, never a failure
    assert store.window_member(S, "e1") is None
