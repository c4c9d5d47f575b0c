"""Lambda entry for a function's queue: each record is one invocation of the engine."""

from __future__ import annotations

from typing import Any

from runtime.discovery import load_app
from runtime.handlers.service import Service

_service: Service | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS event source entry; returns ``batchItemFailures`` for records to redeliver."""
    global _service
    if _service is None:
        _service = Service.from_env(load_app())
    return _service.handle_batch(event, context, router=False)
