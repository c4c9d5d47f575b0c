"""The ``stepkit`` command line: a local dev server, and commands that talk to it.

- ``stepkit dev``: load the app, run it on the local SQLite backend, serve API and dashboard.
- ``stepkit dashboard [--aws]``: the dashboard alone, over a local database or the deployed app.
- ``stepkit send NAME``: send an event.
- ``stepkit runs``: list runs; ``stepkit run RUN_ID``: one run and its step timeline.
- ``stepkit cancel-all`` / ``replay-all``: cancel or replay every run matching a filter.
- ``stepkit dlq list|redrive``: what sits in the dead-letter queues; put it back to work.
- ``stepkit check``: review ``functions/`` for durable-function mistakes.
- ``stepkit deploy-check``: whether deploying ``functions/`` would strand runs in flight.
- ``stepkit pause FUNCTION [--reason]`` / ``resume FUNCTION``: hold a function's work, let it go on.
- ``stepkit keys create|list|rotate|revoke``: the event keys of the HTTPS event endpoint.

One module per command group (``dev``, ``dashboard``, ``runs``, ``events``, ``functions``,
``dlq``, ``review``, ``pausing``, ``keys``), each adding its commands to the group in
:mod:`runtime.cli.base`; how answers are printed is :mod:`runtime.cli.output`. Commands that
talk to an app do it through a
:class:`~runtime.control.ControlPlane`.

Answers are tables drawn with rich, statuses in colour, when stdout is a terminal (rich
honours ``NO_COLOR``), and plain aligned text when it is not (piped, captured), so scripts
read the same text as before; ``--json`` prints JSON either way.

Exit codes: 0 on success, 1 on errors (unreachable server, rejected request, bad app), and
click's 2 for usage errors (unknown option, invalid ``--data`` JSON...).
"""

from runtime.cli import (  # noqa: F401 - add commands
    bulk,
    dashboard,
    deploys,
    dev,
    dlq,
    events,
    functions,
    keys,
    pausing,
    review,
    runs,
)
from runtime.cli.base import cli


def main() -> None:
    """Run the ``stepkit`` console script."""
    cli(prog_name="stepkit")


__all__ = ["cli", "main"]
