"""Event keys: who may post events to ``/e/<key>``, stored only as hashes.

A key is ``sk_<id>_<secret>``: ``id`` (12 hex digits) names it in listings and logs, and is
where it is stored; ``secret`` is 32 random bytes (URL-safe base64). The store keeps, per
key, one gate (scope :data:`KEY_SCOPE`, key the id; on AWS the item ``GATE#eventkey`` /
``<id>``) holding the SHA-256 of the whole key, its label, the event-name prefixes it may
send and its revocation. The key itself is shown once, when it is created, and is never
written anywhere: not to the table, not to the template, not to a log.

A plain SHA-256 is enough: the secret is 256 random bits, so there is nothing to guess by
brute force, which is what slow password hashes are for. The stored hash is compared with
the presented key's in constant time (``hmac.compare_digest``).

The endpoint reads a key's gate once per :data:`KEY_CACHE_SECONDS` per warm container (one
consistent ``GetItem``, 1 RCU), so a revocation takes effect within that time. Every key
lives under one partition key on AWS; reads are cached, and writes happen only when a person
creates, rotates or revokes a key, so that key takes a trickle.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errors import StepkitError
from runtime.events import name_problem
from runtime.orchestration.protocols import Clock, GateStore
from runtime.records import Gate, GateWrite

#: The gate scope of event keys: one gate per key id.
KEY_SCOPE = "eventkey"
#: How long the endpoint trusts a key it read (seconds): the most a revocation waits.
KEY_CACHE_SECONDS = 30.0
#: Keys a container remembers (each about 300 bytes): a flood of made-up ids cannot grow it.
KEY_CACHE_ENTRIES = 1000
#: How long a revoked key is still listed before its gate expires (and is deleted).
REVOKED_KEPT_SECONDS = 30 * 86_400.0
MAX_PREFIXES = 20
MAX_LABEL_CHARS = 100
_KEY = re.compile(r"^sk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_TRIES = 16


class KeyRefusedError(StepkitError):
    """A presented key that is not a live key (answered 401).

    The message says why without echoing the key: not a key's shape, unknown, revoked,
    or expired after a rotation.
    """


class KeyNotAllowedError(StepkitError):
    """A live key used for an event name outside its prefixes (answered 403)."""


class KeyNotFoundError(StepkitError):
    """No key has this id (the CLI's revoke and rotate)."""


@dataclass(frozen=True)
class KeyInfo:
    """What is kept of an event key: never the key itself.

    Attributes:
        id: The key's public id (``sk_<id>_...``).
        label: What it is for, as its creator said.
        prefixes: Event-name prefixes it may send (empty: any name).
        created: Epoch seconds.
        revoked: When it was revoked, or when a rotation's grace ends (``None``: live).
        replaced_by: The id of the key a rotation made in its place.
        digest: The SHA-256 of the key (hex).
    """

    id: str
    label: str
    prefixes: tuple[str, ...]
    created: float
    revoked: float | None
    replaced_by: str | None
    digest: str

    def live(self, now: float) -> bool:
        """Whether the key is accepted at ``now``."""
        return self.revoked is None or now < self.revoked

    def allows(self, name: str) -> bool:
        """Whether the key may send an event named ``name``."""
        return not self.prefixes or any(name.startswith(p) for p in self.prefixes)

    def to_json(self, now: float) -> dict[str, Any]:
        """The API's and the CLI's shape (no digest: it is nobody's business)."""
        return {"id": self.id, "label": self.label, "prefixes": list(self.prefixes),
                "created": self.created, "revoked": self.revoked,
                "replaced_by": self.replaced_by, "live": self.live(now)}

    def state(self) -> dict[str, Any]:
        """The gate state that stores it."""
        return {"label": self.label, "prefixes": list(self.prefixes), "created": self.created,
                "revoked": self.revoked, "replaced_by": self.replaced_by,
                "sha256": self.digest}

    @classmethod
    def of(cls, key_id: str, gate: Gate) -> KeyInfo | None:
        """The key a gate holds, if any."""
        state = gate.state
        if not state or "sha256" not in state:
            return None
        revoked, replaced = state.get("revoked"), state.get("replaced_by")
        return cls(key_id, str(state.get("label") or ""), tuple(state.get("prefixes") or ()),
                   float(state["created"]), None if revoked is None else float(revoked),
                   None if replaced is None else str(replaced), str(state["sha256"]))


def digest(key: str) -> str:
    """The SHA-256 of a key, as stored (hex)."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str:
    """The id of a presented key.

    Raises:
        KeyRefusedError: It does not have a key's shape.
    """
    found = _KEY.match(key)
    if found is None:
        raise KeyRefusedError("not a stepkit event key (expected sk_<12 hex>_<43 characters>, "
                              "as `stepkit keys create` prints)")
    return found.group(1)


def _check_prefixes(prefixes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    if len(prefixes) > MAX_PREFIXES:
        raise ValueError(f"prefixes: at most {MAX_PREFIXES}, got {len(prefixes)}")
    for p in prefixes:
        # A prefix is the start of a valid name: check it as one (a trailing "/" or "." is
        # allowed since names may contain them).
        problem = name_problem(p.rstrip("/.:-_") or p) if isinstance(p, str) else "not a string"
        if problem is not None or not p:
            raise ValueError(f"prefixes: {p!r} cannot start an event name ({problem or 'empty'})")
    return tuple(prefixes)


def create_key(store: GateStore, clock: Clock, *, label: str = "",
               prefixes: Sequence[str] = ()) -> tuple[KeyInfo, str]:
    """Make a new key; return what is stored of it and the key, which is shown only now.

    Raises:
        ValueError: A label or prefix that cannot be kept.
    """
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"label: a string of at most {MAX_LABEL_CHARS} characters")
    allowed = _check_prefixes(prefixes)
    for _ in range(_TRIES):  # a 48-bit id collides with an existing one almost never
        ident = secrets.token_hex(6)
        key = f"sk_{ident}_{secrets.token_urlsafe(32)}"
        info = KeyInfo(ident, label, allowed, clock.now(), None, None, digest(key))
        if store.put_gate(GateWrite(KEY_SCOPE, ident, info.state(), 0)):
            return info, key
    raise RuntimeError("creating an event key: every new id was taken")  # pragma: no cover


def list_keys(store: GateStore, limit: int = 1000) -> list[KeyInfo]:
    """The app's keys (revoked ones for :data:`REVOKED_KEPT_SECONDS`), newest first."""
    found = [KeyInfo.of(ident, gate) for ident, gate in store.list_gates(KEY_SCOPE, limit)]
    return sorted((k for k in found if k is not None), key=lambda k: -k.created)


def revoke_key(store: GateStore, clock: Clock, ident: str, *, after: float = 0.0,
               replaced_by: str | None = None) -> KeyInfo:
    """Revoke key ``ident`` now, or ``after`` seconds from now (a rotation's grace).

    An earlier revocation stands: revoking again never extends a key's life.

    Raises:
        KeyNotFoundError: No key has this id.
        RuntimeError: Its gate kept changing under us.
    """
    for _ in range(_TRIES):
        gate = store.gate(KEY_SCOPE, ident)
        info = KeyInfo.of(ident, gate)
        if info is None:
            raise KeyNotFoundError(f"no event key {ident!r} (see `stepkit keys list`)")
        when = clock.now() + max(0.0, after)
        if info.revoked is not None and info.revoked <= when:
            return info
        new = KeyInfo(info.id, info.label, info.prefixes, info.created, when,
                      replaced_by or info.replaced_by, info.digest)
        if store.put_gate(GateWrite(KEY_SCOPE, ident, new.state(), gate.version,
                                    expires_at=when + REVOKED_KEPT_SECONDS)):
            return new
    raise RuntimeError(f"revoking event key {ident!r}: its gate kept changing")


def rotate_key(store: GateStore, clock: Clock, ident: str,
               grace: float = 0.0) -> tuple[KeyInfo, str]:
    """A new key with ``ident``'s label and prefixes; ``ident`` stops after ``grace`` seconds.

    Raises:
        KeyNotFoundError: No key has this id.
    """
    old = KeyInfo.of(ident, store.gate(KEY_SCOPE, ident))
    if old is None:
        raise KeyNotFoundError(f"no event key {ident!r} (see `stepkit keys list`)")
    info, key = create_key(store, clock, label=old.label, prefixes=old.prefixes)
    revoke_key(store, clock, ident, after=grace, replaced_by=info.id)
    return info, key


class EventKeys:
    """The endpoint's view of the keys: each id read at most once per :data:`KEY_CACHE_SECONDS`.

    Args:
        store: Where keys are kept.
        clock: Time source.
        ttl: How long a read is trusted.
    """

    def __init__(self, store: GateStore, clock: Clock, ttl: float = KEY_CACHE_SECONDS) -> None:
        self.store = store
        self.clock = clock
        self.ttl = ttl
        self._read: OrderedDict[str, tuple[float, KeyInfo | None]] = OrderedDict()
        self._lock = threading.Lock()

    def _info(self, ident: str, now: float) -> KeyInfo | None:
        with self._lock:
            cached = self._read.get(ident)
        if cached is not None and now < cached[0] + self.ttl:
            return cached[1]
        info = KeyInfo.of(ident, self.store.gate(KEY_SCOPE, ident))
        with self._lock:
            self._read[ident] = (now, info)
            self._read.move_to_end(ident)
            while len(self._read) > KEY_CACHE_ENTRIES:
                self._read.popitem(last=False)
        return info

    def check(self, presented: str) -> KeyInfo:
        """The live key ``presented`` is.

        Raises:
            KeyRefusedError: It is not one, saying why (the key is never echoed).
        """
        ident = key_id(presented)
        now = self.clock.now()
        info = self._info(ident, now)
        # Compared in constant time even when the id is unknown, so timing tells nothing.
        stored = info.digest if info is not None else "0" * 64
        if not hmac.compare_digest(stored, digest(presented)) or info is None:
            raise KeyRefusedError(f"unknown event key sk_{ident}_…")
        if not info.live(now):
            raise KeyRefusedError(f"event key sk_{ident}_… was revoked"
                                  + (f" (rotated to sk_{info.replaced_by}_…)"
                                     if info.replaced_by else ""))
        return info

    @staticmethod
    def permit(info: KeyInfo, names: Sequence[str]) -> None:
        """Refuse the events a key may not send.

        Raises:
            KeyNotAllowedError: Naming the first event outside the key's prefixes.
        """
        for i, name in enumerate(names):
            if not info.allows(name):
                where = "event" if len(names) == 1 else f"event[{i}]"
                raise KeyNotAllowedError(
                    f"{where}.name: event key sk_{info.id}_… may send only names starting "
                    f"with {', '.join(repr(p) for p in info.prefixes)}; got {name!r}")
