"""Webhook signature schemes: Stripe's, GitHub's and a generic HMAC-SHA256 header.

Each is a frozen dataclass implementing :class:`runtime.ingress.webhooks.Verifier`: it names
its secret (``secret=``: the name, never the value) and checks a request against the value the
endpoint read. Every comparison is :func:`hmac.compare_digest`; a refusal is a
:class:`SignatureError` saying which header and why, and never showing the secret or the
signature it expected.

A replay inside the timestamp tolerance (or of a scheme that signs no time) is stopped by the
delivery id: it becomes the event id, and the endpoint drops an id it saw in the last 24 h.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import string
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from runtime.durations import user_duration
from runtime.errors import ConfigurationError
from runtime.ingress.webhooks import SignatureError, Verified, WebhookRequest

__all__ = ["GitHub", "Hmac", "Stripe"]

#: Five minutes: Stripe's libraries' default, and room for a provider's clock to be off.
DEFAULT_TOLERANCE = timedelta(minutes=5)
#: Epoch seconds as providers send them: digits only (no sign, fraction or ISO form).
_SECONDS = re.compile(r"^[0-9]{1,12}$")
#: A header name (RFC 9110's token).
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
#: A SHA-256 digest's length: a signature of another length is garbled, not just wrong.
_DIGEST_BYTES = 32
#: Hex characters of a derived delivery id: 128 bits, ample to tell deliveries apart.
_DERIVED_ID_CHARS = 32


def _secret_name(value: object, scheme: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{scheme}(secret=...): the secret's name, e.g. 'WEBHOOK_SECRET' (its value is "
            f"read at run time), got {value!r}")
    return value


def _seconds(value: str | timedelta, where: str) -> float:
    try:
        return user_duration(value, where=where).total_seconds()
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _key(request: WebhookRequest, secret: str, name: str) -> bytes:
    if not secret:  # an empty key would let anyone sign
        raise SignatureError(f"webhook {request.source!r}: the secret {name!r} is empty")
    return secret.encode("utf-8")


def _header(request: WebhookRequest, name: str) -> str:
    value = request.headers.get(name.lower())
    if value is None:
        raise SignatureError(f"webhook {request.source!r}: the header {name} is missing")
    return value.strip()


def _sign(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _timestamp(request: WebhookRequest, header: str, text: str) -> int:
    if not _SECONDS.match(text):
        raise SignatureError(f"webhook {request.source!r}: the header {header} has the "
                             f"timestamp {text[:40]!r}; expected epoch seconds (digits only)")
    return int(text)


def _check_age(request: WebhookRequest, header: str, signed_at: int, now: float,
               tolerance: float) -> None:
    off = now - signed_at
    if abs(off) <= tolerance:
        return
    how = f"{off:.0f} s old" if off > 0 else f"{-off:.0f} s in the future"
    raise SignatureError(
        f"webhook {request.source!r}: the header {header} was signed at {signed_at}, "
        f"{how}; the tolerance is {tolerance:g} s (a replay, or a clock that is off)")


def _derived_id(digest: bytes) -> str:
    """A delivery id for a scheme that sends none: an exact replay has the same one."""
    return hashlib.sha256(digest).hexdigest()[:_DERIVED_ID_CHARS]


@dataclass(frozen=True)
class Stripe:
    """Stripe's ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``.

    ``v1`` is the hex HMAC-SHA256 of ``"<t>." + body`` keyed with the endpoint's signing
    secret (``whsec_...``) as it is written. Stripe sends one ``v1`` per active secret while a
    secret is being rolled, so any match is accepted; other schemes (``v0``) are ignored. The
    delivery id is the body's event id (``evt_...``): Stripe's retries of an event carry it.

    Args:
        secret: The signing secret's name.
        tolerance: How far ``t`` may be from now, either way (``"5m"`` or a ``timedelta``).
    """

    secret: str
    tolerance: str | timedelta = DEFAULT_TOLERANCE
    _tolerance: float = field(init=False, repr=False, compare=False)

    HEADER = "Stripe-Signature"

    def __post_init__(self) -> None:
        _secret_name(self.secret, "Stripe")
        object.__setattr__(self, "_tolerance", _seconds(self.tolerance, "Stripe(tolerance=...)"))

    def verify(self, request: WebhookRequest, secret: str, now: float) -> Verified:
        """Check the ``v1`` signatures, then the time they were made at.

        Raises:
            SignatureError: The header is missing or garbled, no ``v1`` matches, or ``t`` is
                further from ``now`` than the tolerance.
        """
        key = _key(request, secret, self.secret)
        stamps, signatures, schemes = self._parse(request)
        if len(stamps) != 1:
            raise SignatureError(f"webhook {request.source!r}: the header {self.HEADER} has "
                                 f"{len(stamps)} timestamps (t=); expected one")
        if not signatures:
            found = ", ".join(sorted(schemes)) or "none"
            raise SignatureError(f"webhook {request.source!r}: the header {self.HEADER} has no "
                                 f"hex v1 signature (schemes found: {found})")
        signed_at = _timestamp(request, self.HEADER, stamps[0])
        expected = _sign(key, f"{signed_at}.".encode() + request.body)
        # No early exit: every candidate is compared, so time says nothing of which matched.
        matches = [hmac.compare_digest(expected, got) for got in signatures]
        if not any(matches):
            raise SignatureError(
                f"webhook {request.source!r}: no v1 signature in the header {self.HEADER} "
                f"({len(signatures)} sent) matches the body; is {self.secret!r} this "
                "endpoint's signing secret?")
        _check_age(request, self.HEADER, signed_at, now, self._tolerance)
        return Verified(delivery_id=_event_id(request), timestamp=float(signed_at))

    def _parse(self, request: WebhookRequest) -> tuple[list[str], list[bytes], set[str]]:
        stamps: list[str] = []
        signatures: list[bytes] = []
        schemes: set[str] = set()
        for item in _header(request, self.HEADER).split(","):
            scheme, eq, value = item.strip().partition("=")
            if not eq:
                raise SignatureError(f"webhook {request.source!r}: the header {self.HEADER} is "
                                     "not 't=<unix>,v1=<hex>'")
            schemes.add(scheme[:20])
            if scheme == "t":
                stamps.append(value)
            elif scheme == "v1" and (raw := _hex(value)) is not None:
                signatures.append(raw)
        return stamps, signatures, schemes - {"t"}


def _event_id(request: WebhookRequest) -> str | None:
    try:
        body = request.json()
    except ValueError:  # the transform says what is wrong with the body
        return None
    found = body.get("id") if isinstance(body, dict) else None
    return found if isinstance(found, str) and found else None


@dataclass(frozen=True)
class GitHub:
    """GitHub's ``X-Hub-Signature-256: sha256=<hex>``: HMAC-SHA256 of the body.

    GitHub signs no timestamp, so a captured request verifies for ever: what stops its replay
    is the delivery id (``X-GitHub-Delivery``, the same on GitHub's redeliveries), which
    becomes the event id, deduplicated for 24 h. That header is not signed either: a replay
    with another delivery id is not caught, so keep the secret secret and rotate it if a
    request leaks. Without the header, the id is derived from the signature, so an exact
    replay is still caught.

    Args:
        secret: The webhook secret's name.
    """

    secret: str

    HEADER = "X-Hub-Signature-256"
    PREFIX = "sha256="

    def __post_init__(self) -> None:
        _secret_name(self.secret, "GitHub")

    def verify(self, request: WebhookRequest, secret: str, now: float) -> Verified:
        """Check the body's signature (``now`` is unused: GitHub signs no time).

        Raises:
            SignatureError: The header is missing or garbled, or the signature does not match.
        """
        key = _key(request, secret, self.secret)
        value = _header(request, self.HEADER)
        got = _hex(value[len(self.PREFIX):]) if value.startswith(self.PREFIX) else None
        if got is None or len(got) != _DIGEST_BYTES:
            raise SignatureError(f"webhook {request.source!r}: the header {self.HEADER} is "
                                 "not 'sha256=<hex>'")
        expected = _sign(key, request.body)
        if not hmac.compare_digest(expected, got):
            raise SignatureError(
                f"webhook {request.source!r}: the header {self.HEADER} does not match the "
                f"body (is {self.secret!r} this webhook's secret?)")
        delivery = request.headers.get("x-github-delivery", "").strip()
        return Verified(delivery_id=delivery or _derived_id(got))


#: What a generic scheme's ``signed`` template may name.
_FIELDS = ("timestamp", "id", "body")


@dataclass(frozen=True)
class Hmac:
    """A generic HMAC-SHA256 signature header, for providers with a scheme of their own.

    The signed message is the ``signed`` template with ``{timestamp}`` and ``{id}`` replaced
    by those headers' values and ``{body}`` by the raw body bytes (``{{`` and ``}}`` are
    literal braces); the header holds ``prefix`` then the digest in ``encoding``. The
    delivery id is the ``id_header``'s value (taken as sent when ``signed`` does not name
    ``{id}``); without one, it is derived from the signature, so an exact replay is caught.

    Args:
        secret: The signing secret's name.
        header: The signature's header.
        timestamp_header: The header holding when it was signed (epoch seconds), or ``None``
            if the provider signs no time. If set, ``signed`` must name ``{timestamp}``: an
            unsigned time stops no replay.
        id_header: The header holding the delivery id, or ``None``. If ``signed`` names
            ``{id}``, the header is required.
        signed: The template of the signed message; it must name ``{body}``.
        encoding: ``"hex"`` or ``"base64"`` (standard alphabet, padded).
        prefix: What the header's value starts with before the digest (e.g. ``"sha256="``).
        tolerance: How far the timestamp may be from now, either way.

    Raises:
        ConfigurationError: An option is invalid, naming it.
    """

    secret: str
    header: str = "x-signature"
    timestamp_header: str | None = "x-timestamp"
    id_header: str | None = "x-webhook-id"
    signed: str = "{timestamp}.{body}"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    tolerance: str | timedelta = DEFAULT_TOLERANCE
    _tolerance: float = field(init=False, repr=False, compare=False)
    _parts: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _secret_name(self.secret, "Hmac")
        for option in ("header", "timestamp_header", "id_header"):
            value = getattr(self, option)
            if value is not None and not _is_header_name(value):
                raise ConfigurationError(f"Hmac({option}=...): {value!r} is not a header name")
        if self.header is None:
            raise ConfigurationError("Hmac(header=...): the signature's header is required")
        if self.encoding not in ("hex", "base64"):
            raise ConfigurationError(
                f"Hmac(encoding=...): 'hex' or 'base64', got {self.encoding!r}")
        if not isinstance(self.prefix, str):
            raise ConfigurationError(f"Hmac(prefix=...): a string, got {self.prefix!r}")
        parts = _template(self.signed)
        named = {name for _, name in parts if name is not None}
        if "body" not in named:
            raise ConfigurationError(
                f"Hmac(signed=...): {self.signed!r} does not name {{body}}; a signature that "
                "does not cover the body proves nothing of it")
        if ("timestamp" in named) != (self.timestamp_header is not None):
            raise ConfigurationError(
                "Hmac(signed=...): names {timestamp} but timestamp_header is None"
                if "timestamp" in named else
                f"Hmac(timestamp_header=...): {self.timestamp_header!r} is set but signed= "
                f"({self.signed!r}) does not name {{timestamp}}; an unsigned time stops no "
                "replay (sign it, or pass timestamp_header=None)")
        if "id" in named and self.id_header is None:
            raise ConfigurationError("Hmac(signed=...): names {id} but id_header is None")
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_tolerance", _seconds(self.tolerance, "Hmac(tolerance=...)"))

    def verify(self, request: WebhookRequest, secret: str, now: float) -> Verified:
        """Check the signature over the signed message, then its time if one is signed.

        Raises:
            SignatureError: A header is missing or garbled, the signature does not match, or
                the timestamp is further from ``now`` than the tolerance.
        """
        key = _key(request, secret, self.secret)
        got = self._signature(request)
        values = {"body": request.body}
        stamp_header, signed_at = self.timestamp_header, None
        if stamp_header is not None:
            text = _header(request, stamp_header)
            signed_at = _timestamp(request, stamp_header, text)
            values["timestamp"] = text.encode("utf-8")
        delivery = None
        if self.id_header is not None:
            delivery = request.headers.get(self.id_header.lower(), "").strip() or None
            if any(name == "id" for _, name in self._parts):
                values["id"] = _header(request, self.id_header).encode("utf-8")
        message = b"".join(literal.encode("utf-8") + (values[name] if name else b"")
                           for literal, name in self._parts)
        if not hmac.compare_digest(_sign(key, message), got):
            raise SignatureError(
                f"webhook {request.source!r}: the header {self.header} does not match the "
                f"signed message (is {self.secret!r} this webhook's secret?)")
        if stamp_header is not None and signed_at is not None:
            _check_age(request, stamp_header, signed_at, now, self._tolerance)
        return Verified(delivery_id=delivery or _derived_id(got),
                        timestamp=None if signed_at is None else float(signed_at))

    def _signature(self, request: WebhookRequest) -> bytes:
        value = _header(request, self.header)
        if not value.startswith(self.prefix):
            raise SignatureError(f"webhook {request.source!r}: the header {self.header} does "
                                 f"not start with {self.prefix!r}")
        text = value[len(self.prefix):]
        if self.encoding == "hex":
            got = _hex(text)
        else:
            try:
                got = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                got = None
        if got is None or len(got) != _DIGEST_BYTES:
            raise SignatureError(f"webhook {request.source!r}: the header {self.header} is "
                                 f"not {self.prefix}<{self.encoding} SHA-256 digest>")
        return got


def _is_header_name(value: object) -> bool:
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def _template(signed: object) -> tuple[tuple[str, str | None], ...]:
    """``signed`` as (literal text, field or ``None``) pairs, checked."""
    if not isinstance(signed, str):
        raise ConfigurationError(f"Hmac(signed=...): a template string, got {signed!r}")
    try:
        parsed = list(string.Formatter().parse(signed))
    except ValueError as exc:
        raise ConfigurationError(f"Hmac(signed=...): {signed!r}: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in _FIELDS or spec or conversion):
            raise ConfigurationError(
                f"Hmac(signed=...): {signed!r} names {{{name}}}; it may name only "
                f"{', '.join('{' + f + '}' for f in _FIELDS)}, without a format")
        parts.append((literal, name))
    return tuple(parts)
