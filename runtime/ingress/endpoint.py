"""The event endpoint: an HTTP request in, an answer out, the events on the bus in between.

Routes (``POST`` only):

- ``/e/<event key>``, or ``/e`` with ``Authorization: Bearer <event key>``: Inngest-shaped
  events, one object or a list, validated as ``stepkit send`` validates them (names, the
  value rule, sizes, ``data=`` models) and allowed by the key's prefixes.
- ``/webhooks/<source>``: a request of a source declared with ``app.webhook``, verified by
  its signature scheme and turned into events by its transform.

The answer is 200 ``{"ids": [...], "status": 200}`` only once every event is on the bus
(PutEvents accepted it; locally, the in-process bus). Posting the same ids again starts
nothing new: runs are derived from event ids and routing remembers them for 24 h, so a
client that got no answer posts again with the same ids. Refusals: 400 (body or event),
401 (key or signature), 403 (the key may not send that name), 404 (no such route or
source), 405 (not POST), 413 (too large), 429 (AWS pushed back: try again; the answer
carries the ids to post again with), 500 (a transform or the app is broken).

Neither the key nor a payload is ever logged; a key is named by its public id only.

Written once for both places it runs: the deployed Lambda (``runtime.handlers.ingress``)
and the dev server (``runtime.devserver.ingress``), which hand it their own key store, bus
and clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from runtime.app import App
from runtime.errors import InvalidEventError
from runtime.events import Event, validate_events
from runtime.ingress.body import BodyError, parse_json
from runtime.ingress.keys import EventKeys, KeyInfo, KeyNotAllowedError, KeyRefusedError
from runtime.ingress.webhooks import (
    SignatureError,
    TransformError,
    WebhookBodyError,
    WebhookRequest,
    events_of,
)
from runtime.orchestration.intake import check_typed
from runtime.orchestration.protocols import Clock
from runtime.orchestration.pushback import is_pushback, short

#: The largest request body, bytes. Lambda takes at most 6 MB (6,291,456 bytes) per
#: synchronous invocation, and API Gateway puts the body into the invocation's JSON as a
#: string, where escaping can double it (every ``"`` becomes ``\"``): 2 MiB doubled is
#: 4 MiB, leaving room for the headers and the envelope. An event up to the 4 MiB event
#: limit goes through ``stepkit send`` (PutEvents, with S3 for its body).
MAX_REQUEST_BYTES = 2 * 1024 * 1024
#: The most events one request may carry (one PutEvents call takes 10: 100 calls).
MAX_REQUEST_EVENTS = 1000
#: What a 429 asks the client to wait, seconds.
RETRY_AFTER_SECONDS = 1
#: The endpoint's routes, all ``POST`` (the HTTP API declares these; ``{x}`` is one path
#: segment): the key in the path, the key in the header, a webhook source.
ROUTES = ("/e/{key}", "/e", "/webhooks/{source}")


def route_of(method: str, path: str) -> str | None:
    """The route key (``POST /e/{key}``) a request matches, as API Gateway matches it."""
    parts = path.split("?", 1)[0].split("/")[1:]
    if method.upper() != "POST":
        return None
    for route in ROUTES:
        pattern = route.split("/")[1:]
        if len(pattern) == len(parts) and all(
                p == s or (p.startswith("{") and s) for p, s in zip(pattern, parts,
                                                                   strict=True)):
            return f"POST {route}"
    return None

Publish = Callable[[list[dict[str, Any]]], object]  # what it returns is not used


@dataclass(frozen=True)
class IngressRequest:
    """An HTTP request as the endpoint reads it.

    Attributes:
        method: ``POST``, ...
        path: The path as sent (percent-encoded), e.g. ``/e/sk_...``.
        headers: Header values by lower-cased name.
        body: The raw body.
        query: Query-string parameters.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """The HTTP answer: a status, a JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(cls, status: int, message: str, **extra: Any) -> Answer:
        """A refusal: ``{"error": message, "status": status, ...extra}``."""
        headers = {"retry-after": str(RETRY_AFTER_SECONDS)} if status in (429, 503) else {}
        return cls(status, {"error": message, "status": status, **extra}, headers)


#: What the log says of a refusal: never the answer's text, which may quote what was sent (a
#: value a ``data=`` model refused, a path holding a key).
_WHY = {400: "malformed or invalid events", 401: "unauthorized", 403: "forbidden name",
        404: "no such route", 405: "not a POST", 413: "too large", 429: "pushed back",
        500: "failed"}


class _Refused(Exception):
    """A refusal: ``answer`` for the sender; ``note``, if any, for the log (nothing sent)."""

    def __init__(self, answer: Answer, note: str | None = None) -> None:
        super().__init__(answer.body.get("error"))
        self.answer = answer
        self.note = note


class Ingress:
    """Answers the endpoint's requests (see the module doc).

    Args:
        app: The app: its webhook sources and ``data=`` models.
        keys: The event keys; ``None`` accepts any key or none (the dev server, by default).
        publish: Puts validated events on the bus; returns once they are there.
        clock: Time source (events' ``ts``, signatures' tolerance, key revocations).
        secret: A secret's value by name (``runtime.secrets.secret``).
        log: Where refusals and acceptances are logged (never a key or a payload).
    """

    def __init__(self, app: App, *, keys: EventKeys | None, publish: Publish, clock: Clock,
                 secret: Callable[[str], Any] | None = None,
                 log: logging.Logger | None = None) -> None:
        from runtime.secrets import secret as read_secret

        self.app = app
        #: The webhook sources' names, whose delivery ids (``<name>-...``) are theirs alone.
        self._sources = tuple(app.webhooks)
        self.keys = keys
        self.publish = publish
        self.clock = clock
        self.secret = secret or read_secret
        self.log = log or logging.getLogger("stepkit.ingress")

    def handle(self, request: IngressRequest) -> Answer:
        """Answer one request."""
        parts = [unquote(p) for p in request.path.split("/") if p]
        try:
            if not parts or parts[0] not in ("e", "webhooks") or len(parts) > 2 or (
                    parts[0] == "webhooks" and len(parts) != 2):
                raise _Refused(Answer.error(
                    404, f"no route {request.method} {request.path[:100]!r}: events go to "
                         "POST /e/<event key> and webhooks to POST /webhooks/<source>"))
            if request.method.upper() != "POST":
                raise _Refused(Answer.error(405, f"{request.method} is not allowed: POST "
                                                 "the events"))
            if len(request.body) > MAX_REQUEST_BYTES:
                raise _Refused(Answer.error(
                    413, f"request body is {len(request.body)} bytes, over the endpoint's "
                         f"{MAX_REQUEST_BYTES // (1024 * 1024)} MiB; send fewer events per "
                         "request, or a larger event with `stepkit send` (up to 4 MiB)"))
            if parts[0] == "e":
                return self._events(request, parts[1] if len(parts) == 2 else None)
            return self._webhook(request, parts[1])
        except _Refused as refused:
            answer = refused.answer
            self.log.info("ingress %s %s: %d %s", request.method[:10], _route(parts),
                          answer.status, refused.note or _WHY.get(answer.status, "refused"))
            return answer

    # -- POST /e/<key> ---------------------------------------------------------------------

    def _key(self, request: IngressRequest, in_path: str | None) -> KeyInfo | None:
        presented = in_path
        if presented is None:
            auth = request.headers.get("authorization", "")
            scheme, _, value = auth.partition(" ")
            presented = value.strip() if scheme.lower() == "bearer" else None
        if self.keys is None:
            return None
        if not presented:
            raise _Refused(Answer.error(401, "no event key: POST /e/<event key>, or POST /e "
                                             "with Authorization: Bearer <event key>"))
        try:
            return self.keys.check(presented)
        except KeyRefusedError as exc:  # names the key by its public id only
            raise _Refused(Answer.error(401, str(exc)), note=str(exc)) from None
        except Exception as exc:  # the key could not be read: not the client's fault
            if is_pushback(exc):
                busy = Answer.error(429, f"AWS is busy ({short(exc)}); post again")
                raise _Refused(busy) from None
            self.log.exception("reading an event key failed")
            raise _Refused(Answer.error(500, "the event key could not be read; post "
                                             "again")) from None

    def _events(self, request: IngressRequest, in_path: str | None) -> Answer:
        info = self._key(request, in_path)
        try:
            raw = parse_json(request.body, check=False)  # validated as events next
        except BodyError as exc:
            raise _Refused(Answer.error(exc.status, exc.message)) from None
        if isinstance(raw, list) and len(raw) > MAX_REQUEST_EVENTS:
            raise _Refused(Answer.error(413, f"{len(raw)} events in one request; at most "
                                             f"{MAX_REQUEST_EVENTS}"))
        events = self._valid(raw)
        self._own_ids(events)
        if info is not None:
            try:
                EventKeys.permit(info, [e.name for e in events])
            except KeyNotAllowedError as exc:  # the key's public id and event names
                raise _Refused(Answer.error(403, str(exc)), note=str(exc)) from None
        via = "" if info is None else f" with key sk_{info.id}_…"
        return self._publish(events, f"POST /e{via}")

    def _own_ids(self, events: Sequence[Event]) -> None:
        """Refuse an event posted with an id a webhook source gives its deliveries.

        Ids are remembered app-wide for 24 h with their names, so an event sent first as
        ``stripe/webhook`` with ``stripe-evt_...`` would make Stripe's real delivery of that
        event a duplicate (dropped by the router: no wait or cancel_on would see it). A
        webhook's ids are ``<source>-<delivery id>``; only the source itself may use them.
        """
        for i, e in enumerate(events):
            source = next((name for name in self._sources if e.id.startswith(f"{name}-")),
                          None)
            if source is not None:
                where = "event" if len(events) == 1 else f"event[{i}]"
                raise _Refused(Answer.error(
                    400, f"{where}.id: ids starting with '{source}-' are those of the webhook "
                         f"source '{source}' (POST /webhooks/{source}); give this event "
                         "another id"))

    def _valid(self, raw: Any) -> list[Event]:
        """Validated events (all or none), their ``data=`` models checked."""
        now_ms = int(self.clock.now() * 1000)
        try:
            events = validate_events(raw, now_ms=now_ms)
            for i, e in enumerate(events):
                check_typed(self.app, e, i if len(events) > 1 else None)
        except InvalidEventError as exc:
            raise _Refused(Answer.error(400, str(exc))) from None
        return events

    def _publish(self, events: Sequence[Event], what: str) -> Answer:
        ids = [e.id for e in events]
        if not events:
            return Answer(200, {"ids": [], "status": 200})
        try:
            self.publish([e.to_json() for e in events])
        except InvalidEventError as exc:  # an entry the bus cannot take (no payload bucket)
            raise _Refused(Answer.error(413, str(exc))) from None
        except Exception as exc:
            again = "post them again with these ids: a repeated id starts nothing new"
            if is_pushback(exc):
                self.log.warning("%s: %d event(s) pushed back: %s", what, len(ids), short(exc))
                raise _Refused(Answer.error(429, f"AWS is busy ({short(exc)}); {again}",
                                            ids=ids)) from None
            self.log.exception("%s: publishing %d event(s) failed", what, len(ids))
            raise _Refused(Answer.error(500, f"the events could not be published; {again}",
                                        ids=ids)) from None
        self.log.info("%s: %d event(s) published (%s)", what, len(ids),
                      ", ".join(sorted({e.name for e in events}))[:300])
        return Answer(200, {"ids": ids, "status": 200})

    # -- POST /webhooks/<source> -----------------------------------------------------------

    def _webhook(self, request: IngressRequest, name: str) -> Answer:
        source = self.app.find_webhook(name)
        if source is None:
            raise _Refused(Answer.error(404, f"no webhook source {name[:64]!r} in this app"))
        hook = WebhookRequest(name, request.headers, request.body, request.query)
        try:
            secret = self.secret(source.verify.secret)
        except Exception as exc:  # ConfigurationError (unset), AWS's errors
            self.log.error("webhook %r: its secret %r cannot be read: %s", name,
                           source.verify.secret, short(exc))
            if is_pushback(exc):
                raise _Refused(Answer.error(429, f"webhook {name!r}: its secret could not be "
                                                 "read now; try again")) from None
            raise _Refused(Answer.error(500, f"webhook {name!r} cannot verify requests: its "
                                             "secret is not available (see the logs)")) from None
        try:
            verified = source.verify.verify(hook, str(secret), self.clock.now())
        except SignatureError as exc:
            raise _Refused(Answer.error(401, f"webhook {name!r}: {exc}")) from None
        try:
            raw = events_of(source, hook, verified)
        except WebhookBodyError as exc:
            raise _Refused(Answer.error(400, str(exc))) from None
        except TransformError as exc:  # the app's bug: its text stays in the logs
            self.log.error("webhook %r: %s", name, exc)
            raise _Refused(Answer.error(500, f"webhook {name!r}: its transform failed (see "
                                             "the endpoint's logs)")) from None
        if len(raw) > MAX_REQUEST_EVENTS:
            raise _Refused(Answer.error(500, f"webhook {name!r}: its transform made "
                                             f"{len(raw)} events; at most {MAX_REQUEST_EVENTS}"))
        try:
            events = self._valid(raw) if raw else []
        except _Refused as refused:
            if source.transform is None:
                raise  # the body itself, as the event's data, is not valid: 400
            # The app's transform (or a data= model) and the delivery disagree: answered
            # 500, as a transform that raised, so the provider retries until the app is
            # fixed instead of dropping the delivery on a 400.
            self.log.error("webhook %r: its transform made events that are not valid: %s",
                           name, refused.answer.body.get("error"))
            raise _Refused(Answer.error(500, f"webhook {name!r}: its transform made events "
                                             "that are not valid (see the endpoint's logs)"),
                           note="transform made invalid events") from None
        return self._publish(events, f"POST /webhooks/{name}")


def _route(parts: Sequence[str]) -> str:
    """The route a log line names: never the key in ``/e/<key>``."""
    if parts[:1] == ["e"]:
        return "/e/<key>" if len(parts) > 1 else "/e"
    return "/" + "/".join(p[:64] for p in parts[:2])
