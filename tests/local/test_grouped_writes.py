"""A step of a local run is one write transaction: its commit, the sends of its outbox, the
ack of its message and the lease of the next land together, or not at all."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from runtime import App, Context, TriggerEvent
from runtime.backends.local import LocalBackend
from runtime.orchestration.clock import FakeClock
from runtime.records import Message

T0 = 1_780_000_000.0


class Crash(BaseException):
    """The worker dies here."""


def linear_app(steps: int, calls: list[int]) -> App:
    app = App("grouped")

    def work(i: int) -> int:
        calls.append(i)
        return i

    @app.function(id="linear", trigger=TriggerEvent("go"))
    def linear(ctx: Context) -> int:
        return sum(ctx.step.run(f"s{i}", lambda i=i: work(i)) for i in range(steps))

    return app


def test_a_step_is_one_write_transaction(tmp_path: Path) -> None:
    calls: list[int] = []
    backend = LocalBackend(linear_app(20, calls), tmp_path / "db.sqlite3", clock=FakeClock(T0))
    statements: list[str] = []
    backend.store.db.connection().set_trace_callback(statements.append)
    backend.send({"name": "go"})  # routed in one write: timeline, start message, dedup log
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) == 1
    statements.clear()
    backend.run_until_idle()
    backend.store.db.connection().set_trace_callback(None)
    [run] = backend.list_runs()
    assert run.status == "Completed" and run.output == sum(range(20))
    begins = sum(s.startswith("BEGIN IMMEDIATE") for s in statements)
    # The first receive and the run's creation (before any user code runs) are writes of
    # their own; after that every message is one write: its commit, the next message, its
    # own ack and the lease of the next (20 steps and the handler's return: 21 commits).
    # The last, empty receive only reads.
    assert begins == 2 + 21
    assert calls == list(range(20))
    backend.close()


def test_a_crash_after_a_commit_lands_nothing_of_it(tmp_path: Path) -> None:
    calls: list[int] = []
    clock = FakeClock(T0)
    backend = LocalBackend(linear_app(3, calls), tmp_path / "db.sqlite3", clock=clock,
                           visibility_timeout=60)
    queue = backend.orchestrator.queue
    crashed: list[bool] = []

    class CrashingQueue:
        """Dies on sending the outbox of the second step's commit."""

        def send(self, messages: Sequence[Message]) -> None:
            if calls == [0, 1] and not crashed:
                crashed.append(True)
                raise Crash
            queue.send(messages)

    backend.orchestrator.queue = CrashingQueue()
    backend.send({"name": "go"})
    with pytest.raises(Crash):
        backend.run_until_idle()
    state = backend.get_run(backend.list_runs()[0].run_id)
    assert state is not None
    # The commit of s1 was rolled back with its sends; s0 (the message before) landed.
    assert sorted(state.steps) == ["s0"] and state.run.version == 1
    assert backend.queue.visible_count() == 0  # its message is still leased
    [row] = backend.store.db.connection().execute(
        "SELECT receive_count FROM queue WHERE dead = 0").fetchall()
    assert row == (1,)

    clock.advance(61)  # the dead worker's lease runs out
    backend.run_until_idle()
    state = backend.get_run(state.run.run_id)
    assert state is not None and state.run.status == "Completed" and state.run.output == 3
    assert calls == [0, 1, 1, 2]  # s1 ran again (steps are at least once), recorded once
    assert backend.queue.pending_count() == 0 and backend.dead_letters() == []
    backend.close()


def test_no_step_runs_while_its_worker_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    app = App("locks")
    free: list[bool] = []

    def write_lock_is_free() -> None:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            free.append(True)
        except sqlite3.OperationalError:
            free.append(False)
        finally:
            other.close()

    @app.function(id="probe", trigger=TriggerEvent("go"))
    def probe(ctx: Context) -> None:
        for i in range(5):
            ctx.step.run(f"p{i}", write_lock_is_free)

    backend = LocalBackend(app, path, clock=FakeClock(T0))
    backend.send({"name": "go"})
    backend.run_until_idle()
    assert free == [True] * 5
    backend.close()


def test_a_failure_after_a_commit_keeps_the_commit_and_redoes_only_the_sends(
    tmp_path: Path,
) -> None:
    calls: list[int] = []
    backend = LocalBackend(linear_app(3, calls), tmp_path / "db.sqlite3", clock=FakeClock(T0))
    queue = backend.orchestrator.queue
    failed: list[bool] = []

    class FailingQueue:
        """Fails once, sending the outbox of the second step's commit."""

        def send(self, messages: Sequence[Message]) -> None:
            if calls == [0, 1] and not failed:
                failed.append(True)
                raise OSError("queue unavailable")
            queue.send(messages)

    backend.orchestrator.queue = FailingQueue()
    backend.send({"name": "go"})
    backend.run_until_idle()  # the failed message is sent again, due after its backoff
    backend.clock.advance("2m")  # type: ignore[attr-defined]
    backend.run_until_idle()
    [run] = backend.list_runs()
    assert failed and run.status == "Completed" and run.output == 3
    # What one write at a time would have left: s1's commit landed before the send failed,
    # so its redelivery re-sent the outbox without running s1 again.
    assert calls == [0, 1, 2]
    assert backend.queue.pending_count() == 0 and backend.dead_letters() == []
    backend.close()
