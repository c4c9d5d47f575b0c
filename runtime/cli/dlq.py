"""``stepkit dlq list`` and ``dlq redrive``: what sits in the dead-letter queues."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from runtime.cli.base import aws_option, cli, control_plane, url_option
from runtime.cli.output import Part, Table, answer, fmt_time, plain, say


@cli.group()
def dlq() -> None:
    """Messages in the dead-letter queues: list them, redrive them."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@url_option
@aws_option
def dlq_list(as_json: bool, url: str, use_aws: bool) -> None:
    """List what sits in the dead-letter queues (the messages stay there)."""
    found = control_plane(url, use_aws).dead_letters()
    answer(found, as_json, dead_letters_view)


@dlq.command("redrive")
@click.option("--queue", default=None, help="Only this dead-letter queue (as `dlq list` names it).")
@click.option("--id", "message_id", default=None, help="Only this message id.")
@url_option
@aws_option
def dlq_redrive(queue: str | None, message_id: str | None, url: str, use_aws: bool) -> None:
    """Send dead-lettered messages back to their queues; each leaves the DLQ once sent."""
    redriven = control_plane(url, use_aws).redrive(queue=queue, message_id=message_id)
    noun = "message" if len(redriven) == 1 else "messages"
    say(f"redrove {len(redriven)} {noun}")


def dead_letters_view(messages: Sequence[dict[str, Any]]) -> list[Part]:
    """The ``stepkit dlq list`` table."""
    if not messages:
        return ["no dead-lettered messages"]
    rows = [
        [
            m["queue"],
            m["message_id"],
            m["kind"],
            m.get("function_id") or "-",
            m.get("run_id") or "-",
            m.get("step") or "-",
            str(m.get("receive_count", "-")),
            fmt_time(m.get("sent_at")),
            (m.get("error") or "").splitlines()[0][:80] if m.get("error") else "",
        ]
        for m in messages
    ]
    headers = ["QUEUE", "ID", "KIND", "FUNCTION", "RUN", "STEP", "RECEIVES", "SENT", "ERROR"]
    return [Table(headers, rows)]


def render_dead_letters(messages: Sequence[dict[str, Any]]) -> str:
    """Render the ``stepkit dlq list`` table as plain text."""
    return plain(dead_letters_view(messages))
