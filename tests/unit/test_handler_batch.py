"""The handlers' SQS batch loop answers as Powertools' ``process_partial_response`` does."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
)
from aws_lambda_powertools.utilities.batch import (
    process_partial_response as powertools_response,
)
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from runtime.handlers.batch import SqsRecord, process_partial_response


def _event(*bodies: str) -> dict[str, Any]:
    return {"Records": [
        {"messageId": f"m{i}", "body": body, "attributes": {"ApproximateReceiveCount": "1"}}
        for i, body in enumerate(bodies)
    ]}


def _handler(record: Any) -> None:
    if record.body == "bad":
        raise RuntimeError(f"record {record.message_id} is bad")


@pytest.mark.parametrize("bodies", [("ok",), ("ok", "bad", "ok", "bad"), ("bad", "ok")])
def test_failed_records_are_reported_as_powertools_reports_them(bodies: tuple[str, ...]) -> None:
    ours = process_partial_response(_event(*bodies), _handler)
    theirs = powertools_response(
        event=_event(*bodies), record_handler=_handler,
        processor=BatchProcessor(event_type=EventType.SQS),
    )
    assert ours == dict(theirs)


def test_a_batch_where_every_record_fails_fails_with_powertools_error() -> None:
    with pytest.raises(BatchProcessingError) as ours:
        process_partial_response(_event("bad", "bad"), _handler)
    with pytest.raises(BatchProcessingError) as theirs:
        powertools_response(event=_event("bad", "bad"), record_handler=_handler,
                            processor=BatchProcessor(event_type=EventType.SQS))
    assert _unframed(ours.value) == _unframed(theirs.value)
    assert "RuntimeError: record m1 is bad" in _unframed(ours.value)


def _unframed(exc: BaseException) -> list[str]:
    """The error's text without its tracebacks' frames (which name the two loops' files)."""
    return [line for line in str(exc).splitlines() if not line.startswith(" ")]


@pytest.mark.parametrize("event", [{}, {"Records": []}, {"Records": {"m0": {}}}])
def test_an_event_without_records_fails_with_powertools_error(event: dict[str, Any]) -> None:
    with pytest.raises(BatchProcessingError) as ours:
        process_partial_response(event, _handler)
    with pytest.raises(BatchProcessingError) as theirs:
        powertools_response(event=event, record_handler=_handler,
                            processor=BatchProcessor(event_type=EventType.SQS))
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


def test_a_record_reads_its_body_id_and_attributes() -> None:
    raw = _event("hello")["Records"][0]
    record = SqsRecord(raw)
    assert (record.body, record.message_id, record.raw_event) == ("hello", "m0", raw)
