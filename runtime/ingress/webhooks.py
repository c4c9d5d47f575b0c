"""Webhook sources: who may post to ``/webhooks/<source>``, and what their requests become.

A source is declared in ``functions/`` with :meth:`runtime.App.webhook`: a verifier (the
provider's signature scheme, whose secret is named like ``AwsOptions.secrets``) and a
transform from the verified request to events. The endpoint answers 401 to a request whose
signature does not verify, and starts nothing.

A transform (:func:`events_of`) is one of:

- ``None``: one event ``<source>/webhook`` whose data is the body, a JSON object.
- A function of ``(WebhookRequest, Verified)`` returning an event (a dict), a list of events,
  or ``None``/``[]`` for nothing to send. It may raise :class:`WebhookBodyError` to refuse the
  body (400, the provider does not retry); any other error is a :class:`TransformError` (500:
  the provider retries, so its deliveries wait for the fix).
- A mapping of event fields whose strings are templates (:func:`mapped`)::

      {"name": "github/{headers.x-github-event}", "data": "{body}"}

Each event without an ``id`` gets one from the provider's delivery id, so the provider's
retries of a delivery start nothing new.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.errors import ConfigurationError, StepkitError
from runtime.ingress.body import BodyError, parse_json

#: A source's name: it is a path segment (``/webhooks/<name>``) and prefixes its events' ids.
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class SignatureError(StepkitError):
    """A webhook request whose signature does not verify (answered 401, starts nothing)."""


class WebhookBodyError(StepkitError, ValueError):
    """A verified request's body the transform cannot read (answered 400, starts nothing).

    Not JSON, not the JSON object the default transform needs, or without a value a mapping
    names. Raise it from a transform function to refuse a body: a provider does not retry a
    400, so nothing waits on a fix.

    Attributes:
        source: The webhook source's name.
    """

    is_retriable = False

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"webhook {source!r}: {message}")
        self.source = source


class TransformError(StepkitError):
    """A transform function raised, or returned something that is not events (answered 500).

    The provider retries a 5xx, so its deliveries are not lost while the transform is fixed.

    Attributes:
        source: The webhook source's name.
    """

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"webhook {source!r}: {message}")
        self.source = source


@dataclass(frozen=True)
class WebhookRequest:
    """A request to ``/webhooks/<source>`` as the verifier and the transform see it.

    Attributes:
        source: The source's name.
        headers: Header values by lower-cased name.
        body: The raw body: signatures are over these exact bytes.
        query: Query-string parameters.
    """

    source: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body parsed as JSON, once (the verifier and the transform share the parse).

        By the rules of every body the endpoint reads (:func:`runtime.ingress.body.parse_json`).

        Raises:
            ValueError: It is not JSON (UTF-8), or breaks those rules, saying which.
        """
        parsed = self.__dict__.get("_parsed", _UNPARSED)
        if parsed is _UNPARSED:
            try:
                parsed = parse_json(self.body)
            except BodyError as exc:
                parsed = ValueError(exc.message)
            # A frozen dataclass's fields cannot be set; its instance dict can hold a cache.
            self.__dict__["_parsed"] = parsed
        if isinstance(parsed, ValueError):
            raise ValueError(str(parsed))
        return parsed


_UNPARSED: Any = object()


@dataclass(frozen=True)
class Verified:
    """What a verified signature says of the request.

    Attributes:
        delivery_id: The provider's id of this delivery (the same on its retries), if it
            gives one: the event id, so a retried delivery starts nothing new.
        timestamp: When the provider signed it (epoch seconds), if the scheme signs one.
    """

    delivery_id: str | None = None
    timestamp: float | None = None


class Verifier(Protocol):
    """A signature scheme: checks a request against the secret it names."""

    # A read-only property, not a plain attribute, so frozen dataclasses implement it.
    @property
    def secret(self) -> str:
        """The secret's name: an environment variable locally, declared in ``secrets`` on AWS."""
        ...

    def verify(self, request: WebhookRequest, secret: str, now: float) -> Verified:
        """Check the request's signature with the secret's value at time ``now``.

        Raises:
            SignatureError: It does not verify, saying why (never echoing the secret).
        """
        ...


#: A transform: the verified request (and what the signature said) -> events, or a mapping
#: (see :func:`runtime.ingress.webhooks.mapped`).
Transform = Callable[[WebhookRequest, Verified], Any] | Mapping[str, Any]


@dataclass(frozen=True)
class WebhookSource:
    """A declared webhook source (``app.webhook(...)``).

    Attributes:
        name: ``/webhooks/<name>``.
        verify: Its signature scheme.
        transform: Request -> events; ``None``: one event ``<name>/webhook`` whose data is
            the JSON body.
        secrets: Secret name -> ``secretsmanager:<id>`` / ``ssm:<name>`` on AWS (the
            endpoint's role may read exactly these).
    """

    name: str
    verify: Verifier
    transform: Transform | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)


def webhook_source(name: str, verify: Verifier, transform: Transform | None,
                   secrets: Mapping[str, str] | None) -> WebhookSource:
    """A source as ``app.webhook`` registers it, checked.

    Raises:
        ConfigurationError: The name, the verifier, the transform or a secret reference is
            not one stepkit can use, naming the source.
    """
    from pydantic import ValidationError

    from runtime.deploy import AwsOptions

    where = f"webhook {name!r}"
    if not isinstance(name, str) or not _SOURCE.match(name):
        raise ConfigurationError(f"{where}: a source name is 1-64 lower-case letters, digits, "
                                 "'-' or '_', starting with a letter or digit")
    if not isinstance(getattr(verify, "secret", None), str) or not callable(
            getattr(verify, "verify", None)):
        raise ConfigurationError(
            f"{where}: verify= must be a signature scheme (Stripe(...), GitHub(...) or "
            f"Hmac(...) from runtime.webhooks), got {type(verify).__name__}")
    if transform is not None and not (callable(transform) or isinstance(transform, Mapping)):
        raise ConfigurationError(f"{where}: transform= must be a function or a mapping, got "
                                 f"{type(transform).__name__}")
    if isinstance(transform, Mapping):
        _check_fields(transform, f"{where}: transform")
    try:
        refs = AwsOptions(secrets=dict(secrets or {})).secrets
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"{where}: secrets: {first['msg']}") from None
    if verify.secret not in refs:
        raise ConfigurationError(
            f"{where}: its secret {verify.secret!r} is not in secrets=; say where it lives on "
            f"AWS, e.g. secrets={{{verify.secret!r}: 'secretsmanager:<name>'}} (locally it is "
            "the environment variable of that name)")
    return WebhookSource(name, verify, transform, refs)


def secret_refs(sources: Sequence[WebhookSource]) -> dict[str, str]:
    """Every secret the sources name, by name: the endpoint's ``STEPKIT_SECRETS``.

    Raises:
        ConfigurationError: Two sources give one name different places.
    """
    refs: dict[str, str] = {}
    for source in sources:
        for name, ref in source.secrets.items():
            if refs.setdefault(name, ref) != ref:
                raise ConfigurationError(
                    f"webhook {source.name!r}: secret {name!r} is {ref!r} here and "
                    f"{refs[name]!r} in another source; one name is one secret")
    return refs


#: The longest event id (``Event.id``); a longer one from a delivery id is hashed.
MAX_EVENT_ID_CHARS = 128
#: A template's placeholders and escaped braces; a lone brace is an error.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
#: What a placeholder's path may start with.
_ROOTS = ("body", "headers", "query")


def events_of(source: WebhookSource, request: WebhookRequest,
              verified: Verified) -> list[dict[str, Any]]:
    """The events a verified request becomes, by the source's transform, with ids filled in.

    The events are not validated here: the endpoint validates them as it does any sent event.
    An event without an ``id`` gets ``<source>-<delivery id>`` (``-<i>`` after it for the
    i-th of several, from 0), hashed when over 128 characters; without a delivery id it is
    left to the endpoint to generate.

    Raises:
        WebhookBodyError: The body cannot be read as the transform needs (400).
        TransformError: The transform function raised, or returned no events (500).
    """
    transform = source.transform
    if transform is None:
        body = _body(request)
        if not isinstance(body, dict):
            raise WebhookBodyError(
                source.name, f"the body is a JSON {_json_type(body)}; without transform= it "
                "must be a JSON object (the event's data)")
        events = [{"name": f"{source.name}/webhook", "data": body}]
    elif isinstance(transform, Mapping):
        events = [mapped(transform, request)]
    else:
        events = _called(source.name, transform, request, verified)
    return _with_ids(source.name, events, verified.delivery_id)


def mapped(fields: Mapping[str, Any], request: WebhookRequest) -> dict[str, Any]:
    """An event from a mapping of fields whose strings (at any depth) are templates.

    A placeholder names a value of the request: ``{body}`` (the body, parsed as JSON),
    ``{body.a.b}`` (a value in it; a list's items by index, ``{body.items.0}``),
    ``{headers.<name>}`` and ``{query.<name>}``. A string that is one placeholder alone
    becomes the value itself, keeping its JSON type; inside longer text a string is
    inserted as it is and anything else as compact JSON. ``{{`` and ``}}`` are literal
    braces. Strings in nested mappings and lists are templates too; other values are copied.

    Raises:
        WebhookBodyError: The body is not JSON, or a named value is absent.
    """
    values = _Values(request)
    return {key: _render(value, values) for key, value in fields.items()}


class _Values:
    """The request's values as placeholders see them; the body is parsed once, if named."""

    def __init__(self, request: WebhookRequest) -> None:
        self.request = request
        self._body: Any = _UNREAD

    def get(self, placeholder: str) -> Any:
        root, _, rest = placeholder.partition(".")
        source = self.request.source
        if root == "headers":
            found = self.request.headers.get(rest.lower())
            if found is None:
                raise WebhookBodyError(source, f"{{{placeholder}}}: the header {rest} is absent")
            return found
        if root == "query":
            found = self.request.query.get(rest)
            if found is None:
                raise WebhookBodyError(source, f"{{{placeholder}}}: the query has no {rest!r}")
            return found
        if self._body is _UNREAD:
            self._body = _body(self.request)
        return _at(source, self._body, placeholder)


_UNREAD: Any = object()


def _render(value: Any, values: _Values) -> Any:
    if isinstance(value, Mapping):
        return {key: _render(item, values) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, values) for item in value]
    if not isinstance(value, str):
        return value
    whole = _PLACEHOLDER.fullmatch(value)
    if whole is not None and whole.group(1) is not None:
        return values.get(whole.group(1))
    return _PLACEHOLDER.sub(lambda m: _text(m, values), value)


def _text(match: re.Match[str], values: _Values) -> str:
    if match.group(1) is None:
        return match.group(0)[0]  # "{{" -> "{"; a lone brace is refused at declaration
    found = values.get(match.group(1))
    return found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))


def _at(source: str, body: Any, placeholder: str) -> Any:
    path = placeholder.split(".")[1:]
    found = body
    for i, key in enumerate(path):
        if isinstance(found, dict) and key in found:
            found = found[key]
        elif isinstance(found, list) and key.isdigit() and int(key) < len(found):
            found = found[int(key)]
        else:
            where = ".".join(["body", *path[:i]])
            raise WebhookBodyError(
                source, f"{{{placeholder}}}: {where} is a JSON {_json_type(found)} with no "
                f"{key!r}")
    return found


def _body(request: WebhookRequest) -> Any:
    try:
        return request.json()
    except ValueError as exc:
        reason = str(exc).removeprefix("invalid JSON body: ")
        raise WebhookBodyError(request.source, f"the body is not JSON (UTF-8): {reason}") from None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _check_fields(fields: Any, where: str) -> None:
    """Refuse, at declaration, a mapping whose templates could never render."""
    if isinstance(fields, Mapping):
        for key, value in fields.items():
            if not isinstance(key, str):
                raise ConfigurationError(f"{where}: has the {type(key).__name__} key {key!r}")
            _check_fields(value, f"{where}[{key!r}]")
    elif isinstance(fields, list | tuple):
        for i, item in enumerate(fields):
            _check_fields(item, f"{where}[{i}]")
    elif isinstance(fields, str):
        for match in _PLACEHOLDER.finditer(fields):
            problem = _placeholder_problem(match)
            if problem is not None:
                raise ConfigurationError(f"{where}: {fields!r}: {problem}")


def _placeholder_problem(match: re.Match[str]) -> str | None:
    text, name = match.group(0), match.group(1)
    if name is None:
        return None if text in ("{{", "}}") else (
            f"a lone {text!r}; write {text * 2!r} for a literal brace")
    root, dot, rest = name.partition(".")
    if root not in _ROOTS:
        return (f"{{{name}}} names neither body, headers nor query (e.g. {{body.id}}, "
                "{headers.x-github-event}, {query.type})")
    if root == "body":
        return None if not dot or all(rest.split(".")) else f"{{{name}}} has an empty step"
    return None if rest else f"{{{name}}} names no {root[:-1] if root == 'headers' else root}"


def _called(source: str, transform: Callable[[WebhookRequest, Verified], Any],
            request: WebhookRequest, verified: Verified) -> list[dict[str, Any]]:
    try:
        result = transform(request, verified)
    except WebhookBodyError:
        raise
    except Exception as exc:
        raise TransformError(
            source, f"the transform raised {type(exc).__name__}: {exc}") from exc
    if result is None:
        return []
    if isinstance(result, Mapping):
        return [dict(result)]
    if isinstance(result, list | tuple):
        for i, item in enumerate(result):
            if not isinstance(item, Mapping):
                raise TransformError(source, f"the transform returned a list whose item {i} "
                                     f"is a {type(item).__name__}, not an event (a dict)")
        return [dict(item) for item in result]
    raise TransformError(source, f"the transform returned a {type(result).__name__}; expected "
                         "an event (a dict), a list of events, or None for none")


def _with_ids(source: str, events: list[dict[str, Any]],
              delivery_id: str | None) -> list[dict[str, Any]]:
    if delivery_id is None:
        return events
    for i, event in enumerate(events):
        if event.get("id") in (None, ""):
            wanted = f"{source}-{delivery_id}" if len(events) == 1 else (
                f"{source}-{delivery_id}-{i}")
            digest = hashlib.sha256(wanted.encode()).hexdigest()
            # A 64-character source leaves 63 of the digest's 64: still 252 bits.
            event["id"] = wanted if len(wanted) <= MAX_EVENT_ID_CHARS else (
                f"{source}-{digest[:MAX_EVENT_ID_CHARS - len(source) - 1]}")
    return events
