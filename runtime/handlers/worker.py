"""Lambda entry for a function's queue: each record is one invocation of the engine."""

from __future__ import annotations

from typing import Any

from runtime.handlers.service import LambdaHandler, deployed_entry

_entry: LambdaHandler | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS event source entry; returns ``batchItemFailures`` for records to redeliver.

    The app, clients and Powertools wrappers are built once per container (cold start).
    """
    global _entry
    if _entry is None:
        _entry = deployed_entry(router=False)
    return _entry(event, context)
