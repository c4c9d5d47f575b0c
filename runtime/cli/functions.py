"""``stepkit functions``, ``fire`` and ``invoke``: the app's functions, and runs by hand."""

from __future__ import annotations

from typing import Any

import click

from runtime.cli.base import (
    JSON_HELP,
    aws_option,
    cli,
    control_plane,
    echo_run_id,
    json_object,
    url_option,
)
from runtime.cli.output import Part, Table, answer, say
from runtime.cli.pausing import paused_lines


@cli.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def functions(as_json: bool, url: str, use_aws: bool) -> None:
    """List the app's functions: triggers, retries and flow control."""
    found = control_plane(url, use_aws).functions()
    answer(found, as_json, functions_view)


def functions_view(found: dict[str, Any]) -> list[Part]:
    """The ``stepkit functions`` listing: the app, then a table of its functions."""
    rows = [[f["id"], ", ".join(_trigger(t) for t in f.get("triggers", [])),
             str(f.get("retries", "")), _flow(f)] for f in found["functions"]]
    headers = ["FUNCTION", "TRIGGERS", "RETRIES", "FLOW CONTROL"]
    return [f"app {found['app_id']}", Table(headers, rows),
            *paused_lines(found)]


def _trigger(t: dict[str, Any]) -> str:
    if t.get("cron"):
        return f"cron {t['cron']}"
    return str(t.get("event", "")) + (f" if {t['if']}" if t.get("if") else "")


def _flow(f: dict[str, Any]) -> str:
    flow = f.get("flow") or {}
    return ", ".join(sorted(k for k, v in flow.items() if v)) or "-"


@cli.command()
@click.argument("function_id")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id as JSON.")
@url_option
@aws_option
def fire(function_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Fire FUNCTION_ID's cron trigger now, as the schedule would; print the run's id.

    With --aws, the function's queue gets exactly what its EventBridge Scheduler schedule
    sends, for a fire at this second (so firing twice within a second starts one run).
    """
    echo_run_id(control_plane(url, use_aws).fire_cron(function_id), as_json)


@cli.command()
@click.argument("function_id")
@click.option("--data", callback=json_object, help="The run's event data, a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id as JSON.")
@url_option
@aws_option
def invoke(function_id: str, data: Any, as_json: bool, url: str, use_aws: bool) -> None:
    """Start a run of FUNCTION_ID by hand (its event: stepkit/function.invoked); print its id."""
    echo_run_id(control_plane(url, use_aws).invoke(function_id, data or {}), as_json)
    if data is None:
        say("note: no --data given: invoked with {}", err=True)
