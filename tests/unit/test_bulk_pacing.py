"""runtime.control.bulk's pure parts: the pacer, operation ids and the API's filter."""

from __future__ import annotations

import pytest

from runtime.control.bulk import Operation, Pacer, filter_from_json
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
