"""runtime.control.bulk's pure parts: the pacer, operation ids and the API's filter."""

from __future__ import annotations

import pytest

from runtime.control import ControlError, UnreachableError
from runtime.control.bulk import (
    PUSHBACK_PATIENCE_S,
    Operation,
    Pacer,
    _patiently,
    filter_from_json,
)
from runtime.errors import PushbackError
from runtime.records import RunStatus


def test_the_pacer_spaces_actions_at_most_rate_a_second() -> None:
    now, slept = [100.0], []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()
    assert slept == [0.25, 0.25]  # the first goes at once
    now[0] += 10  # idle for a while: no burst is saved up beyond the next slot
    pacer.wait()
    pacer.wait()
    assert slept == [0.25, 0.25, 0.25]
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


def test_an_operation_id_fixes_its_start_and_its_replay_ids() -> None:
    op = Operation.begin(1_796_000_000.1234)
    assert op.began_at == 1_796_000_000.123  # whole milliseconds, from the ULID
    again = Operation.resume(op.id)
    assert again.replay_id("run-a") == op.replay_id("run-a") != op.replay_id("run-b")
    assert Operation.begin(1_796_000_000.1234).replay_id("run-a") != op.replay_id("run-a")
    with pytest.raises(ValueError, match="expected a ULID"):
        Operation.resume("not-an-id")


def test_the_api_filter_is_read_strictly() -> None:
    where = filter_from_json({"function_id": "charge", "status": "failed",
                              "since": "2026-03-02T08:00:00Z", "if": "event.data.n > 1"})
    assert (where.function_id, where.status, where.since, where.condition) == (
        "charge", RunStatus.FAILED, 1772438400.0, "event.data.n > 1")
    for bad in ({"status": "Nope"}, {"since": 5}, {"until": "yesterday"}):
        with pytest.raises(ValueError):
            filter_from_json(bad)


def test_a_run_pushed_back_is_tried_again_after_growing_pauses_not_counted_failed() -> None:
    slept: list[float] = []
    tries: list[str] = []

    def throttled_twice(run_id: str) -> str:
        tries.append(run_id)
        if len(tries) <= 2:
            try:
                raise PushbackError("ThrottlingException: Rate exceeded")
            except PushbackError as exc:
                raise UnreachableError("the table did not answer") from exc
        return "cancelled"

    assert _patiently(throttled_twice, "run-1", slept.append) == "cancelled"
    assert tries == ["run-1"] * 3 and slept == [0.5, 1.0]

    def refused(run_id: str) -> str:  # not a pushback: its failure is the outcome
        raise ControlError("function removed")

    slept.clear()
    with pytest.raises(ControlError, match="removed"):
        _patiently(refused, "run-2", slept.append)
    assert slept == []

    def always_throttled(run_id: str) -> str:
        raise UnreachableError("busy") from PushbackError("throttled")

    slept.clear()
    with pytest.raises(UnreachableError):
        _patiently(always_throttled, "run-3", slept.append)
    assert sum(slept) >= PUSHBACK_PATIENCE_S and max(slept) == 20.0
