"""Webhook sources: who may post to ``/webhooks/<source>``, and what their requests become.

A source is declared in ``functions/`` with :meth:`runtime.App.webhook`: a verifier (the
provider's signature scheme, whose secret is named like ``AwsOptions.secrets``) and a
transform from the verified request to events. The endpoint answers 401 to a request whose
signature does not verify, and starts nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.errors import ConfigurationError, StepkitError

#: A source's name: it is a path segment (``/webhooks/<name>``) and prefixes its events' ids.
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class SignatureError(StepkitError):
    """A webhook request whose signature does not verify (answered 401, starts nothing)."""


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
        """The body parsed as JSON.

        Raises:
            ValueError: It is not JSON (UTF-8).
        """
        return json.loads(self.body.decode("utf-8"))


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
    """A signature scheme: checks a request against the secret it names.

    Attributes:
        secret: The secret's name (an environment variable locally; on AWS declared in the
            source's ``secrets``).
    """

    secret: str

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
