"""The handlers' SQS batch loop answers as Powertools' ``process_partial_response`` does.

As its ``BatchProcessor`` with ``raise_on_entire_batch_failure=False``: a batch whose every
record failed is answered, not raised (a raise is a Lambda invocation error, which alarms and
slows the queue's scale-up on routine pushback).
"""

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


def _powertools(event: dict[str, Any]) -> dict[str, Any]:
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(powertools_response(event=event, record_handler=_handler, processor=processor))


@pytest.mark.parametrize("bodies", [("ok",), ("ok", "bad", "ok", "bad"), ("bad", "ok"),
                                    ("bad",), ("bad", "bad")])
def test_failed_records_are_reported_as_powertools_reports_them(bodies: tuple[str, ...]) -> None:
    assert process_partial_response(_event(*bodies), _handler) == _powertools(_event(*bodies))


def test_a_batch_where_every_record_fails_lists_every_record_and_raises_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="stepkit"):
        result = process_partial_response(_event("bad", "bad"), _handler)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}]}
    # No invocation error carries the records' errors any more: each is logged instead.
    assert [r.getMessage() for r in caplog.records] == [
        "record m0 failed; SQS redelivers it", "record m1 failed; SQS redelivers it"]
    assert "RuntimeError: record m1 is bad" in caplog.text


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
