"""Statuses read the same everywhere: runs and steps are capitalized alike."""

from runtime.records import RunStatus, StepStatus


def test_run_and_step_statuses_share_one_casing() -> None:
    for status in [*RunStatus, *StepStatus]:
        assert status.value[0].isupper() and status.value[1:].islower(), status


def test_a_step_status_written_lowercase_before_still_reads() -> None:
    assert StepStatus("completed") is StepStatus.COMPLETED
    assert StepStatus("Sleeping") is StepStatus.SLEEPING
    try:
        StepStatus("snoozing")
    except ValueError as exc:
        assert "snoozing" in str(exc)
    else:
        raise AssertionError("an unknown status was accepted")
