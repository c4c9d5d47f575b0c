"""The ``stepkit`` group and what its commands share: options, and the control plane.

Every command that talks to an app gets a :class:`~runtime.control.ControlPlane` from
:func:`control_plane`: a running dev server's (``--url``) or the deployed app's (``--aws``).
A control plane's error ends the command with its one-line message (exit 1), in one place:
the group.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from runtime.cli.output import escape, say
from runtime.control import CONTROL_ERRORS, ControlPlane

DEFAULT_URL = "http://127.0.0.1:8288"
F = TypeVar("F", bound=Callable[..., Any])
JSON_HELP = "Print JSON (the API's shape) instead of a table."


class StepkitGroup(click.Group):
    """The ``stepkit`` group: a control plane's error is the command's one-line error."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a control plane's error becomes ``Error: <message>``, exit 1."""
        try:
            return super().invoke(ctx)
        except CONTROL_ERRORS as exc:
            # The message may quote what the server answered: escaped like any output.
            raise click.ClickException(escape(str(exc))) from None


@click.group(cls=StepkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stepkit", message="%(prog)s %(version)s")
def cli() -> None:
    """stepkit: durable functions. Develop locally with `stepkit dev`."""


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


def control_plane(url: str, use_aws: bool = False) -> ControlPlane:
    """The control plane a command talks to: the deployed app's, or the dev server's at ``url``."""
    if use_aws:
        from runtime.control.aws import AwsControl

        return AwsControl()
    from runtime.control.http import HttpControl

    return HttpControl(url)


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
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


def echo_run_id(run_id: str, as_json: bool) -> None:
    """Print a new run's id (as ``{"run_id": ...}`` with ``--json``)."""
    if as_json:
        click.echo(json.dumps({"run_id": run_id}))
    else:
        say(run_id)
