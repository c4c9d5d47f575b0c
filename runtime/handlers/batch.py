"""An SQS batch as a Lambda partial batch response: each record on its own, failures reported.

What Powertools' ``process_partial_response`` with a ``BatchProcessor(EventType.SQS)`` does,
in the same shape and with the same error when every record fails, without its import: the
batch package loads every event source's data class and asyncio (about 15 % of a bare
``import boto3``) for a loop over ``event["Records"]``. ``bench/cold_import.py`` measures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class SqsRecord:
    """One record of an SQS event, read the way Powertools' ``SQSRecord`` reads it.

    Args:
        raw_event: The record as Lambda delivers it.
    """

    def __init__(self, raw_event: dict[str, Any]) -> None:
        self.raw_event = raw_event

    @property
    def body(self) -> str:
        """The message body."""
        return str(self.raw_event["body"])

    @property
    def message_id(self) -> str:
        """The SQS message id, which names the record in ``batchItemFailures``."""
        return str(self.raw_event["messageId"])


def process_partial_response(
    event: dict[str, Any], record_handler: Callable[[SqsRecord], None]
) -> dict[str, Any]:
    """Handle each record of an SQS event; the records that raised are redelivered.

    Returns:
        ``{"batchItemFailures": [{"itemIdentifier": <message id>}, ...]}``, empty when
        every record succeeded.

    Raises:
        BatchProcessingError: Every record failed, or the event has no records (Powertools'
            own errors, so the invocation fails as a whole, as with its processor; imported
            only then).
    """
    records = event.get("Records", [])
    if not records or not isinstance(records, list):
        # Imported only on these paths: it imports the whole batch package (see above).
        from aws_lambda_powertools.utilities.batch.exceptions import UnexpectedBatchTypeError

        raise UnexpectedBatchTypeError(
            "Unexpected batch event type. Possible values are: SQS, KinesisDataStreams, "
            "DynamoDBStreams, Kafka"
        )
    failed: list[SqsRecord] = []
    errors: list[ExcInfo] = []
    for raw in records:
        record = SqsRecord(raw)
        try:
            record_handler(record)
        except Exception as exc:  # the record is redelivered, as with Powertools' processor
            failed.append(record)
            errors.append((type(exc), exc, sys.exc_info()[2]))
    if failed and len(failed) == len(records):
        from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

        raise BatchProcessingError(
            msg=f"All records failed processing. {len(errors)} individual errors logged "
                "separately below.",
            child_exceptions=errors,  # type: ignore[arg-type]
        )
    return {"batchItemFailures": [{"itemIdentifier": r.message_id} for r in failed]}
