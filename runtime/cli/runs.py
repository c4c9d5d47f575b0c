"""``stepkit runs``, ``run``, ``cancel`` and ``rerun``: a run's life, seen and steered.

:func:`now` is the instant ``--since 2h`` counts back from (tests replace it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from runtime.cli.base import JSON_HELP, aws_option, cli, control_plane, echo_run_id, url_option
from runtime.cli.output import (
    STATUS_COLOURS,
    Part,
    Styled,
    Table,
    answer,
    emit,
    fmt_duration,
    fmt_time,
    plain,
    say,
    short_error,
)
from runtime.control import CONTROL_ERRORS
from runtime.dlq import dlq_notice
from runtime.orchestration.protocols import RunQuery
from runtime.records import RunStatus


def now() -> float:
    """The time ``--since 2h`` counts back from (tests replace it)."""
    return time.time()


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse ``--since`` (click callback); the instant, in epoch seconds.

    A duration (``2h``, ``30m``, as :func:`runtime.durations.parse_duration` reads it) means
    that long before now; anything else must be an ISO 8601 time (naive: UTC).
    """
    from runtime.durations import parse_duration, parse_instant

    if value is None:
        return None
    try:  # before 1970 is "all of them": every run is younger
        return max(0.0, now() - parse_duration(value, where="--since").total_seconds())
    except ValueError:
        pass
    try:
        return max(0.0, parse_instant(value, where="--since").timestamp())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration back from now (like '2h', '30m', '1d12h') nor an "
            "ISO 8601 time (like '2026-03-02T08:00:00Z'; without a zone it is UTC)"
        ) from None


@cli.command()
@click.option("--function", "function_id", default=None, help="Only runs of this function id.")
@click.option(
    "--status",
    default=None,
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs with this status.",
)
@click.option("--since", callback=_since, metavar="WHEN",
              help="Only runs created since then: a duration back from now ('2h', '30m', "
              "'1d') or an ISO 8601 time ('2026-03-02T08:00:00Z'; without a zone, UTC).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="List at most this many runs (the newest).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def runs(
    function_id: str | None, status: str | None, since: float | None, limit: int, as_json: bool,
    url: str, use_aws: bool,
) -> None:
    """List recent runs, newest first."""
    client = control_plane(url, use_aws)
    query = RunQuery(function_id=function_id, status=RunStatus(status) if status else None,
                     limit=limit, since=since)
    found = client.list_runs(query)
    answer(found, as_json, runs_view)
    try:
        notice = dlq_notice(client.dead_letter_count())
    except CONTROL_ERRORS:
        notice = None  # the notice is a courtesy: never fail the listing for it
    if notice:
        # On stderr under --json, so the JSON on stdout stays parseable.
        emit([Styled(notice, "red")], err=as_json)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def run(run_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Show run RUN_ID and its step timeline."""
    found = control_plane(url, use_aws).run(run_id)
    answer(found, as_json, run_view)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@url_option
@aws_option
def cancel(run_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Cancel run RUN_ID (its steps in flight finish; no new step starts)."""
    result = control_plane(url, use_aws).cancel(run_id)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, **result.to_json()}, indent=2))
    elif result.queued:
        say(f"run {run_id}: cancel sent to its function's queue (its worker applies it)")
    elif result.cancelled:
        say(f"run {run_id} cancelled")
    else:
        say(f"run {run_id} was not running (status {result.status})")


@cli.command()
@click.argument("run_id")
@click.option("--from", "from_step", default=None, metavar="STEP",
              help="Fork: reuse the results recorded before STEP, run STEP and what follows.")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id as JSON.")
@url_option
@aws_option
def rerun(run_id: str, from_step: str | None, as_json: bool, url: str, use_aws: bool) -> None:
    """Start a new run of RUN_ID's function with the same events; print its id."""
    echo_run_id(control_plane(url, use_aws).rerun(run_id, from_step), as_json)


def runs_view(runs: Sequence[dict[str, Any]]) -> list[Part]:
    """The ``stepkit runs`` table."""
    if not runs:
        return ["no runs"]
    rows = [
        [
            r["run_id"],
            r["function_id"],
            r["status"],
            r.get("event") or "-",
            fmt_time(r.get("created_at")),
            fmt_duration(r.get("duration_ms")),
            (r.get("waiting") or {}).get("message") or r.get("blocked") or "",
        ]
        for r in runs
    ]
    headers = ["RUN ID", "FUNCTION", "STATUS", "EVENT", "CREATED", "DURATION", "WHY"]
    if not any(row[-1] for row in rows):  # nothing held back or blocked: no empty column
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    return [Table(headers, rows, 2)]


def render_runs(runs: Sequence[dict[str, Any]]) -> str:
    """Render the ``stepkit runs`` table as plain text."""
    return plain(runs_view(runs))


def run_view(run: dict[str, Any]) -> list[Part]:
    """The ``stepkit run`` header and step timeline."""
    status = Styled(run["status"], STATUS_COLOURS.get(run["status"]), bold=True)
    lines: list[Part] = [
        f"Run       {run['run_id']}",
        f"Function  {run['function_id']}",
        ("Status    ", status),
        f"Event     {run.get('event') or '-'}",
        f"Created   {fmt_time(run.get('created_at'))}",
        f"Ended     {fmt_time(run.get('ended_at'))}",
        f"Duration  {fmt_duration(run.get('duration_ms'))}",
    ]
    if run.get("parent"):
        lines.append(f"Invoked   by run {run['parent']['run_id']} (step "
                     f"'{run['parent']['key']}')")
    if run.get("rerun_of"):
        origin = run["rerun_of"]
        lines.append(f"Rerun of  {origin['run_id']}"
                     + (f" from step '{origin['from_step']}'" if origin.get("from_step") else ""))
    if run.get("reruns"):
        lines.append("Reruns    " + ", ".join(r["run_id"] for r in run["reruns"]))
    if run.get("waiting"):
        lines.append(f"Waiting   {run['waiting']['message']}")
    for i, doing in enumerate(run.get("activity") or ()):
        lines.append(f"{'Doing' if i == 0 else '':<10}{doing['message']}")
    if run.get("error") and (run.get("waiting") or {}).get("kind") != "skipped":
        lines.append(f"Error     {short_error(run['error'])}")
    if run["status"] == "Completed":
        lines.append(f"Output    {json.dumps(run.get('output'))}")
    lines.append("")
    steps = run.get("steps") or []
    if not steps:
        lines.append("no steps")
        return lines
    rows = []
    for s in steps:
        attempts = str(s["attempts"])
        if s.get("max_attempts"):
            attempts += f"/{s['max_attempts']}"
        rows.append(
            [
                s["key"],
                s["kind"],
                s["status"],
                attempts,
                _offset(run.get("created_at"), s.get("started_at")),
                fmt_duration(s.get("duration_ms")),
                _step_note(s),
            ]
        )
    headers = ["STEP", "KIND", "STATUS", "ATTEMPTS", "STARTED", "DURATION", "NOTE"]
    lines.append(Table(headers, rows, 2))
    return lines


def render_run(run: dict[str, Any]) -> str:
    """Render the ``stepkit run`` header and step timeline as plain text."""
    return plain(run_view(run))


def _step_note(step: dict[str, Any]) -> str:
    if step.get("error"):
        return short_error(step["error"])
    detail = step.get("detail") or {}
    if step["status"] in ("Sleeping", "Retrying") and step.get("wake_at"):
        return f"until {fmt_time(step['wake_at'])}"
    if step["kind"] == "wait_for_event" and detail.get("event"):
        return f"for {detail['event']}"
    if step["kind"] == "invoke" and detail.get("child_run_id"):
        return f"{detail.get('function_id')} run {detail['child_run_id']}"
    return ""


def _offset(start: str | None, at: str | None) -> str:
    if not start or not at:
        return "-"
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return "+" + fmt_duration((t1 - t0).total_seconds() * 1000)
