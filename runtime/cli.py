"""The ``stepkit`` command line: a local dev server, and commands that talk to it.

- ``stepkit dev``: load the app, run it on the local SQLite backend, serve API and dashboard.
- ``stepkit send NAME``: send an event.
- ``stepkit runs``: list runs; ``stepkit run RUN_ID``: one run and its step timeline.
- ``stepkit dlq list|redrive``: what sits in the dead-letter queues; put it back to work.

Answers are tables drawn with rich, statuses in colour, when stdout is a terminal (rich
honours ``NO_COLOR``), and plain aligned text when it is not (piped, captured), so scripts
read the same text as before; ``--json`` prints JSON either way.

Exit codes: 0 on success, 1 on errors (unreachable server, rejected request, bad app), and
click's 2 for usage errors (unknown option, invalid ``--data`` JSON...).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import click
import httpx

from runtime.dlq import dlq_notice
from runtime.records import RunStatus

if TYPE_CHECKING:
    from runtime.devserver.api import DevBackend

DEFAULT_URL = "http://127.0.0.1:8288"
DEFAULT_DB = ".stepkit/dev.sqlite3"
_STATUS_COLOURS = {
    "Running": "blue",
    "Completed": "green",
    "Failed": "red",
    "Cancelled": "yellow",
    "Skipped": "magenta",
    "Retrying": "yellow",
    "Sleeping": "blue",
    "Waiting": "magenta",
    "Invoking": "magenta",
    "Scheduled": "cyan",
    "Abandoned": "yellow",
}
F = TypeVar("F", bound=Callable[..., Any])
_JSON_HELP = "Print JSON (the API's shape) instead of a table."


# -- talking to a dev server -------------------------------------------------------------------


class DevClient:
    """A small JSON client for a running dev server.

    Commands get their data through this one class, so another source (a deployed app, with
    ``--aws``) can stand in for it later with the same methods.

    Args:
        url: The dev server's base URL.
        timeout: Seconds to wait for an answer.

    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        not_there = f"no stepkit dev server at {self.url}; start one with `stepkit dev`"
        try:
            # Proxy variables are ignored: the dev server is local.
            resp = httpx.request(
                method,
                self.url + path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=body,
                timeout=self.timeout,
                trust_env=False,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise click.ClickException(f"invalid --url {self.url!r}: {exc}") from None
        except httpx.ConnectError:
            raise click.ClickException(not_there) from None
        except httpx.TimeoutException:
            raise click.ClickException(
                f"the dev server at {self.url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise click.ClickException(f"request to {self.url} failed: {exc}") from None
        try:
            data = resp.json()
        except ValueError:
            raise click.ClickException(
                f"{self.url}{path} answered HTTP {resp.status_code} without JSON; is it a "
                "stepkit dev server?"
            ) from None
        if resp.is_error:
            error = data.get("error") if isinstance(data, dict) else None
            raise click.ClickException(error or f"HTTP {resp.status_code} from {self.url}{path}")
        return data

    def send(self, events: dict[str, Any] | list[dict[str, Any]]) -> list[str]:
        """Send events; return their ids."""
        return list(self.send_reporting(events)["ids"])

    def send_reporting(self, events: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
        """Send events; the ids, and those received before (``duplicates``)."""
        data: dict[str, Any] = self._request("POST", "/api/events", body=events)
        return data

    def functions(self) -> dict[str, Any]:
        """The app's functions, with their triggers, options and open windows."""
        data: dict[str, Any] = self._request("GET", "/api/functions")
        return data

    def events(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Recently received events, newest first."""
        return list(self._request("GET", "/api/events", params={"limit": limit})["events"])

    def event(self, event_id: str) -> dict[str, Any]:
        """One recent event with the runs it started and the waits it resolved."""
        data: dict[str, Any] = self._request("GET", f"/api/events/{quote(event_id, safe='')}")
        return data

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run; whether this call cancelled it, and its status."""
        data: dict[str, Any] = self._request("POST", f"/api/runs/{quote(run_id, safe='')}/cancel")
        return data

    def fire_cron(self, function_id: str) -> str:
        """Fire a function's cron trigger now; the run's id."""
        path = f"/api/functions/{quote(function_id, safe='')}/cron"
        return str(self._request("POST", path)["run_id"])

    def invoke(self, function_id: str, data: dict[str, Any]) -> str:
        """Start a run of a function by hand; its id."""
        path = f"/api/functions/{quote(function_id, safe='')}/invoke"
        return str(self._request("POST", path, body={"data": data})["run_id"])

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Start a new run with a run's events (a fork, ``from_step``); the new run's id."""
        body = {"from": from_step} if from_step else None
        path = f"/api/runs/{quote(run_id, safe='')}/rerun"
        return str(self._request("POST", path, body=body)["run_id"])

    def runs(
        self, *, function_id: str | None = None, status: str | None = None, limit: int = 20,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Return runs, newest first, as the API renders them (``since``: epoch seconds)."""
        from runtime.durations import format_instant

        params = {"function_id": function_id, "status": status, "limit": limit,
                  "since": None if since is None else format_instant(since)}
        return list(self._request("GET", "/api/runs", params=params)["runs"])

    def run(self, run_id: str) -> dict[str, Any]:
        """Return one run with its step timeline."""
        data: dict[str, Any] = self._request("GET", f"/api/runs/{quote(run_id, safe='')}")
        return data

    def dead_letters(self) -> list[dict[str, Any]]:
        """Dead-lettered messages, oldest first, as the API renders them."""
        return list(self._request("GET", "/api/dlq")["messages"])

    def dead_letter_count(self) -> int:
        """How many messages sit in dead-letter queues."""
        return int(self._request("GET", "/api/dlq")["count"])

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered messages back to work; the ids redriven."""
        body = {k: v for k, v in (("queue", queue), ("id", message_id)) if v is not None}
        return list(self._request("POST", "/api/dlq/redrive", body=body)["redriven"])


def url_option(fn: F) -> F:
    """Add the ``--url`` option shared by the commands that talk to a dev server."""
    return click.option(
        "--url",
        default=DEFAULT_URL,
        envvar="STEPKIT_URL",
        show_default=True,
        help="Talk to the dev server at this URL (env STEPKIT_URL; unused with --aws).",
    )(fn)


def aws_option(fn: F) -> F:
    """Add ``--aws``: read from / send to the deployed app instead of the dev server."""
    return click.option(
        "--aws",
        "use_aws",
        is_flag=True,
        help="Talk to the app deployed on AWS instead of the dev server (names from "
        "STEPKIT_APP/STEPKIT_BUS/STEPKIT_TABLE, else derived from functions/ as the CDK app "
        "does; STEPKIT_STAGE for a stage).",
    )(fn)


def _client(url: str, use_aws: bool = False) -> Any:
    if use_aws:
        from runtime.aws_inspect import AwsClient

        return AwsClient()
    return DevClient(url)


# -- output helpers ----------------------------------------------------------------------------


def _now() -> float:
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
        return max(0.0, _now() - parse_duration(value, where="--since").total_seconds())
    except ValueError:
        pass
    try:
        return max(0.0, parse_instant(value, where="--since").timestamp())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration back from now (like '2h', '30m', '1d12h') nor an "
            "ISO 8601 time (like '2026-03-02T08:00:00Z'; without a zone it is UTC)"
        ) from None


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse an option's value as a JSON object (click callback)."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f"expected a JSON object like '{{\"id\": 1}}', got {type(parsed).__name__}"
        )
    return parsed


def fmt_duration(ms: int | float | None) -> str:
    """Format a duration for people: ``350ms``, ``1.25s``, ``3m 2s``, ``2d 4h``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    rest = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def fmt_time(iso: str | None) -> str:
    """Format an API timestamp as ``2026-03-02 08:00:00Z`` (UTC)."""
    if not iso:
        return "-"
    return iso.replace("T", " ").split(".")[0].rstrip("Z") + "Z"


def _offset(start: str | None, at: str | None) -> str:
    if not start or not at:
        return "-"
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(at.replace("Z", "+00:00"))
    return "+" + fmt_duration((t1 - t0).total_seconds() * 1000)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], status_col: int = -1) -> str:
    """Left-aligned columns; the ``status_col`` cells are coloured (on a terminal)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            padded = cell.ljust(width)
            if i == status_col:
                padded = click.style(padded, fg=_STATUS_COLOURS.get(cell))
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# -- output: rich on a terminal, plain text when piped ------------------------------------------
#
# A command builds its answer once, as lines and tables of plain cell text (the ``*_view``
# functions below); ``emit`` then prints it with rich when the stream is a terminal, or as the
# plain aligned text scripts read (``plain``) when it is not. Both show the same cells.


@dataclass(frozen=True)
class Styled:
    """Text in a colour (and bold) on a terminal; plain text when piped."""

    text: str
    colour: str | None = None
    bold: bool | None = None


@dataclass(frozen=True)
class Table:
    """A table's headers and cells, the one source of both renderings."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    #: The column of statuses, coloured as ``_STATUS_COLOURS`` says (-1: none).
    status_col: int = -1


#: A line of text (its parts side by side), or a table.
Part = str | Styled | tuple[str | Styled, ...] | Table


def _plain_part(part: Part) -> str:
    if isinstance(part, Table):
        return table(part.headers, part.rows, part.status_col)
    if isinstance(part, Styled):
        return click.style(part.text, fg=part.colour, bold=part.bold)
    if isinstance(part, tuple):
        return "".join(_plain_part(p) for p in part)
    return part


def plain(parts: Sequence[Part]) -> str:
    """The parts as plain text (``click.echo`` drops their colour codes when piped)."""
    return "\n".join(_plain_part(p) for p in parts)


def _is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (the one switch between rich and plain output)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def answer(found: Any, as_json: bool, view: Callable[[Any], Sequence[Part]]) -> None:
    """Print a command's answer: as JSON with ``--json``, else through its ``view``."""
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        emit(view(found))


def emit(parts: Sequence[Part], *, err: bool = False) -> None:
    """Print ``parts`` to stdout (stderr with ``err``): with rich on a terminal, else plain.

    On a terminal, rich honours ``NO_COLOR`` (tables, no colour) and ``TERM=dumb``. Piped,
    the output is the plain text :func:`plain` renders, so scripts read it unchanged.
    """
    stream = sys.stderr if err else sys.stdout
    if _is_terminal(stream):
        try:
            from rich.console import Console
        except ModuleNotFoundError:  # an install without rich: the plain text says it all
            pass
        else:
            _print_rich(Console(file=stream, force_terminal=True, highlight=False), parts)
            return
    click.echo(plain(parts), err=err)


def _print_rich(console: Any, parts: Sequence[Part]) -> None:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    def text(part: str | Styled | tuple[str | Styled, ...]) -> Text:
        if isinstance(part, tuple):
            return Text.assemble(*(text(p) for p in part))
        if isinstance(part, Styled):
            style = " ".join(s for s in ("bold" if part.bold else "", part.colour or "") if s)
            return Text(part.text, style=style)
        return Text(part)  # never markup: cells hold user data such as "[1]"

    for part in parts:
        if not isinstance(part, Table):
            console.print(text(part))
            continue
        grid = RichTable(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False,
                         pad_edge=False)
        last = len(part.headers) - 1
        for i, header in enumerate(part.headers):  # ids stay whole; the last column wraps
            grid.add_column(header, no_wrap=i != last, overflow="fold")
        for row in part.rows:
            grid.add_row(*(
                Text(cell, style=_STATUS_COLOURS.get(cell, "")) if i == part.status_col
                else Text(cell) for i, cell in enumerate(row)))
        console.print(grid)


def _short_error(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    message = str(error.get("message", "")).splitlines()[0] if error.get("message") else ""
    return f"{error.get('name', 'Error')}: {message}"


def _step_note(step: dict[str, Any]) -> str:
    if step.get("error"):
        return _short_error(step["error"])
    detail = step.get("detail") or {}
    if step["status"] in ("Sleeping", "Retrying") and step.get("wake_at"):
        return f"until {fmt_time(step['wake_at'])}"
    if step["kind"] == "wait_for_event" and detail.get("event"):
        return f"for {detail['event']}"
    if step["kind"] == "invoke" and detail.get("child_run_id"):
        return f"{detail.get('function_id')} run {detail['child_run_id']}"
    return ""


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
            (r.get("waiting") or {}).get("message") or "",
        ]
        for r in runs
    ]
    headers = ["RUN ID", "FUNCTION", "STATUS", "EVENT", "CREATED", "DURATION", "WHY"]
    if not any(row[-1] for row in rows):  # nothing held back: no empty column
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    return [Table(headers, rows, 2)]


def render_runs(runs: Sequence[dict[str, Any]]) -> str:
    """Render the ``stepkit runs`` table as plain text."""
    return plain(runs_view(runs))


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


def run_view(run: dict[str, Any]) -> list[Part]:
    """The ``stepkit run`` header and step timeline."""
    status = Styled(run["status"], _STATUS_COLOURS.get(run["status"]), bold=True)
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
        lines.append(f"Error     {_short_error(run['error'])}")
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


# -- commands ----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stepkit", message="%(prog)s %(version)s")
def cli() -> None:
    """stepkit: durable functions. Develop locally with `stepkit dev`."""


@cli.command()
@click.option(
    "--port",
    default=8288,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--db",
    default=DEFAULT_DB,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file holding runs; kept across restarts.",
)
@click.option(
    "--functions",
    "package",
    default=None,
    envvar="STEPKIT_FUNCTIONS",
    help="The package defining the app (env STEPKIT_FUNCTIONS)  [default: functions]",
)
@click.option(
    "--workers",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker threads running function steps.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log level of run and step logs.",
)
@click.option(
    "--durability",
    default="normal",
    show_default=True,
    type=click.Choice(["normal", "full"], case_sensitive=False),
    help="normal: commits survive a crash of the server; full: also power loss (slower).",
)
@click.option("--reload", is_flag=True,
              help="Restart when a file of the functions package changes (runs are kept).")
def dev(
    port: int, host: str, db: Path, package: str | None, workers: int, log_level: str,
    durability: str, reload: bool,
) -> None:
    """Run the app locally: workers, crons, the API and the dashboard."""
    from runtime.discovery import load_app
    from runtime.errors import ConfigurationError

    if reload:
        _reload(port, package)
        return

    level = getattr(logging, log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        app = load_app(package, root=Path.cwd())
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    sock = _listen(host, port)
    from runtime.backends.local import LocalBackend

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        backend = LocalBackend(app, db, workers=workers, durability=durability.lower())
    except (OSError, sqlite3.Error) as exc:
        sock.close()
        raise click.ClickException(
            f"cannot use --db {db}: {exc} (give a writable path for a SQLite file)"
        ) from None
    try:
        backend.start()
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            f"stepkit dev server for app '{app.id}' at http://{shown}:{sock.getsockname()[1]}"
        )
        click.echo(f"  runs stored in {db}")
        click.echo(f"  functions: {', '.join(sorted(app.functions)) or '(none)'}")
        _serve(backend, sock, log_level.lower())
    finally:
        click.echo("stopping: finishing the work in hand")
        backend.close()
        sock.close()


def _reload(port: int, package: str | None) -> None:
    """Run ``stepkit dev`` (without ``--reload``) and restart it when ``functions/`` changes.

    Each restart stops the server cleanly (SIGINT: the work in hand finishes) and starts a
    fresh process, which imports the package anew; runs live in the SQLite file, so they
    carry on under the new code.
    """
    import shlex

    from watchfiles import run_process

    if port == 0:
        raise click.ClickException("--reload needs a fixed --port (the restarted server "
                                   "must come back where the dashboard looks for it)")
    root = Path.cwd() / (package or "functions").replace(".", "/")
    if not root.exists():
        raise click.ClickException(f"--reload: nothing to watch at {root}")
    args = [a for a in sys.argv[1:] if a != "--reload"]
    command = shlex.join([sys.executable, "-m", "runtime.cli", *args])

    def changed(changes: set[tuple[Any, str]]) -> None:
        names = sorted({Path(p).name for _, p in changes})
        click.echo(f"reloading: {', '.join(names)} changed")

    run_process(root, target=command, target_type="command", callback=changed,
                watch_filter=lambda _change, path: path.endswith(".py"))


def _serve(backend: DevBackend, sock: socket.socket, log_level: str) -> None:
    """Serve the API on ``sock`` until Ctrl-C or SIGTERM, which both end it cleanly."""
    import uvicorn

    from runtime.devserver.api import create_app

    config = uvicorn.Config(
        create_app(backend),
        log_level="debug" if log_level == "debug" else "warning",  # its startup lines are noise
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it is done; make SIGTERM arrive as a
    # KeyboardInterrupt like Ctrl-C, so both reach the caller's cleanup instead of killing us.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _listen(host: str, port: int) -> socket.socket:
    """Bind the server socket up front, so a busy port is a clear error before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise click.BadParameter(f"cannot resolve {host!r}: {exc}", param_hint="'--host'") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another "
            "`stepkit dev` running? Pick another port with --port"
        ) from None
    return sock


@cli.command()
@click.argument("name")
@click.option("--data", callback=_json_object, help="Event data, a JSON object.")
@click.option("--user", callback=_json_object, help="Event user, a JSON object.")
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
    client = _client(url, use_aws)
    result = {"ids": client.send(event)} if use_aws else client.send_reporting(event)
    if as_json:
        click.echo(json.dumps({"duplicates": [], **result}, indent=2))
        return
    for sent in result["ids"]:
        click.echo(sent)
    if data is None:  # said once it is sent (a failure says only what failed)
        click.echo("note: no --data given: sent {} as the event's data", err=True)
    for dup in result.get("duplicates") or ():
        click.echo(f"note: event id {dup} was received before: it starts no new run "
                   "(ids are remembered for 24 h)", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@url_option
@aws_option
def functions(as_json: bool, url: str, use_aws: bool) -> None:
    """List the app's functions: triggers, retries and flow control."""
    found = _client(url, use_aws).functions()
    answer(found, as_json, functions_view)


def functions_view(found: dict[str, Any]) -> list[Part]:
    """The ``stepkit functions`` listing: the app, then a table of its functions."""
    rows = [[f["id"], ", ".join(_trigger(t) for t in f.get("triggers", [])),
             str(f.get("retries", "")), _flow(f)] for f in found["functions"]]
    headers = ["FUNCTION", "TRIGGERS", "RETRIES", "FLOW CONTROL"]
    return [f"app {found['app_id']}", Table(headers, rows)]


def _trigger(t: dict[str, Any]) -> str:
    if t.get("cron"):
        return f"cron {t['cron']}"
    return str(t.get("event", "")) + (f" if {t['if']}" if t.get("if") else "")


def _flow(f: dict[str, Any]) -> str:
    flow = f.get("flow") or {}
    return ", ".join(sorted(k for k, v in flow.items() if v)) or "-"


@cli.command()
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="List at most this many events (the newest).")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@url_option
@aws_option
def events(limit: int, as_json: bool, url: str, use_aws: bool) -> None:
    """List recently received events, newest first."""
    found = _client(url, use_aws).events(limit=limit)
    answer(found, as_json, events_view)


def events_view(found: Sequence[dict[str, Any]]) -> list[Part]:
    """The ``stepkit events`` table."""
    rows = [[e.get("id", ""), e.get("name", ""), fmt_time(_event_time(e)),
             json.dumps(e.get("data", {}), separators=(",", ":"))[:60]] for e in found]
    return [Table(["EVENT ID", "NAME", "TIME", "DATA"], rows)]


@cli.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@url_option
@aws_option
def event(event_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Show event EVENT_ID: its payload, the runs it started and the waits it resolved.

    With --aws the waits are not listed (the table keeps no index of them by event).
    """
    found = _client(url, use_aws).event(event_id)
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


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@url_option
@aws_option
def cancel(run_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Cancel run RUN_ID (its steps in flight finish; no new step starts)."""
    result = _client(url, use_aws).cancel(run_id)
    if as_json:
        click.echo(json.dumps({"run_id": run_id, **result}, indent=2))
    elif result.get("queued"):
        click.echo(f"run {run_id}: cancel sent to its function's queue (its worker applies it)")
    elif result.get("cancelled"):
        click.echo(f"run {run_id} cancelled")
    else:
        click.echo(f"run {run_id} was not running (status {result.get('status')})")


@cli.command()
@click.option("--functions", "package", default=None, envvar="STEPKIT_FUNCTIONS",
              help="The package defining the app (env STEPKIT_FUNCTIONS)  [default: functions]")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def check(package: str | None, as_json: bool) -> None:
    """Review functions/ for durable-function mistakes; exit 1 on critical or error findings.

    Missing ids, waits without a timeout, payments without an idempotency key (errors);
    calls out with no concurrency limit, vague step ids, bare-number sleeps (warnings);
    default retries (info). Each finding names the file, line and fix.
    """
    from runtime.check import FAILING, check_project, render

    findings = check_project(Path.cwd(), package or "functions")
    if as_json:
        click.echo(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        click.echo(render(findings))
    if any(f.severity in FAILING for f in findings):
        raise SystemExit(1)


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
    _echo_run_id(_client(url, use_aws).fire_cron(function_id), as_json)


def _echo_run_id(run_id: str, as_json: bool) -> None:
    click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)


@cli.command()
@click.argument("function_id")
@click.option("--data", callback=_json_object, help="The run's event data, a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id as JSON.")
@url_option
@aws_option
def invoke(function_id: str, data: Any, as_json: bool, url: str, use_aws: bool) -> None:
    """Start a run of FUNCTION_ID by hand (its event: stepkit/function.invoked); print its id."""
    _echo_run_id(_client(url, use_aws).invoke(function_id, data or {}), as_json)
    if data is None:
        click.echo("note: no --data given: invoked with {}", err=True)


@cli.command()
@click.argument("run_id")
@click.option("--from", "from_step", default=None, metavar="STEP",
              help="Fork: reuse the results recorded before STEP, run STEP and what follows.")
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id as JSON.")
@url_option
@aws_option
def rerun(run_id: str, from_step: str | None, as_json: bool, url: str, use_aws: bool) -> None:
    """Start a new run of RUN_ID's function with the same events; print its id."""
    _echo_run_id(_client(url, use_aws).rerun(run_id, from_step), as_json)


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
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@url_option
@aws_option
def runs(
    function_id: str | None, status: str | None, since: float | None, limit: int, as_json: bool,
    url: str, use_aws: bool,
) -> None:
    """List recent runs, newest first."""
    client = _client(url, use_aws)
    found = client.runs(function_id=function_id, status=status, limit=limit, since=since)
    answer(found, as_json, runs_view)
    try:
        notice = dlq_notice(client.dead_letter_count())
    except click.ClickException:
        notice = None  # the notice is a courtesy: never fail the listing for it
    if notice:
        # On stderr under --json, so the JSON on stdout stays parseable.
        emit([Styled(notice, "red")], err=as_json)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@url_option
@aws_option
def run(run_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Show run RUN_ID and its step timeline."""
    found = _client(url, use_aws).run(run_id)
    answer(found, as_json, run_view)


@cli.group()
def dlq() -> None:
    """Messages in the dead-letter queues: list them, redrive them."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@url_option
@aws_option
def dlq_list(as_json: bool, url: str, use_aws: bool) -> None:
    """List what sits in the dead-letter queues (the messages stay there)."""
    found = _client(url, use_aws).dead_letters()
    answer(found, as_json, dead_letters_view)


@dlq.command("redrive")
@click.option("--queue", default=None, help="Only this dead-letter queue (as `dlq list` names it).")
@click.option("--id", "message_id", default=None, help="Only this message id.")
@url_option
@aws_option
def dlq_redrive(queue: str | None, message_id: str | None, url: str, use_aws: bool) -> None:
    """Send dead-lettered messages back to their queues; each leaves the DLQ once sent."""
    redriven = _client(url, use_aws).redrive(queue=queue, message_id=message_id)
    noun = "message" if len(redriven) == 1 else "messages"
    click.echo(f"redrove {len(redriven)} {noun}")


def main() -> None:
    """Run the ``stepkit`` console script."""
    cli(prog_name="stepkit")


if __name__ == "__main__":
    main()
