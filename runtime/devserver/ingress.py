"""The event endpoint's routes on the dev server: the production path, locally.

``POST /e/<key>``, ``POST /e`` and ``POST /webhooks/<source>`` are answered by the same core
as the deployed endpoint (:mod:`runtime.ingress.endpoint`), over the local store and the
in-process bus, so ``curl`` or ``stripe listen --forward-to localhost:8288/webhooks/stripe``
exercise exactly what production runs. Keys are optional here unless the server was started
with ``stepkit dev --require-keys`` (then keys made by ``stepkit keys create`` are checked).

Webhook routes are open to any ``Host``, ``Origin`` and content type (the dev server's guards
do not apply to them): a tunnel forwards the provider's request under its own host name and
a provider may post form-encoded bodies, and the signature is what admits a request. The
``/e`` routes keep the guards: without keys nothing else would stop another web page from
sending events to the developer's functions.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.control.local import ControlledBackend
from runtime.devserver.bodies import BodyError, read_body
from runtime.ingress.endpoint import MAX_REQUEST_BYTES, Answer, Ingress, IngressRequest
from runtime.ingress.keys import EventKeys

#: Paths the dev server's guards leave to the endpoint (see the module doc).
OPEN_PATHS = ("/webhooks/",)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # the core answers 405 to all but POST


def local_ingress(backend: ControlledBackend, *, require_keys: bool) -> Ingress:
    """The endpoint over a local backend: its store's keys, its bus, its clock.

    Events are published as ``stepkit send`` publishes them (validated again on the way,
    which changes nothing in a valid event), through the ports' bus as it is at that moment:
    chaos and pushback modes wrap it in place.
    """
    orchestrator = backend.orchestrator
    return Ingress(
        backend.app,
        keys=EventKeys(backend.store, backend.clock) if require_keys else None,
        publish=orchestrator.send,
        clock=backend.clock,
    )


def ingress_routes(ingress: Ingress) -> list[Route]:
    """The endpoint's routes, answered by ``ingress`` in a worker thread."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await read_body(request, limit=MAX_REQUEST_BYTES)
        except BodyError as exc:
            answer = Answer.error(exc.status, exc.message)
        else:
            raw_path = request.scope.get("raw_path") or request.url.path.encode()
            headers = {k.lower(): v for k, v in request.headers.items()}
            asked = IngressRequest(request.method, raw_path.decode("latin-1"), headers, body,
                                   dict(request.query_params))
            answer = await run_in_threadpool(ingress.handle, asked)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    return [Route("/e", endpoint, methods=_METHODS),
            Route("/e/{key}", endpoint, methods=_METHODS),
            Route("/webhooks/{source}", endpoint, methods=_METHODS)]
