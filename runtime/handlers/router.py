"""Lambda entry for the event router: waiters, cancel_on and the event log."""

from __future__ import annotations

from typing import Any

from runtime.handlers.service import LambdaHandler, deployed_entry

_entry: LambdaHandler | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """SQS event source entry for the router queue.

    The app, clients and Powertools wrappers are built once per container (cold start).
    """
    global _entry
    if _entry is None:
        _entry = deployed_entry(router=True)
    return _entry(event, context)
