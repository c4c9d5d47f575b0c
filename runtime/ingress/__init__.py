"""Events from outside AWS: the HTTPS event endpoint, event keys and verified webhooks.

``POST /e/<event key>`` takes Inngest-shaped events from any HTTP client; ``POST
/webhooks/<source>`` takes a third party's signed requests for a source declared with
``app.webhook(...)``. One core (:mod:`runtime.ingress.endpoint`) answers both, behind the
deployed API (``runtime.handlers.ingress``) and the dev server alike.
"""
