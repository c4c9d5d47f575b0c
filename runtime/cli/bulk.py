"""``stepkit cancel-all`` and ``replay-all``: act on every run matching a filter.

Both run :mod:`runtime.control.bulk` through the command's control plane (the dev server's,
or the deployed app's with ``--aws``): they count what matches first, ask before acting
(unless ``--yes``), act at most ``--rate`` runs a second with a progress bar on a terminal
(plain lines when piped, on stderr), and print a report. ``replay-all`` prints its operation
id before it starts: run it again with ``--resume`` and that id to finish an interrupted
replay without replaying any run twice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from runtime.cli import runs as runs_cli
from runtime.cli.base import JSON_HELP, F, aws_option, cli, control_plane, url_option
from runtime.cli.output import Part, Table, emit, is_terminal, say
from runtime.control.bulk import (
    DEFAULT_RATE,
    REPLAYABLE,
    OnProgress,
    Operation,
    Pacer,
    Progress,
    Report,
    RunFilter,
    cancel_matching,
    replay_matching,
)
from runtime.durations import parse_duration, parse_instant
from runtime.expressions import Expression, ExpressionError
from runtime.records import RunStatus

_WHEN_HELP = "a duration back from when the operation began ('1h', '30m') or an ISO 8601 time"


def _filter_options(statuses: list[str]) -> Callable[[F], F]:
    """The filter options the two commands share."""
    def add(fn: F) -> F:
        for option in reversed([
            click.option("--function", "function_id", default=None,
                         help="Only runs of this function id."),
            click.option("--status", default=None,
                         type=click.Choice(statuses, case_sensitive=False),
                         help="Only runs with this status."),
            click.option("--since", default=None, metavar="WHEN",
                         help=f"Only runs created since then: {_WHEN_HELP}."),
            click.option("--until", default=None, metavar="WHEN",
                         help=f"Only runs created before then: {_WHEN_HELP} (default: "
                         "when the operation began; later runs are never touched)."),
            click.option("--if", "condition", default=None, metavar="CEL",
                         help="Only runs whose triggering event matches this CEL expression "
                         "(`event.data.plan == 'pro'`; `events` is the list); reads each run."),
            click.option("--dry-run", is_flag=True,
                         help="Only count and list the matching runs; touch nothing."),
            click.option("--yes", "-y", is_flag=True, help="Do not ask before acting."),
            click.option("--rate", default=DEFAULT_RATE, show_default=True,
                         type=click.FloatRange(min=0.1, max=1000),
                         help="At most this many runs a second."),
            click.option("--limit", default=None, type=click.IntRange(min=1),
                         help="Handle at most this many runs (the newest)."),
            click.option("--json", "as_json", is_flag=True, help=JSON_HELP),
            url_option, aws_option,
        ]):
            fn = option(fn)
        return fn
    return add


def _when(value: str | None, began_at: float, option: str) -> float | None:
    """``--since``/``--until``: a duration back from ``began_at``, or an ISO 8601 time."""
    if value is None:
        return None
    try:
        return max(0.0, began_at - parse_duration(value, where=option).total_seconds())
    except ValueError:
        pass
    try:
        return max(0.0, parse_instant(value, where=option).timestamp())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (like '1h', '30m') nor an ISO 8601 time "
            "(like '2026-03-02T08:00:00Z')", param_hint=option) from None


def _run_filter(op: Operation, function_id: str | None, status: str | None, since: str | None,
                until: str | None, condition: str | None) -> RunFilter:
    if condition is not None:
        try:
            Expression.compile(condition, where="--if")
        except ExpressionError as exc:
            raise click.BadParameter(str(exc), param_hint="--if") from None
    return RunFilter(function_id=function_id, status=RunStatus(status) if status else None,
                     since=_when(since, op.began_at, "--since"),
                     until=_when(until, op.began_at, "--until"), condition=condition)


@cli.command("cancel-all")
@_filter_options([s.value for s in RunStatus if not s.finished])
def cancel_all(function_id: str | None, status: str | None, since: str | None,
               until: str | None, condition: str | None, dry_run: bool, yes: bool,
               rate: float, limit: int | None, as_json: bool, url: str,
               use_aws: bool) -> None:
    """Cancel every unfinished run matching the filter (a dry run first)."""
    op = Operation.begin(runs_cli.now())
    where = _run_filter(op, function_id, status, since, until, condition)
    control = control_plane(url, use_aws)

    def act(dry: bool, progress: OnProgress | None) -> Report:
        return cancel_matching(control, where, operation=op, dry_run=dry, limit=limit,
                               pacer=Pacer(rate), progress=progress)

    _carry_out(act, "cancel", op, dry_run, yes, as_json)


@cli.command("replay-all")
@_filter_options([s.value for s in REPLAYABLE])
@click.option("--from", "from_step", default=None, metavar="STEP",
              help="Replay from STEP: reuse the results recorded before it (as `rerun --from`).")
@click.option("--resume", "operation_id", default=None, metavar="OPERATION",
              help="Finish the operation with this id (printed when it began): runs it "
              "replayed already are not replayed again.")
def replay_all(function_id: str | None, status: str | None, since: str | None,
               until: str | None, condition: str | None, dry_run: bool, yes: bool,
               rate: float, limit: int | None, as_json: bool, url: str, use_aws: bool,
               from_step: str | None, operation_id: str | None) -> None:
    """Replay every Failed or Cancelled run matching the filter as a new run linked to it."""
    try:
        op = (Operation.resume(operation_id) if operation_id
              else Operation.begin(runs_cli.now()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resume") from None
    where = _run_filter(op, function_id, status, since, until, condition)
    control = control_plane(url, use_aws)

    def act(dry: bool, progress: OnProgress | None) -> Report:
        return replay_matching(control, where, from_step=from_step, operation=op,
                               dry_run=dry, limit=limit, pacer=Pacer(rate),
                               progress=progress)

    _carry_out(act, "replay", op, dry_run, yes, as_json)


def _carry_out(act: Callable[[bool, OnProgress | None], Report], verb: str, op: Operation,
               dry_run: bool, yes: bool, as_json: bool) -> None:
    """Count first and ask (unless ``yes``); act with progress; print the report.

    Asking lists the runs twice (once to count, once to act): the runs acted on are those
    that still match then.
    """
    if dry_run or not yes:
        dry = act(True, None)
        if dry_run or dry.matched == 0:
            _print(dry, as_json)
            return
        emit(report_view(dry), err=True)
        click.confirm(f"{verb.capitalize()} these {dry.matched} run(s)?", abort=True,
                      err=True)
    if verb == "replay":  # said first: an interrupted replay is finished with this id
        say(f"operation {op.id}: if interrupted, run the same command again with "
            f"--resume {op.id}", err=True)
    with _progress() as progress:
        report = act(False, progress)
    _print(report, as_json)


@contextmanager
def _progress() -> Iterator[OnProgress]:
    """A progress bar on a terminal (stderr), else a plain line every 5 % and at the end."""
    if is_terminal(sys.stderr):
        from rich.console import Console
        from rich.progress import Progress as Bar

        with Bar(console=Console(file=sys.stderr)) as bar:
            task = bar.add_task("runs")

            def advance(p: Progress) -> None:
                bar.update(task, completed=p.done, total=p.total)

            yield advance
        return

    def line(p: Progress) -> None:
        if p.done % max(1, p.total // 20) == 0 or p.done == p.total:
            say(f"{p.done}/{p.total} runs", err=True)

    yield line


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        emit(report_view(report))


def report_view(report: Report) -> list[Part]:
    """A report as lines: what matched, what was done, the new runs and the errors."""
    verb = "would " + report.action if report.dry_run else report.action
    parts: list[Part] = [f"operation {report.operation}: {verb} {report.matched} run(s)"]
    if report.dry_run and report.sample:
        shown = ", ".join(report.sample)
        parts.append(f"first {len(report.sample)}: {shown}")
    if report.counts:
        parts.append(", ".join(f"{k.replace('_', ' ')} {v}"
                               for k, v in sorted(report.counts.items())))
    if report.new_runs:
        parts.append(Table(["original", "replay"], sorted(report.new_runs.items())))
    if report.errors:
        parts.append(Table(["run", "error"], sorted(report.errors.items())))
    return parts
