"""``stepkit send``, ``events`` and ``event``: events in, and what they started."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from runtime.cli.base import JSON_HELP, aws_option, cli, control_plane, json_object, url_option
from runtime.cli.output import Part, Table, answer, fmt_time, say


@cli.command()
@click.argument("name")
@click.option("--data", callback=json_object, help="Event data, a JSON object.")
@click.option("--user", callback=json_object, help="Event user, a JSON object.")
@click.option("--id", "event_id", default=None, help="Event id (resending an id is a no-op).")
@click.option("--json", "as_json", is_flag=True, help="Print the ids (and duplicates) as JSON.")
@url_option
@aws_option
def send(name: str, data: Any, user: Any, event_id: str | None, as_json: bool, url: str,
         use_aws: bool) -> None:
    """Send the event NAME to the dev server (or the deployed bus) and print its id."""
    event: dict[str, Any] = {"name": name, "data": data or {}}
    if user is not None:
        event["user"] = user
    if event_id:
        event["id"] = event_id
    result = control_plane(url, use_aws).send(event)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    for sent in result.ids:
        say(sent)
    if data is None:  # said once it is sent (a failure says only what failed)
        say("note: no --data given: sent {} as the event's data", err=True)
    for dup in result.duplicates:
        say(f"note: event id {dup} was received before: it starts no new run "
                   "(ids are remembered for 24 h)", err=True)


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="List at most this many events (the newest).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def events(limit: int, as_json: bool, url: str, use_aws: bool) -> None:
    """List recently received events, newest first."""
    found = control_plane(url, use_aws).events(limit=limit)
    answer(found, as_json, events_view)


def events_view(found: Sequence[dict[str, Any]]) -> list[Part]:
    """The ``stepkit events`` table."""
    rows = [[e.get("id", ""), e.get("name", ""), fmt_time(_event_time(e)),
             json.dumps(e.get("data", {}), separators=(",", ":"))[:60]] for e in found]
    return [Table(["EVENT ID", "NAME", "TIME", "DATA"], rows)]


@cli.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def event(event_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Show event EVENT_ID: its payload, the runs it started and the waits it resolved.

    With --aws the waits are not listed (the table keeps no index of them by event).
    """
    found = control_plane(url, use_aws).event(event_id)
    answer(found, as_json, event_view)


def event_view(found: dict[str, Any]) -> list[Part]:
    """The ``stepkit event`` page: payload, runs started, waits resolved."""
    payload = {k: v for k, v in found.items() if k not in ("runs", "waits")}
    lines: list[Part] = [
        f"Event     {found.get('id', '')}",
        f"Name      {found.get('name', '')}",
        f"Time      {fmt_time(_event_time(found))}",
        "Payload   " + json.dumps(payload.get("data", {}), separators=(",", ":")),
        "",
    ]
    runs = found.get("runs") or []
    lines.append(Table(["RUN ID", "FUNCTION", "STATUS"],
                       [[r.get("run_id", ""), r.get("function_id", ""), r.get("status", "")]
                        for r in runs]) if runs else "started no run")
    waits = found.get("waits")
    if waits is not None:
        lines.append("")
        lines.append(Table(["RESOLVED WAIT IN RUN", "FUNCTION", "STEP"],
                           [[w.get("run_id", ""), w.get("function_id", ""), w.get("step", "")]
                            for w in waits]) if waits else "resolved no wait")
    return lines


def _event_time(event: dict[str, Any]) -> str | None:
    ts = event.get("ts")
    if not isinstance(ts, int | float):
        return None
    from runtime.durations import format_instant

    return format_instant(ts / 1000)
