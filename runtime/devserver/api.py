"""The dev server's HTTP API and dashboard, as a Starlette app over a control plane.

``create_app(backend)`` serves a local backend (the dev server); ``create_dashboard(control)``
serves any :class:`~runtime.control.ControlPlane` (``stepkit dashboard``, with ``--aws`` the
deployed app's), behind the same guards.

Endpoints (all JSON; errors are ``{"error": "<message>"}`` with a 4xx status):

- ``POST /api/events``: one event or a list (at most ``MAX_BATCH_EVENTS``), validated whole
  before any is routed; ``{"ids": [...], "duplicates": [...]}``. If routing fails part way,
  a 500 carries ``ids`` (every event's, in order) and ``routed``: sending the same events
  again with those ids routes the rest, the ids routed already being ignored.
- ``GET /api/events?limit=&summary=``: recently received events, newest first, each with the
  runs it started; ``summary=true`` leaves out each event's ``data`` and ``user`` (the
  dashboard's list, which fetches a payload only when it is opened).
- ``GET /api/events/{event_id}``: one recent event with the runs it started (``runs``) and the
  runs whose ``wait_for_event`` it resolved (``waits``).
- ``GET /api/functions``: registered functions and their triggers.
- ``GET /api/runs?function_id=&status=&limit=&since=&until=``: runs, newest first (``until``:
  created before it, for paging).
- ``GET /api/runs/{run_id}``: a run with its step timeline.
- ``POST /api/runs/{run_id}/cancel``.
- ``POST /api/runs/bulk/cancel``, ``/api/runs/bulk/replay``: cancel or replay every run
  matching a filter, or count them (``dry_run``): :mod:`runtime.devserver.bulk`.
- ``POST /api/runs/{run_id}/rerun``, optionally with ``{"from": "<step key>"}`` (a fork: the new
  run reuses the results recorded before that step); ``{"run_id": <new run>}``.
- ``POST /api/functions/{function_id}/invoke`` with ``{"data": {...}}``: start a run by hand.
- ``POST /api/functions/{function_id}/cron``: fire a function's cron now.
- ``POST /api/functions/{function_id}/pause``, optionally with ``{"reason": "..."}``, and
  ``POST /api/functions/{function_id}/resume``: ``{"function_id", "paused"}`` (``paused``:
  ``{"reason", "since"}`` or ``null``; ``GET /api/functions`` carries it for each function).
- ``GET /api/keys``: the event keys, newest first (``{"keys": [...]}``, never a key or its
  digest); ``POST /api/keys`` with ``{"label", "prefixes"}`` (both optional) makes one,
  ``POST /api/keys/{id}/rotate`` with ``{"grace": "1h"}`` (optional) replaces one, and
  ``POST /api/keys/{id}/revoke`` revokes one: :mod:`runtime.control.keys`. The answers to a
  creation and a rotation alone carry ``key`` (sent with ``Cache-Control: no-store``).
- ``POST /api/runs/{run_id}/steps/{key}/skip``: end a sleeping step now (dev only).
- ``GET /api/dlq``: dead-lettered messages, oldest first, and their ``count``.
- ``GET /api/dlq/count``: only the ``count`` (on SQS approximate, no message read: what the
  dashboard polls; listing leases each message for a moment).
- ``POST /api/dlq/redrive`` with ``{"queue": ..., "id": ...}`` (both optional): put dead
  messages back to work; ``{"redriven": [ids]}``.
- ``GET /api/about``: where the API points (the dev server, a local database, a deployed
  stack), how often the dashboard refreshes, and the actions it cannot do there.
- ``GET /``: the dashboard; ``GET /healthz``: liveness.

Path parameters are matched as sent and then percent-decoded, so an id holding ``/``, ``%``,
``#``, ``?`` or a space is one segment when the client encodes it (``%2F``...). Every request
passes :class:`~runtime.devserver.guard.LocalOnly` (a Host naming this server; for POST, a
same-origin ``Origin`` if any and a JSON body: 403 and 415 otherwise), and bodies are read
within :data:`~runtime.devserver.bodies.MAX_BODY_BYTES` (413) and parsed strictly (400, see
:mod:`runtime.devserver.bodies`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.control import (
    CONTROL_ERRORS,
    BadRequestError,
    ControlPlane,
    Events,
    Json,
    NotAllowedError,
    NotFoundError,
)
from runtime.control.local import MAX_LIMIT, ControlledBackend, InProcessControl, PartlySentError
from runtime.devserver.bodies import BodyError, parse_json, read_body
from runtime.devserver.bulk import bulk_routes
from runtime.devserver.guard import HostRule, LocalOnly
from runtime.durations import parse_instant, user_duration
from runtime.errors import FunctionNotFoundError, InvalidEventError, StepkitError
from runtime.orchestration.protocols import RunQuery
from runtime.records import RunStatus

STATIC_DIR = Path(__file__).parent / "static"
#: The most events one ``POST /api/events`` may carry: each is routed before the answer, so
#: this bounds the request's time (1,000 small events take about 1.8 s to route here).
MAX_BATCH_EVENTS = 1000
#: How often the dev server's dashboard refreshes: its reads are a local SQLite file's.
DEV_REFRESH_SECONDS = 2
#: How many runs (and events) a page of the dashboard shows, and "more" adds.
DEV_PAGE_SIZE = 100
_log = logging.getLogger("stepkit.devserver")

#: What the dev server needs from a backend (``LocalBackend`` provides it): the in-process
#: control plane is built over it.
DevBackend = ControlledBackend


def _status_of(exc: StepkitError) -> int:
    """The HTTP status of a control-plane error: the one table of them."""
    if isinstance(exc, NotFoundError | FunctionNotFoundError):
        return 404
    if isinstance(exc, NotAllowedError):
        return 409
    if isinstance(exc, InvalidEventError | BadRequestError):
        return 400
    return 500


class ApiError(Exception):
    """An error the API reports as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(backend: DevBackend, *, allowed_hosts: Collection[str] = (),
               require_keys: bool = False) -> Starlette:
    """Build the dev server's ASGI app over ``backend``.

    Args:
        backend: Where events go and runs come from; calls to it run in a worker thread.
        allowed_hosts: ``Host`` names answered besides the loopback ones: the address the
            server is bound to (a wildcard one accepts any IP address literal).
        require_keys: The event endpoint (``POST /e/<key>``) checks event keys, as the
            deployed one does; by default any key (or none) is accepted locally.

    """
    from runtime.devserver.ingress import OPEN_PATHS, ingress_routes, local_ingress

    return create_dashboard(
        InProcessControl.over(backend), about=dev_about(backend.app.id),
        allowed_hosts=allowed_hosts,
        extra_routes=ingress_routes(local_ingress(backend, require_keys=require_keys)),
        open_paths=OPEN_PATHS)


def dev_about(app_id: str) -> Json:
    """What ``GET /api/about`` says of the dev server: its app, and the dashboard's refresh."""
    return {"target": "dev", "app_id": app_id, "label": f"dev server, app '{app_id}'",
            "refresh_seconds": DEV_REFRESH_SECONDS, "page_size": DEV_PAGE_SIZE, "disabled": {}}


def create_dashboard(
    control: ControlPlane, *, about: Mapping[str, Any], allowed_hosts: Collection[str] = (),
    extra_routes: Sequence[BaseRoute] = (), open_paths: Sequence[str] = (),
) -> Starlette:
    """Build the API and dashboard over any control plane (a dev server's, a deployed app's).

    Args:
        control: What the endpoints ask; its calls run in a worker thread.
        about: What ``GET /api/about`` answers: where the control plane points (``target``,
            ``label``...), the dashboard's ``refresh_seconds`` and ``page_size``, and the
            actions it cannot do (``disabled``: action name to the reason shown).
        allowed_hosts: ``Host`` names answered besides the loopback ones.
        extra_routes: More routes (the dev server's event endpoint).
        open_paths: Path prefixes the guards leave alone (their routes admit requests
            themselves, e.g. by a webhook's signature).

    """
    api = _Api(control, about)
    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/api/about", api.about, methods=["GET"]),
        Route("/api/events", api.send_events, methods=["POST"]),
        Route("/api/events", api.list_events, methods=["GET"]),
        Route("/api/events/{event_id}", api.get_event, methods=["GET"]),
        Route("/api/functions", api.list_functions, methods=["GET"]),
        Route("/api/runs", api.list_runs, methods=["GET"]),
        *bulk_routes(control),  # before /api/runs/{run_id}/...
        Route("/api/runs/{run_id}", api.get_run, methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", api.cancel, methods=["POST"]),
        Route("/api/runs/{run_id}/rerun", api.rerun, methods=["POST"]),
        Route("/api/functions/{function_id}/invoke", api.invoke, methods=["POST"]),
        Route("/api/functions/{function_id}/cron", api.fire_cron, methods=["POST"]),
        Route("/api/runs/{run_id}/steps/{key}/skip", api.skip_sleep, methods=["POST"]),
        Route("/api/dlq", api.list_dead_letters, methods=["GET"]),
        Route("/api/dlq/count", api.count_dead_letters, methods=["GET"]),
        Route("/api/dlq/redrive", api.redrive, methods=["POST"]),
        Route("/api/functions/{function_id}/pause", api.pause, methods=["POST"]),
        Route("/api/functions/{function_id}/resume", api.resume, methods=["POST"]),
        Route("/api/keys", api.list_keys, methods=["GET"]),
        Route("/api/keys", api.create_key, methods=["POST"]),
        Route("/api/keys/{key_id}/rotate", api.rotate_key, methods=["POST"]),
        Route("/api/keys/{key_id}/revoke", api.revoke_key, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        *extra_routes,
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: _api_error,
        BodyError: _api_error,
        **dict.fromkeys(CONTROL_ERRORS, _control_error),
        PartlySentError: _partly_sent,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    middleware = [Middleware(LocalOnly, hosts=HostRule(allowed_hosts), open_paths=open_paths),
                  Middleware(_RawApiPaths)]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)


class _RawApiPaths:
    """Route ``/api/`` requests on the path as sent, still percent-encoded.

    The server decodes ``%2F`` into ``/`` before routing, which would split an id such as
    ``order/42`` into two segments (or route ``x/cancel`` as a cancel of ``x``); matched on
    the path as sent, an encoded id stays one segment, and :func:`_param` decodes it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw is not None and raw.startswith(b"/api/"):
            scope = {**scope, "path": raw.decode("latin-1")}
        await self.app(scope, receive, send)


def _param(request: Request, name: str) -> str:
    """A path parameter, percent-decoded (see :class:`_RawApiPaths`)."""
    return unquote(request.path_params[name])


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError | BodyError)
    return _error(exc.status, exc.message)


async def _partly_sent(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PartlySentError)
    _log.error("%s %s failed part way", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": str(exc), "ids": exc.ids, "routed": exc.routed},
                        status_code=500)


async def _control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StepkitError)
    return _error(_status_of(exc), str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return _error(exc.status_code, message)


async def _server_error(request: Request, exc: Exception) -> Response:
    _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


def _since(raw: str | None, where: str = "since") -> float | None:
    """A ``since``/``until`` filter: an ISO 8601 instant (``2026-03-02T08:00:00Z``), or none."""
    if not raw:
        return None
    try:
        return parse_instant(raw, where=where).timestamp()
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _new_run_id(raw: Any) -> str | None:
    """A rerun's given ``run_id`` (a ULID, as every run id a rerun gets), or none."""
    from ulid import ULID

    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            return str(ULID.from_str(raw))
        except ValueError:
            pass
    raise ApiError(400, f"run_id: expected a ULID (26 characters), got {raw!r}")


def _limit(request: Request, default: int = 50) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit: expected an integer 1-{MAX_LIMIT}, got {raw!r}")
    return value


def _status(raw: str | None) -> RunStatus | None:
    if not raw:
        return None
    for status in RunStatus:
        if status.value.lower() == raw.lower():
            return status
    allowed = ", ".join(s.value for s in RunStatus)
    raise ApiError(400, f"status: expected one of {allowed}, got {raw!r}")


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "").lower()
    if raw in ("", "0", "false"):
        return False
    if raw in ("1", "true"):
        return True
    raise ApiError(400, f"{name}: expected true or false, got {raw!r}")


async def _json_body(request: Request, *, optional: bool = False) -> Any:
    """The request's JSON; an empty body is ``{}`` when ``optional``, else an error."""
    body = await read_body(request)
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "request body is empty; send an event object or a list of them")
    return parse_json(body)


def _fields(body: Any, allowed: Mapping[str, tuple[type, str]], example: str) -> Json:
    """A body's fields, each of its type, none unknown (an empty body gives none).

    Args:
        body: The parsed body.
        allowed: Each field's type and how the error names it (``"a string"``).
        example: A whole valid body, shown when the body is not an object.
    """
    if not isinstance(body, dict):
        raise ApiError(400, f"expected a JSON object like {example}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; expected "
                            f"{', '.join(allowed)}")
    for name, (kind, called) in allowed.items():
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise ApiError(400, f"{name}: expected {called}, got {type(body[name]).__name__}")
    return body


def _with_key(answer: Json) -> Response:
    """An answer that carries a key: no cache may keep it."""
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    """An event as a row of the events list: without its payload (``data``, ``user``)."""
    return {k: v for k, v in event.items() if k not in ("data", "user")}


class _Api:
    """The ``/api`` endpoints, over one control plane (its errors become statuses)."""

    def __init__(self, control: ControlPlane, about: Mapping[str, Any]) -> None:
        self.control = control
        self.described: Json = dict(about)

    async def about(self, request: Request) -> Response:
        return JSONResponse(self.described)

    async def send_events(self, request: Request) -> Response:
        payload: Events = await _json_body(request)
        if isinstance(payload, list) and len(payload) > MAX_BATCH_EVENTS:
            raise ApiError(413, f"{len(payload)} events in one request is over the "
                                f"{MAX_BATCH_EVENTS}-event limit; send them in smaller lists")
        sent = await run_in_threadpool(self.control.send, payload)
        return JSONResponse({"ids": sent.ids, "duplicates": sent.duplicates})

    async def list_events(self, request: Request) -> Response:
        limit = _limit(request)
        summary = _flag(request, "summary")
        found = await run_in_threadpool(lambda: self.control.events(limit=limit,
                                                                     summary=summary))
        return JSONResponse({"events": [_summary(e) for e in found] if summary else found})

    async def get_event(self, request: Request) -> Response:
        found = await run_in_threadpool(self.control.event, _param(request, "event_id"))
        return JSONResponse(found)

    async def list_functions(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.control.functions))

    async def list_runs(self, request: Request) -> Response:
        params = request.query_params
        query = RunQuery(
            function_id=params.get("function_id") or None,
            status=_status(params.get("status")),
            limit=_limit(request),
            since=_since(params.get("since")),
            until=_since(params.get("until"), "until"),
        )
        return JSONResponse({"runs": await run_in_threadpool(self.control.list_runs, query)})

    async def get_run(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.control.run,
                                                    _param(request, "run_id")))

    async def cancel(self, request: Request) -> Response:
        done = await run_in_threadpool(self.control.cancel, _param(request, "run_id"))
        return JSONResponse(done.to_json())

    async def rerun(self, request: Request) -> Response:
        body = await _json_body(request, optional=True)
        from_step = body.get("from") if isinstance(body, dict) else None
        if from_step is not None and not isinstance(from_step, str):
            raise ApiError(400, 'expected {"from": "<step key>"} or no body')
        given = _new_run_id(body.get("run_id") if isinstance(body, dict) else None)
        new_id = await run_in_threadpool(
            lambda: self.control.rerun(_param(request, "run_id"), from_step, new_id=given))
        return JSONResponse({"run_id": new_id})

    async def fire_cron(self, request: Request) -> Response:
        run_id = await run_in_threadpool(self.control.fire_cron,
                                         _param(request, "function_id"))
        return JSONResponse({"run_id": run_id})

    async def skip_sleep(self, request: Request) -> Response:
        skipped = await run_in_threadpool(self.control.skip_sleep, _param(request, "run_id"),
                                          _param(request, "key"))
        return JSONResponse({"skipped": skipped})

    async def invoke(self, request: Request) -> Response:
        body = await _json_body(request, optional=True)
        data = body.get("data", {}) if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ApiError(400, 'expected a JSON object like {"data": {"user_id": "ada"}}')
        run_id = await run_in_threadpool(self.control.invoke,
                                         _param(request, "function_id"), data)
        return JSONResponse({"run_id": run_id})

    async def list_dead_letters(self, request: Request) -> Response:
        found = await run_in_threadpool(self.control.dead_letters)
        return JSONResponse({"count": len(found), "messages": found})

    async def redrive(self, request: Request) -> Response:
        body = await _json_body(request, optional=True)
        if not isinstance(body, dict):
            raise ApiError(400, 'expected a JSON object like {"queue": "fn", "id": "12"}')
        chosen: dict[str, str | None] = {}
        for field in ("queue", "id"):
            value = body.get(field)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"{field}: expected a string, got {type(value).__name__}")
            chosen[field] = value
        unknown = sorted(set(body) - {"queue", "id"})
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; expected queue, id")
        redriven = await run_in_threadpool(
            lambda: self.control.redrive(queue=chosen["queue"], message_id=chosen["id"])
        )
        return JSONResponse({"redriven": redriven})

    async def pause(self, request: Request) -> Response:
        body = await _json_body(request, optional=True)
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(reason, str | None):
            raise ApiError(400, 'expected {"reason": "<why>"} or no body')
        return JSONResponse(await run_in_threadpool(
            self.control.pause, _param(request, "function_id"), reason))

    async def resume(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.control.resume,
                                                    _param(request, "function_id")))

    async def list_keys(self, request: Request) -> Response:
        return JSONResponse({"keys": await run_in_threadpool(self.control.event_keys)})

    async def create_key(self, request: Request) -> Response:
        body = _fields(await _json_body(request, optional=True),
                       {"label": (str, "a string"), "prefixes": (list, "a list of strings")},
                       '{"label": "billing", "prefixes": ["billing/"]}')
        label, prefixes = body.get("label") or "", body.get("prefixes") or []
        if not all(isinstance(p, str) for p in prefixes):
            raise ApiError(400, "prefixes: expected a list of strings")
        return _with_key(await run_in_threadpool(
            lambda: self.control.create_key(label=label, prefixes=prefixes)))

    async def rotate_key(self, request: Request) -> Response:
        body = _fields(await _json_body(request, optional=True),
                       {"grace": (str, 'a duration such as "1h"')}, '{"grace": "1h"}')
        try:
            grace = user_duration(body.get("grace") or "0s", where="grace").total_seconds()
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return _with_key(await run_in_threadpool(
            self.control.rotate_key, _param(request, "key_id"), grace))

    async def revoke_key(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(self.control.revoke_key,
                                                    _param(request, "key_id")))

    async def count_dead_letters(self, request: Request) -> Response:
        return JSONResponse({"count": await run_in_threadpool(self.control.dead_letter_count)})
