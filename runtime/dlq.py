"""Dead letters as the CLI and the dev server show them, whatever queue they sit in.

A dead-letter queue holds three kinds of body: a stepkit queue message (``"type":
"message"``), an EventBridge delivery of an app event (``"detail-type"``) and a Scheduler cron
fire (``"type": "cron"``). :func:`describe_body` reads what a person needs from each (kind,
function, run, step) without trusting it to be well-formed: a DLQ is where malformed bodies go.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from runtime.durations import format_instant


@dataclass(frozen=True)
class DeadLetter:
    """One message sitting in a dead-letter queue.

    Attributes:
        queue: The DLQ's name (locally: the function id whose queue it died in).
        message_id: The id ``stepkit dlq redrive --id`` takes.
        kind: ``start``, ``continue``... for stepkit messages; ``event <name>`` or ``cron``
            for deliveries from EventBridge or Scheduler; ``unreadable`` for anything else.
        function_id: The function it was for, when the body says.
        run_id: The run it was for, when the body says.
        step: The step key, when the body says.
        error: Why it was dead-lettered, where known (``stepkit_error``, EventBridge's
            ``ERROR_MESSAGE``, the local queue's last error).
        sent_ts: When it was sent to the queue it died in (epoch seconds).
        receive_count: How many times it was received (on SQS, listing it counts too).
        source: The queue a redrive sends it back to (``None``: unknown).
    """

    queue: str
    message_id: str
    kind: str
    function_id: str | None
    run_id: str | None
    step: str | None
    error: str | None
    sent_ts: float | None
    receive_count: int
    source: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the API's and ``stepkit dlq list --json``'s shape)."""
        out = asdict(self)
        out["sent_at"] = _iso(out.pop("sent_ts"))
        return out


def describe_body(body: str) -> tuple[str, str | None, str | None, str | None]:
    """Read ``(kind, function_id, run_id, step)`` from a queue body, never raising."""
    try:
        raw = json.loads(body)
    except ValueError:
        return "unreadable", None, None, None
    if not isinstance(raw, dict):
        return "unreadable", None, None, None
    if "detail-type" in raw:
        detail = raw.get("detail")
        if raw["detail-type"] == "stepkit/message" and isinstance(detail, dict):
            raw = detail  # a message routed to another function through the bus
        else:
            return f"event {raw['detail-type']}", None, None, None
    if raw.get("type") == "cron":
        return "cron", _text(raw.get("function_id")), None, None
    if raw.get("type") == "message":
        return (
            _text(raw.get("kind")) or "message",
            _text(raw.get("function_id")),
            _text(raw.get("run_id")),
            _text(raw.get("key")),
        )
    return "unreadable", None, None, None


def redrive_body(body: str) -> str:
    """The body to send back to the source queue.

    A stepkit message is marked as re-sent, so the worker handles it as a redelivery: if its
    commit landed before it died, that commit's outbox is sent again (the work is not redone),
    and otherwise it is performed as usual; what its failures counted towards giving up is
    dropped. Other bodies go back unchanged.
    """
    try:
        raw = json.loads(body)
    except ValueError:
        return body
    if not isinstance(raw, dict):
        return body
    message: Any = raw
    if raw.get("detail-type") == "stepkit/message":  # routed to this queue through the bus
        message = raw.get("detail")
    if not isinstance(message, dict) or message.get("type") != "message":
        return body
    payload = dict(message.get("payload") or {}) if isinstance(message.get("payload"),
                                                               dict) else {}
    # Its failures and deaths were counted towards giving up; a redrive starts them afresh
    # (the operator fixed what failed), or its first delivery would be its last.
    for counted in ("deferred", "returned"):
        payload.pop(counted, None)
    message["payload"] = {**payload, "resend": True}
    return json.dumps(raw, separators=(",", ":"))


def _iso(ts: float | None) -> str | None:
    return None if ts is None else format_instant(ts)


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def dlq_notice(count: int) -> str | None:
    """The one line ``stepkit runs`` ends with when dead-letter queues are not empty."""
    if count <= 0:
        return None
    noun = "message" if count == 1 else "messages"
    return f"{count} {noun} in dead-letter queues: stepkit dlq list"
