"""Fake side effects for the examples: they log and record instead of emailing or charging."""

from __future__ import annotations

import logging
import os
import zlib
from typing import Any

from runtime import secret

log = logging.getLogger("functions.fakes")
SENT: list[dict[str, Any]] = []  # what the fakes "did", for tests and demos


def record(action: str, **details: Any) -> dict[str, Any]:
    """Log an action and remember it."""
    entry = {"action": action, **details}
    SENT.append(entry)
    log.info("%s %s", action, details)
    return entry


def get_user(user_id: str) -> dict[str, Any]:
    """A user record, as a database would return it."""
    return {"id": user_id, "email": f"{user_id}@example.com", "name": user_id.title()}


def send_email(to: str, template: str) -> dict[str, Any]:
    """'Send' an email, from ``EMAIL_FROM`` with the ``EMAIL_API_KEY`` secret.

    The key is used, never returned: a step's result is recorded in the run's history.
    """
    sender = os.environ.get("EMAIL_FROM", "dev@localhost")
    api_key = secret("EMAIL_API_KEY", default="dev-key")  # locally: $EMAIL_API_KEY if set
    return record("email", to=to, template=template, sender=sender, signed=bool(api_key))


def has_been_active(user_id: str) -> bool:
    """Whether the user did anything since signing up (deterministic per user id)."""
    return zlib.crc32(user_id.encode()) % 2 == 0


def stock_level(sku: str) -> int:
    """Units in stock; SKUs starting with 'BO' are on backorder."""
    return 0 if sku.upper().startswith("BO") else 12


def authorize_payment(order_id: str, cents: int) -> dict[str, Any]:
    """A payment authorization."""
    return {"order_id": order_id, "authorized": cents, "auth_id": f"auth_{order_id}"}
