"""``stepkit keys create|list|rotate|revoke``: the event keys of ``POST /e/<key>``.

A key is printed once, by the ``create`` or ``rotate`` that made it, and never again: the
store keeps only its SHA-256 (:mod:`runtime.ingress.keys`). ``ID`` is a key's id as listed
(12 hex digits) or the whole key, pasted: only the id is taken from it and sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from runtime.cli.base import JSON_HELP, aws_option, cli, control_plane, url_option
from runtime.cli.output import Part, Styled, Table, answer, fmt_time
from runtime.durations import parse_duration

#: Printed under every key shown: the one time it is.
SHOWN_ONCE = ("This key will not be shown again: keep it in a secret store now (a lost key "
              "can only be rotated).")


@cli.group("keys")
def keys_group() -> None:
    """Event keys: who may post events to the HTTPS event endpoint (POST /e/<key>)."""


@keys_group.command("create")
@click.option("--label", default="", help="What the key is for (shown in `keys list`).")
@click.option("--prefix", "prefixes", multiple=True,
              help="Only event names starting with this (repeatable; none: any name).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " The key is `key`.")
@url_option
@aws_option
def keys_create(label: str, prefixes: tuple[str, ...], as_json: bool, url: str,
                use_aws: bool) -> None:
    """Make an event key and print it, the only time it is shown."""
    made = control_plane(url, use_aws).create_key(label=label, prefixes=prefixes)
    answer(made, as_json, created_view)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def keys_list(as_json: bool, url: str, use_aws: bool) -> None:
    """List the event keys (revoked ones for 30 days); never the keys themselves."""
    answer(control_plane(url, use_aws).event_keys(), as_json, keys_view)


def _grace(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``--grace`` in seconds (click callback): a duration with its unit, such as ``1h``."""
    try:
        return parse_duration(value, where="--grace").total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@keys_group.command("rotate")
@click.argument("key_id", metavar="ID")
@click.option("--grace", default="0s", callback=_grace, show_default=True,
              help="How long the old key still works (30s, 15m, 1h, 7d), for senders to move.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " The new key is `key`.")
@url_option
@aws_option
def keys_rotate(key_id: str, grace: float, as_json: bool, url: str, use_aws: bool) -> None:
    """Make a key in the place of ID (same label and prefixes); ID stops after --grace."""
    answer(control_plane(url, use_aws).rotate_key(key_id, grace), as_json, rotated_view)


@keys_group.command("revoke")
@click.argument("key_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@url_option
@aws_option
def keys_revoke(key_id: str, as_json: bool, url: str, use_aws: bool) -> None:
    """Revoke ID now: the endpoint refuses it within 30 seconds."""
    answer(control_plane(url, use_aws).revoke_key(key_id), as_json,
           lambda found: [f"{found['id']}: {key_state(found)}"])


def key_state(key: dict[str, Any]) -> str:
    """``live``, ``revokes at ...`` (a rotation's grace), ``revoked at ...``; and its successor."""
    if key.get("revoked") is None:
        state = "live"
    else:
        state = f"{'revokes' if key.get('live') else 'revoked'} at {fmt_time(key['revoked'])}"
    if key.get("replaced_by"):
        state += f", replaced by {key['replaced_by']}"
    return state


def _allowed(key: dict[str, Any]) -> str:
    return ", ".join(key.get("prefixes") or ()) or "(any name)"


def keys_view(found: Sequence[dict[str, Any]]) -> list[Part]:
    """The ``stepkit keys list`` table."""
    if not found:
        return ["no event keys; make one with `stepkit keys create`"]
    rows = [[k["id"], k.get("label") or "-", _allowed(k), fmt_time(k.get("created")),
             key_state(k)] for k in found]
    return [Table(["ID", "LABEL", "PREFIXES", "CREATED", "STATE"], rows)]


def _shown(made: dict[str, Any]) -> list[Part]:
    """The key on a line of its own (to copy), and that it will not be shown again."""
    return [Styled(made["key"], bold=True), Styled(SHOWN_ONCE, "yellow")]


def created_view(made: dict[str, Any]) -> list[Part]:
    """What ``stepkit keys create`` prints."""
    label = f" '{made['label']}'" if made.get("label") else ""
    return [f"created event key {made['id']}{label} for {_allowed(made)}:", *_shown(made)]


def rotated_view(made: dict[str, Any]) -> list[Part]:
    """What ``stepkit keys rotate`` prints: the new key, and when the old one stops."""
    old = made.get("replaces") or {}
    return [f"rotated {old.get('id', '?')} ({key_state(old)}) to {made['id']}:",
            *_shown(made)]
