"""``stepkit pause`` and ``resume``: stop a function taking work, and let it go on.

While paused no run of the function starts and no step of its runs executes; events, sleeps
and waits are kept and go on after the resume (cron fires are skipped). See
:mod:`runtime.orchestration.pausing`.
"""

from __future__ import annotations

from typing import Any

import click

from runtime.cli.base import JSON_HELP, aws_option, cli, control_plane, url_option
from runtime.cli.output import answer


@cli.command()
@click.argument("function_id")
@click.option("--reason", default=None, help="Why, shown with the pause (functions, dashboard).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def pause(function_id: str, reason: str | None, as_json: bool, url: str,
          use_aws: bool) -> None:
    """Pause FUNCTION_ID: no run starts, no step runs; nothing sent to it is lost.

    Workers see the pause within 5 seconds (a step in flight finishes). Run `stepkit resume`
    to let everything held go on.
    """
    answer(control_plane(url, use_aws).pause(function_id, reason), as_json, _paused_line)


@cli.command()
@click.argument("function_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def resume(function_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Resume FUNCTION_ID: held runs and events go on within a minute."""
    answer(control_plane(url, use_aws).resume(function_id), as_json, _resumed_line)


def _paused_line(found: dict[str, Any]) -> list[str]:
    paused = found["paused"] or {}
    why = f": {paused['reason']}" if paused.get("reason") else ""
    return [f"{found['function_id']} paused since {paused.get('since')}{why}"]


def _resumed_line(found: dict[str, Any]) -> list[str]:
    if not found.get("resumed"):
        return [f"{found['function_id']} was not paused"]
    return [f"{found['function_id']} resumed"]


def paused_lines(listing: dict[str, Any]) -> list[str]:
    """One line per paused function, for the ``stepkit functions`` listing.

    Or why pauses could not be read (``--aws`` lists ``functions/`` without the table).
    """
    if listing.get("pauses_unread"):
        return [f"pauses not read: {listing['pauses_unread']}"]
    lines = []
    for fn in listing["functions"]:
        paused = fn.get("paused")
        if paused:
            why = f": {paused['reason']}" if paused.get("reason") else ""
            lines.append(f"paused: {fn['id']} since {paused.get('since')}{why}")
    return lines
