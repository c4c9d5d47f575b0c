"""Event keys in the control plane's shape: the API's JSON over the key gates.

Every implementation of :class:`~runtime.control.ControlPlane` that reaches a store (the dev
server's, ``--aws``) manages keys through these, so the three answer alike; what a key is
and how it is kept is :mod:`runtime.ingress.keys`.

A key is shown as ``{id, label, prefixes, created, revoked, replaced_by, live}`` (times ISO
8601, as everywhere in the API), never with its digest; the answers to a creation and a
rotation alone add ``key``, the key itself, which nothing keeps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from runtime.control import BadRequestError, EventKeyNotFoundError, Json
from runtime.control.views import iso
from runtime.ingress import keys
from runtime.ingress.keys import KeyInfo
from runtime.orchestration.protocols import Clock, GateStore

#: An id as listed, or a whole key (``sk_<id>_<secret>``) pasted in its place.
_ID = re.compile(r"^(?:sk_)?([0-9a-f]{12})(?:_[A-Za-z0-9_-]*)?$")


def key_ident(given: str) -> str:
    """The id of a key named by its id or by the whole key (people paste keys).

    Only the id is taken from a whole key: it is what travels (a URL path, a log) and the
    secret never does.

    Raises:
        BadRequestError: ``given`` is neither (the message does not echo it: it may be a key).
    """
    found = _ID.match(given.strip()) if isinstance(given, str) else None
    if found is None:
        raise BadRequestError("not an event key id: expected 12 hex digits, or a whole key "
                              "sk_<id>_... (see `stepkit keys list`)")
    return found.group(1)


def key_json(info: KeyInfo, now: float) -> Json:
    """A key as the API shows it: no digest, times ISO 8601."""
    shown = info.to_json(now)
    return {**shown, "created": iso(info.created), "revoked": iso(info.revoked)}


def list_keys(store: GateStore, clock: Clock) -> list[Json]:
    """Every key (revoked ones while they are kept), newest first."""
    now = clock.now()
    return [key_json(info, now) for info in keys.list_keys(store)]


def create_key(store: GateStore, clock: Clock, *, label: str = "",
               prefixes: Sequence[str] = ()) -> Json:
    """Make a key; the answer carries it (``key``), the only time it is shown.

    Raises:
        BadRequestError: A label or prefix that cannot be kept.
    """
    try:
        info, key = keys.create_key(store, clock, label=label, prefixes=prefixes)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    return {**key_json(info, clock.now()), "key": key}


def rotate_key(store: GateStore, clock: Clock, ident: str, grace: float = 0.0) -> Json:
    """A new key in the place of ``ident``, which stops after ``grace`` seconds.

    Returns:
        The new key (with ``key``) and, as ``replaces``, the old one as it now stands.

    Raises:
        BadRequestError: ``ident`` is not a key id, or ``grace`` is negative.
        EventKeyNotFoundError: No key has this id.
    """
    ident = key_ident(ident)
    if not grace >= 0:  # also refuses NaN
        raise BadRequestError(f"grace: expected a duration of at least 0s, got {grace!r}")
    try:
        info, key = keys.rotate_key(store, clock, ident, grace)
    except keys.KeyNotFoundError as exc:
        raise EventKeyNotFoundError(str(exc)) from None
    now = clock.now()
    old = KeyInfo.of(ident, store.gate(keys.KEY_SCOPE, ident))
    return {**key_json(info, now), "key": key,
            "replaces": None if old is None else key_json(old, now)}


def revoke_key(store: GateStore, clock: Clock, ident: str) -> Json:
    """Revoke ``ident`` now (an earlier revocation stands); the key as it now stands.

    Raises:
        BadRequestError: ``ident`` is not a key id.
        EventKeyNotFoundError: No key has this id.
    """
    ident = key_ident(ident)
    try:
        info = keys.revoke_key(store, clock, ident)
    except keys.KeyNotFoundError as exc:
        raise EventKeyNotFoundError(str(exc)) from None
    return key_json(info, clock.now())
