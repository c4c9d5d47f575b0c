"""``stepkit deploy-check``: what a deploy of ``functions/`` would do to the runs in flight.

Run it before ``cdk deploy`` (``--aws``), or before restarting the dev server with new code.
It reads the runs in flight (Running and Blocked) from the deployed app, and compares their
functions with the app about to be deployed:

- a function with runs in flight that the new app no longer has: an **error** (exit 1), naming
  the runs. On AWS the deploy would delete its queue and Lambda with their messages, and the
  runs could never finish. Drain it first (keep it with ``retired=True``: no new runs, its
  runs finish), or cancel the runs; deploy its removal once this check finds none.
- a retired function: how many of its runs are still in flight, or that it may go now;
- blocked runs (their code cannot go on with them): a warning, with each run's cause.

The step ids the new code calls compared with the deployed ones are ``stepkit check``'s.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from runtime.cli.base import aws_option, cli, control_plane, url_option
from runtime.cli.output import say
from runtime.control import ControlPlane
from runtime.orchestration.protocols import RunQuery
from runtime.records import RunStatus

#: In-flight runs read per status: enough to name what a deploy would strand, bounded so the
#: check costs the same however many runs are in flight (it says when it stopped counting).
MAX_LISTED = 1000
_SHOWN = 5  # run ids named per function


def in_flight(client: ControlPlane) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """Runs in flight by function, and whether a status had more than :data:`MAX_LISTED`."""
    by_function: dict[str, list[dict[str, Any]]] = defaultdict(list)
    more = False
    for status in (RunStatus.RUNNING, RunStatus.BLOCKED):
        found = client.list_runs(RunQuery(status=status, limit=MAX_LISTED))
        more = more or len(found) >= MAX_LISTED
        for run in found:
            by_function[str(run["function_id"])].append(run)
    return dict(by_function), more


def review(functions: dict[str, bool], runs: dict[str, list[dict[str, Any]]],
           more: bool) -> tuple[list[str], list[str]]:
    """The errors and the notes of a deploy of ``functions`` (id: retired) over ``runs``."""
    errors: list[str] = []
    notes: list[str] = []
    counted = "at least " if more else ""
    for fn_id in sorted(runs):
        found = runs[fn_id]
        ids = ", ".join(str(r["run_id"]) for r in found[:_SHOWN])
        ids += f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        if fn_id not in functions:
            errors.append(
                f"function '{fn_id}' has {counted}{len(found)} runs in flight ({ids}) but is "
                "not in the app: this deploy would strand them (on AWS its queue and Lambda "
                "are deleted with their messages). Drain it first: keep it in the code with "
                "retired=True and deploy (no new runs; these finish), or cancel them "
                "(`stepkit cancel RUN_ID`); remove it once this check finds none.")
        elif functions[fn_id]:
            notes.append(f"function '{fn_id}' is retired: {counted}{len(found)} runs still "
                         f"in flight ({ids})")
    notes += [f"function '{fn_id}' is retired and has no run in flight: it may be removed"
              for fn_id, retired in sorted(functions.items()) if retired and fn_id not in runs]
    for found in runs.values():
        notes += [f"run {r['run_id']} of '{r['function_id']}' is blocked: {r.get('blocked')}"
                  for r in found if r.get("status") == RunStatus.BLOCKED.value]
    return errors, notes


@cli.command("deploy-check")
@click.option("--functions", "package", default=None, envvar="STEPKIT_FUNCTIONS",
              help="The package defining the app (env STEPKIT_FUNCTIONS)  [default: functions]")
@url_option
@aws_option
def deploy_check(package: str | None, url: str, use_aws: bool) -> None:
    """Check that deploying functions/ strands no run in flight; exit 1 if it would."""
    from runtime.discovery import load_app

    app = load_app(package or "functions", root=Path.cwd())
    runs, more = in_flight(control_plane(url, use_aws))
    errors, notes = review({fn.id: fn.retired for fn in app}, runs, more)
    for line in errors:
        say(f"error: {line}")
    for line in notes:
        say(f"note: {line}")
    if not errors:
        say(f"ok: no run in flight would be stranded ({sum(map(len, runs.values()))} in flight)")
    if errors:
        raise SystemExit(1)
