"""Lambda entry for the event router: waiters, cancel_on and the event log."""

from __future__ import annotations

from typing import Any

from runtime.discovery import load_app
from runtime.handlers.service import Service

_service: Service | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS event source entry for the router queue."""
    global _service
    if _service is None:
        _service = Service.from_env(load_app())
    return _service.handle_batch(event, context, router=True)
