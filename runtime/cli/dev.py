"""``stepkit dev``: the app on the local SQLite backend, with its API and dashboard."""

from __future__ import annotations

import logging
import signal
import socket
import sqlite3
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from runtime.cli.base import cli
from runtime.cli.output import say

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from runtime.devserver.api import DevBackend

DEFAULT_DB = ".stepkit/dev.sqlite3"


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
@click.option("--require-keys", is_flag=True,
              help="POST /e/<key> checks event keys (`stepkit keys create`), as deployed; "
                   "by default any key is accepted locally.")
def dev(
    port: int, host: str, db: Path, package: str | None, workers: int, log_level: str,
    durability: str, reload: bool, require_keys: bool,
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
    sock = listen(host, port)
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
        say(
            f"stepkit dev server for app '{app.id}' at http://{shown}:{sock.getsockname()[1]}"
        )
        say(f"  runs stored in {db}")
        say(f"  functions: {', '.join(sorted(app.functions)) or '(none)'}")
        say(f"  events: POST /e/<event key> ({'keys checked' if require_keys else 'any key'})"
            + (f"; webhooks: POST /webhooks/<{'|'.join(sorted(app.webhooks))}>"
               if app.webhooks else ""))
        _serve(backend, sock, log_level.lower(), host, require_keys)
    finally:
        say("stopping: finishing the work in hand")
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
        say(f"reloading: {', '.join(names)} changed")

    run_process(root, target=command, target_type="command", callback=changed,
                watch_filter=lambda _change, path: path.endswith(".py"))


def _serve(backend: DevBackend, sock: socket.socket, log_level: str, host: str,
           require_keys: bool = False) -> None:
    """Serve the API on ``sock`` until Ctrl-C or SIGTERM, which both end it cleanly.

    Requests must name a loopback host or ``host``, the address bound (a guard against DNS
    rebinding, :mod:`runtime.devserver.guard`).
    """
    from runtime.devserver.api import create_app

    serve(create_app(backend, allowed_hosts=[host], require_keys=require_keys), sock,
          log_level)


def serve(app: ASGIApp, sock: socket.socket, log_level: str) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C or SIGTERM, which both end it cleanly."""
    import uvicorn

    config = uvicorn.Config(
        app,
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


def listen(host: str, port: int) -> socket.socket:
    """Bind the server socket up front, so a busy port is a clear error before anything starts.

    It listens at once too: the URL is printed before the server runs, and a client that
    follows it at once waits in the backlog instead of being refused.
    """
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
    sock.listen(socket.SOMAXCONN)
    return sock
