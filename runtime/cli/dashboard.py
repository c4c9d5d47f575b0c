"""``stepkit dashboard``: the dashboard alone, no workers: over a local database or ``--aws``.

The same API and page as ``stepkit dev`` (:func:`runtime.devserver.api.create_dashboard`,
behind the same guards), served on loopback only, over a control plane that runs nothing:

- without ``--aws``: a local database (``--db``) opened by a :class:`LocalBackend` whose
  workers and cron thread are never started; actions queue their work in the file, and a
  ``stepkit dev`` on the same file runs it;
- with ``--aws``: the deployed app (:class:`~runtime.control.aws.AwsControl`) with the
  caller's AWS credentials, region and stage as the other ``--aws`` commands take them. It
  refreshes every :data:`AWS_REFRESH_SECONDS` (each refresh reads the table through its
  indexes: ARCHITECTURE.md, "The dashboard on a deployed stack", says what that costs).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from runtime.cli.base import aws_option, cli
from runtime.cli.dev import DEFAULT_DB, listen, serve
from runtime.cli.output import say
from runtime.control import ControlPlane, Json

#: Where the dashboard listens by default: beside a dev server's 8288, so both can run.
DEFAULT_PORT = 8289
#: Seconds between refreshes over a deployed app: each one is read units on the table.
AWS_REFRESH_SECONDS = 10
#: Runs (and events) in a page over a deployed app: each run shown is 2 strongly consistent
#: item reads per refresh, so half the dev server's page halves what a refresh costs.
AWS_PAGE_SIZE = 50
#: Seconds between refreshes over a local database (reads of a local file: free).
LOCAL_REFRESH_SECONDS = 2
_LOOPBACK = "127.0.0.1"


@cli.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True,
              type=click.IntRange(0, 65535), help="Port to listen on, on 127.0.0.1 only.")
@click.option("--db", default=DEFAULT_DB, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The local database to show (unused with --aws).")
@click.option("--functions", "package", default=None, envvar="STEPKIT_FUNCTIONS",
              help="The package defining the app (env STEPKIT_FUNCTIONS)  [default: functions]")
@click.option("--refresh", type=click.IntRange(1, 3600), default=None,
              help=f"Seconds between refreshes  [default: {LOCAL_REFRESH_SECONDS}, "
                   f"{AWS_REFRESH_SECONDS} with --aws]")
@aws_option
def dashboard(port: int, db: Path, package: str | None, refresh: int | None,
              use_aws: bool) -> None:
    """Serve the dashboard without running any function: a local database, or --aws."""
    from runtime.devserver.api import create_dashboard

    if use_aws and package:  # AwsControl reads the app (its functions, queues) from there
        os.environ["STEPKIT_FUNCTIONS"] = package
    with ExitStack() as stack:
        control, about = (aws_dashboard() if use_aws
                          else local_dashboard(db, package, stack))
        about["refresh_seconds"] = refresh or about["refresh_seconds"]
        sock = stack.enter_context(listen(_LOOPBACK, port))
        say(f"stepkit dashboard at http://{_LOOPBACK}:{sock.getsockname()[1]}")
        say(f"  {about['label']}; refreshing every {about['refresh_seconds']} s")
        serve(create_dashboard(control, about=about), sock, "warning")


def aws_dashboard() -> tuple[ControlPlane, Json]:
    """The deployed app's control plane and what the page says of it.

    Reads one run first, so a missing region, credentials or table is a one-line error
    before the server starts.
    """
    from runtime.control.aws import AwsControl
    from runtime.orchestration.protocols import RunQuery

    control = AwsControl()
    control.list_runs(RunQuery(limit=1))
    return control, {**control.about(), "refresh_seconds": AWS_REFRESH_SECONDS,
                     "page_size": AWS_PAGE_SIZE}


def local_dashboard(db: Path, package: str | None, stack: ExitStack) -> tuple[ControlPlane, Json]:
    """A local database's control plane, its workers never started, and what the page says."""
    from runtime.backends.local import LocalBackend
    from runtime.devserver.api import DEV_PAGE_SIZE
    from runtime.discovery import load_app
    from runtime.errors import ConfigurationError

    if not db.is_file():
        raise click.ClickException(f"no database at {db}: give the --db of a `stepkit dev`, "
                                   "or use --aws for the deployed app")
    try:
        app = load_app(package, root=Path.cwd())
        backend = stack.enter_context(LocalBackend(app, db))  # never started: no workers
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    except sqlite3.Error as exc:
        raise click.ClickException(f"cannot open --db {db}: {exc}") from None
    label = (f"local database {db}, app '{app.id}' (no workers: what you start here runs "
             "when `stepkit dev` runs on this file)")
    about: dict[str, Any] = {"target": "local", "app_id": app.id, "db": str(db),
                             "label": label, "refresh_seconds": LOCAL_REFRESH_SECONDS,
                             "page_size": DEV_PAGE_SIZE, "disabled": {}}
    return backend.control, about
