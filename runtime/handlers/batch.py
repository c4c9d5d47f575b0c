"""An SQS batch as a Lambda partial batch response: each record on its own, failures reported.

What Powertools' ``process_partial_response`` with a
``BatchProcessor(EventType.SQS, raise_on_entire_batch_failure=False)`` does, in the same shape,
without its import: the batch package loads every event source's data class and asyncio
(about 15 % of a bare ``import boto3``) for a loop over ``event["Records"]``.
``bench/cold_import.py`` measures.

A batch whose every record failed is answered like any other, every record listed in
``batchItemFailures``, never raised (Powertools' default raises): SQS redelivers the
records either way, but a raise is a Lambda invocation *error*, and with a batch size of 1
every record that met AWS pushback (throttling) would count as one. That made a Lambda
``Errors`` alarm page on routine pushback, and invocation errors may make Lambda back off the
queue's pollers as a backlog builds (AWS Lambda guide, "Handling errors for an SQS event
source"; ARCHITECTURE.md, "Monitoring").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("stepkit")


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
        every record succeeded, every record when all failed.

    Raises:
        UnexpectedBatchTypeError: The event has no records, or they are not a list
            (Powertools' own error, a ``BatchProcessingError``, imported only then): that is
            no SQS event, and the invocation fails as a whole, as with its processor.
    """
    records = event.get("Records", [])
    if not records or not isinstance(records, list):
        # Imported only on this path: it imports the whole batch package (see above).
        from aws_lambda_powertools.utilities.batch.exceptions import UnexpectedBatchTypeError

        raise UnexpectedBatchTypeError(
            "Unexpected batch event type. Possible values are: SQS, KinesisDataStreams, "
            "DynamoDBStreams, Kafka"
        )
    failed: list[SqsRecord] = []
    for raw in records:
        record = SqsRecord(raw)
        try:
            record_handler(record)
        except Exception:  # the record is redelivered, as with Powertools' processor
            # Logged here: no invocation error carries it (Powertools logs it at debug only).
            _log.warning("record %s failed; SQS redelivers it", record.message_id,
                         exc_info=True)
            failed.append(record)
    return {"batchItemFailures": [{"itemIdentifier": r.message_id} for r in failed]}
