"""SqliteQueue: delays, SQS-style visibility leases, releases and the dead letters."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.backends.local.queue import SqliteQueue
from runtime.orchestration.clock import FakeClock
from runtime.records import Message, MessageKind

T0 = 1_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteQueue]:
    q = SqliteQueue(tmp_path / "db.sqlite3", clock=clock, visibility_timeout=30, max_receives=3)
    yield q
    q.close()


def msg(mid: str, due: float | None = None) -> Message:
    return Message(MessageKind.CONTINUE, "fn", "r1", id=mid, version=1, due=due)


def ids(q: SqliteQueue, n: int = 10) -> list[str]:
    return [d.message.id for d in q.receive(n)]


def test_message_round_trips(queue: SqliteQueue) -> None:
    m = Message(MessageKind.START, "fn", "r1", id="s", payload={"events": [{"id": "e"}]})
    queue.send([m])
    [d] = queue.receive(5)
    assert d.message == m
    assert d.receive_count == 1


def test_delayed_message_waits_for_its_due_time(queue: SqliteQueue, clock: FakeClock) -> None:
    queue.send([msg("late", due=T0 + 60), msg("now")])
    [now] = queue.receive(10)
    assert now.message.id == "now"
    queue.delete(now)
    clock.advance(59)
    assert ids(queue) == []
    assert queue.visible_count() == 0
    clock.advance(1)
    assert queue.visible_count() == 1
    assert ids(queue) == ["late"]


def test_earliest_due_first_and_max_n(queue: SqliteQueue, clock: FakeClock) -> None:
    queue.send([msg("c", due=T0 - 1), msg("a", due=T0 - 3), msg("b", due=T0 - 2)])
    assert ids(queue, 2) == ["a", "b"]
    assert ids(queue, 2) == ["c"]


def test_unfinished_message_is_redelivered_after_visibility_timeout(
    queue: SqliteQueue, clock: FakeClock
) -> None:
    queue.send([msg("m")])
    [first] = queue.receive(1)  # the worker "dies": no delete, no release
    clock.advance(29)
    assert queue.receive(1) == []
    clock.advance(1)
    [again] = queue.receive(1)
    assert again.message == first.message
    assert again.receive_count == 2


def test_deleted_message_is_gone(queue: SqliteQueue, clock: FakeClock) -> None:
    queue.send([msg("m")])
    [d] = queue.receive(1)
    queue.delete(d)
    clock.advance(3600)
    assert queue.receive(1) == []
    assert queue.pending_count() == 0


def test_release_then_dead_after_max_receives(queue: SqliteQueue, clock: FakeClock) -> None:
    queue.send([msg("poison")])
    [d1] = queue.receive(1)
    assert queue.release(d1, delay=10, error="boom") is False
    assert queue.receive(1) == []  # not before the delay
    clock.advance(10)
    [d2] = queue.receive(1)
    assert queue.release(d2) is False
    [d3] = queue.receive(1)
    assert d3.receive_count == 3
    assert queue.release(d3, error="boom") is True  # third of max_receives=3
    clock.advance(3600)
    assert queue.receive(1) == []
    assert [m.id for m in queue.dead_letters()] == ["poison"]
    assert queue.pending_count() == 0


def test_worker_dying_on_the_last_receive_dead_letters(
    queue: SqliteQueue, clock: FakeClock
) -> None:
    queue.send([msg("m")])
    for _ in range(3):
        assert len(queue.receive(1)) == 1
        clock.advance(30)  # lease expires each time
    assert queue.receive(1) == []
    assert [m.id for m in queue.dead_letters()] == ["m"]


def test_release_with_an_outdated_receipt_is_ignored(
    queue: SqliteQueue, clock: FakeClock
) -> None:
    queue.send([msg("m")])
    [old] = queue.receive(1)
    clock.advance(30)
    [current] = queue.receive(1)  # another worker took it over
    queue.release(old)  # the first worker's late failure must not expose it
    assert queue.receive(1) == []
    queue.delete(current)
    assert queue.pending_count() == 0


def test_resend_of_same_id_survives_delete_of_the_delivery(
    queue: SqliteQueue, clock: FakeClock
) -> None:
    # The orchestrator re-enqueues an early message (same id, later due) and the worker then
    # deletes the delivery it handled: the re-sent copy must remain.
    queue.send([msg("m")])
    [d] = queue.receive(1)
    queue.send([msg("m", due=T0 + 100)])
    queue.delete(d)
    clock.advance(100)
    assert ids(queue) == ["m"]


def test_no_message_is_claimed_twice_by_concurrent_receivers(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "db.sqlite3"
    SqliteQueue(path, clock=clock).send([msg(f"m{i}") for i in range(200)])
    got: list[str] = []
    lock = threading.Lock()

    def drain() -> None:
        q = SqliteQueue(path, clock=clock)  # its own connections, like another process
        while batch := q.receive(3):
            with lock:
                got.extend(d.message.id for d in batch)
        q.close()

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"m{i}" for i in range(200))


def test_invalid_settings_are_rejected(tmp_path: Path, clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="visibility_timeout"):
        SqliteQueue(tmp_path / "db", clock=clock, visibility_timeout=0)
    with pytest.raises(ValueError, match="max_receives"):
        SqliteQueue(tmp_path / "db", clock=clock, max_receives=0)
