"""The hostile-input bench (bench/hostile.py): every input in its catalogue handled locally.

The catalogue runs in about a second on the local backend, so the whole of it is tried here;
``bench/hostile.py --backend aws`` tries it on the emulators.
"""

from __future__ import annotations

from bench import hostile


def test_every_hostile_input_in_the_catalogue_is_handled_on_the_local_backend() -> None:
    outcomes, _ = hostile.bench("local")
    mishandled = {f"{o.probe.category}: {o.probe.name}": o.reasons for o in outcomes if o.reasons}
    assert mishandled == {}
    categories = {o.probe.category for o in outcomes}
    assert {"send refused", "send accepted", "poisoned waiters", "step outputs",
            "error messages", "step ids", "step data"} <= categories
    assert len(outcomes) >= 70


def test_an_input_handled_otherwise_than_expected_is_counted_with_its_reason() -> None:
    # The bench must be able to fail: an event it is told must be refused, which send
    # accepts, and one refused with other words than it is told.
    wrong = [hostile.Refused("an ordinary event", hostile.echo({"n": 1}), "never"),
             hostile.Refused("2**64", hostile.echo({"n": 2**64}), "event.data.m")]
    with hostile.harness("local", wrong) as h:
        outcomes = hostile.try_all(h, wrong)
    accepted, worded = (o.reasons for o in outcomes)
    assert len(accepted) == 1 and accepted[0].startswith("accepted as ['"), accepted
    assert len(worded) == 1 and worded[0].startswith(
        "message lacks 'event.data.m': event.data.n: 18446744073709551616 is outside"), worded
