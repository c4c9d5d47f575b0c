"""Verified webhooks: declare who may post to ``/webhooks/<source>`` and what it starts.

Declare a source in ``functions/`` beside the functions its events trigger::

    from runtime import App
    from runtime.webhooks import GitHub, Stripe

    app = App("shop")

    app.webhook(
        "stripe",
        verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"),
        secrets={"STRIPE_WEBHOOK_SECRET": "secretsmanager:stripe/webhook"},
    )  # each delivery: the event "stripe/webhook", the body as its data

    app.webhook(
        "github",
        verify=GitHub(secret="GITHUB_WEBHOOK_SECRET"),
        transform={"name": "github/{headers.x-github-event}", "data": "{body}"},
        secrets={"GITHUB_WEBHOOK_SECRET": "ssm:/github/webhook-secret"},
    )

A request whose signature does not verify is answered 401 and starts nothing; the provider's
delivery id becomes the event id, so its retries start nothing new. Locally, a secret is the
environment variable of its name. :class:`Hmac` covers providers with a scheme of their own;
a transform function receives a :class:`WebhookRequest` and what the signature said
(:class:`Verified`).
"""

from __future__ import annotations

from runtime.ingress.signatures import GitHub, Hmac, Stripe
from runtime.ingress.webhooks import (
    SignatureError,
    TransformError,
    Verified,
    WebhookBodyError,
    WebhookRequest,
)

__all__ = [
    "GitHub",
    "Hmac",
    "SignatureError",
    "Stripe",
    "TransformError",
    "Verified",
    "WebhookBodyError",
    "WebhookRequest",
]
