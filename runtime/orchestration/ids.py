"""Run ids: ULIDs, sortable by time, derived deterministically where duplicates must collapse."""

from __future__ import annotations

import hashlib
import os

from ulid import ULID


def _ulid(ms: int, entropy: bytes) -> str:
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + entropy[:10]))


def new_run_id(now: float) -> str:
    """A fresh run id (reruns, manual starts)."""
    return _ulid(int(now * 1000), os.urandom(10))


def run_id_for_event(function_id: str, event_id: str) -> str:
    """The run id for ``function_id`` triggered by an event id: the same for every delivery.

    It depends on nothing else (not the event's ``ts``), so a duplicate delivery or a re-send
    of the same event id finds the run already created and starts nothing. It is ULID-shaped
    but not time-ordered; listings order runs by their ``created_at``.
    """
    digest = hashlib.sha256(f"{function_id}\x00{event_id}".encode()).digest()
    return str(ULID.from_bytes(digest[:16]))


def child_run_id(parent_run_id: str, step_key: str, now: float) -> str:
    """The run id of the child started by an ``invoke`` step."""
    digest = hashlib.sha256(f"{parent_run_id}\x00{step_key}".encode()).digest()
    return _ulid(int(now * 1000), digest)
