"""The dev server's HTTP API and dashboard, as a Starlette app over a backend.

Endpoints (all JSON; errors are ``{"error": "<message>"}`` with a 4xx status):

- ``POST /api/events``: one event or a list; ``{"ids": [...]}``.
- ``GET /api/events?limit=``: recently received events, newest first, each with the runs it
  started.
- ``GET /api/events/{event_id}``: one recent event with the runs it started (``runs``) and the
  runs whose ``wait_for_event`` it resolved (``waits``).
- ``GET /api/functions``: registered functions and their triggers.
- ``GET /api/runs?function_id=&status=&limit=``: runs, newest first.
- ``GET /api/runs/{run_id}``: a run with its step timeline.
- ``POST /api/runs/{run_id}/cancel``.
- ``POST /api/runs/{run_id}/rerun``, optionally with ``{"from": "<step key>"}`` (a fork: the new
  run reuses the results recorded before that step); ``{"run_id": <new run>}``.
- ``POST /api/functions/{function_id}/invoke`` with ``{"data": {...}}``: start a run by hand.
- ``POST /api/functions/{function_id}/cron``: fire a function's cron now.
- ``POST /api/runs/{run_id}/steps/{key}/skip``: end a sleeping step now (dev only).
- ``GET /api/dlq``: dead-lettered messages, oldest first, and their ``count``.
- ``POST /api/dlq/redrive`` with ``{"queue": ..., "id": ...}`` (both optional): put dead
  messages back to work; ``{"redriven": [ids]}``.
- ``GET /``: the dashboard; ``GET /healthz``: liveness.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from runtime.backends.local.store import SqliteStore
from runtime.core.gates import open_windows, why_waiting
from runtime.core.orchestrator import EVENT_DEDUP_SECONDS
from runtime.core.protocols import Clock, RunQuery, Store
from runtime.devserver import views
from runtime.dlq import DeadLetter
from runtime.durations import parse_instant
from runtime.errors import FunctionNotFoundError, InvalidEventError
from runtime.records import RunRecord, RunState, RunStatus, StepKind

if TYPE_CHECKING:
    from runtime.app import App

STATIC_DIR = Path(__file__).parent / "static"
MAX_LIMIT = 1000
_log = logging.getLogger("stepkit.devserver")


class DevBackend(Protocol):
    """What the dev server needs from a backend (``LocalBackend`` provides it)."""

    app: App
    clock: Clock

    @property
    def store(self) -> Store:
        """Run state and flow-control gates (read to say why a run is held back)."""
        ...

    def send(self, events: Any) -> list[str]:
        """Validate and accept events; raise ``InvalidEventError``; return their ids."""
        ...

    def get_run(self, run_id: str) -> RunState | None:
        """Return a run and its steps, or ``None``."""
        ...

    def list_runs(self, query: RunQuery = ...) -> list[RunRecord]:
        """Return runs matching ``query``, newest first."""
        ...

    def list_events(self, limit: int = 50) -> list[dict[str, Any]]:
        """Return recently received events, newest first."""
        ...

    def cancel(self, run_id: str) -> bool:
        """Cancel a running run; whether this call cancelled it."""
        ...

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Start a new run with the same events (a fork, ``from_step``); its id."""
        ...

    def invoke(self, function_id: str, data: dict[str, Any] | None = None) -> str:
        """Start a run of a function by hand; its id."""
        ...

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now; whether there was one."""
        ...

    def fire_cron(self, function_id: str) -> str:
        """Fire a function's cron now; the run's id."""
        ...

    def dead_letter_rows(self) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        ...

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered messages back to work; the ids redriven."""
        ...


class ApiError(Exception):
    """An error the API reports as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(backend: DevBackend) -> Starlette:
    """Build the dev server's ASGI app over ``backend``.

    Args:
        backend: Where events go and runs come from; calls to it run in a worker thread.

    """
    api = _Api(backend)
    routes = [
        Route("/", _index, methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/api/events", api.send_events, methods=["POST"]),
        Route("/api/events", api.list_events, methods=["GET"]),
        Route("/api/events/{event_id}", api.get_event, methods=["GET"]),
        Route("/api/functions", api.list_functions, methods=["GET"]),
        Route("/api/runs", api.list_runs, methods=["GET"]),
        Route("/api/runs/{run_id}", api.get_run, methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", api.cancel, methods=["POST"]),
        Route("/api/runs/{run_id}/rerun", api.rerun, methods=["POST"]),
        Route("/api/functions/{function_id}/invoke", api.invoke, methods=["POST"]),
        Route("/api/functions/{function_id}/cron", api.fire_cron, methods=["POST"]),
        Route("/api/runs/{run_id}/steps/{key}/skip", api.skip_sleep, methods=["POST"]),
        Route("/api/dlq", api.list_dead_letters, methods=["GET"]),
        Route("/api/dlq/redrive", api.redrive, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    return Starlette(routes=routes, exception_handlers=handlers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.message)


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


def _since(raw: str | None) -> float | None:
    """The ``since`` filter: an ISO 8601 instant (``2026-03-02T08:00:00Z``), or none."""
    if not raw:
        return None
    try:
        return parse_instant(raw, where="since").timestamp()
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


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


async def _json_body(request: Request, *, optional: bool = False) -> Any:
    """The request's JSON; an empty body is ``{}`` when ``optional``, else an error."""
    body = await request.body()
    if not body.strip():
        if optional:
            return {}
        raise ApiError(400, "request body is empty; send an event object or a list of them")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid JSON body: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"invalid JSON body: {exc}") from None


class _Api:
    """The ``/api`` endpoints, bound to one backend."""

    def __init__(self, backend: DevBackend) -> None:
        self.backend = backend

    async def send_events(self, request: Request) -> Response:
        payload = await _json_body(request)
        given = [str(e["id"]) for e in (payload if isinstance(payload, list) else [payload])
                 if isinstance(e, dict) and isinstance(e.get("id"), str) and e["id"]]

        def seen() -> list[str]:  # ids received before: such an event starts no new run
            now = self.backend.clock.now()
            return [i for i in given
                    if self.backend.store.event_seen(i, now=now, ttl=EVENT_DEDUP_SECONDS)]

        duplicates = await run_in_threadpool(seen)
        try:
            ids = await run_in_threadpool(self.backend.send, payload)
        except InvalidEventError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse({"ids": ids, "duplicates": duplicates})

    def _started(self) -> dict[str, list[dict[str, Any]]]:
        """The runs each event started (by event id), from the newest runs."""
        started: dict[str, list[dict[str, Any]]] = {}
        for run in self.backend.list_runs(RunQuery(limit=MAX_LIMIT)):  # the dev server's
            for e in run.events:
                started.setdefault(str(e.get("id")), []).append({
                    "run_id": run.run_id, "function_id": run.function_id,
                    "status": run.status.value})
        return started

    async def list_events(self, request: Request) -> Response:
        limit = _limit(request)

        def render() -> list[dict[str, Any]]:
            events = self.backend.list_events(limit)
            started = self._started()
            return [{**e, "runs": started.get(str(e.get("id")), [])} for e in events]

        return JSONResponse({"events": await run_in_threadpool(render)})

    async def get_event(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]

        def render() -> dict[str, Any] | None:
            found = next((e for e in self.backend.list_events(MAX_LIMIT)
                          if str(e.get("id")) == event_id), None)
            if found is None:
                return None
            return {**found, "runs": self._started().get(event_id, []),
                    "waits": resolved_waits(self.backend, event_id)}

        event = await run_in_threadpool(render)
        if event is None:
            raise ApiError(404, f"no recent event '{event_id}' (the newest {MAX_LIMIT} are kept "
                                "in view)")
        return JSONResponse(event)

    async def list_functions(self, request: Request) -> Response:
        def render() -> list[dict[str, Any]]:
            now = self.backend.clock.now()
            return [
                {**views.function_json(fn), "windows": [
                    {**w, "until": views.iso(w["until"])}
                    for w in open_windows(fn, self.backend.store, now)]}
                for fn in sorted(self.backend.app, key=lambda f: f.id)
            ]

        fns = await run_in_threadpool(render)
        return JSONResponse({"app_id": self.backend.app.id, "functions": fns})

    def _waiting(
        self, run: RunRecord, lines: dict[tuple[str, str], list[str]] | None = None
    ) -> dict[str, Any] | None:
        fn = self.backend.app.functions.get(run.function_id)
        return why_waiting(fn, run, self.backend.store, self.backend.clock.now(), lines)

    async def list_runs(self, request: Request) -> Response:
        params = request.query_params
        query = RunQuery(
            function_id=params.get("function_id") or None,
            status=_status(params.get("status")),
            limit=_limit(request),
            since=_since(params.get("since")),
        )

        def render() -> list[dict[str, Any]]:
            runs = self.backend.list_runs(query)
            lines: dict[tuple[str, str], list[str]] = {}  # each concurrency gate read once
            return [views.run_summary(r, self._waiting(r, lines)) for r in runs]

        return JSONResponse({"runs": await run_in_threadpool(render)})

    async def _state(self, run_id: str) -> RunState:
        state = await run_in_threadpool(self.backend.get_run, run_id)
        if state is None:
            raise ApiError(404, f"no run '{run_id}'")
        return state

    async def get_run(self, request: Request) -> Response:
        state = await self._state(request.path_params["run_id"])
        fn = self.backend.app.functions.get(state.run.function_id)
        waiting = await run_in_threadpool(self._waiting, state.run)
        reruns = await run_in_threadpool(self._reruns, state.run)
        return JSONResponse(views.run_detail(state, fn, waiting, reruns))

    def _reruns(self, run: RunRecord) -> list[RunRecord]:
        """Runs that rerun ``run`` (of the same function, created after it), newest first."""
        same = self.backend.list_runs(RunQuery(function_id=run.function_id,
                                               since=run.created_at, limit=MAX_LIMIT))
        return [r for r in same if r.rerun_of is not None and r.rerun_of.run_id == run.run_id]

    def _registered(self, state: RunState, action: str) -> None:
        if state.run.function_id not in self.backend.app.functions:
            raise ApiError(
                409,
                f"cannot {action} run '{state.run.run_id}': its function "
                f"'{state.run.function_id}' is no longer registered in app '{self.backend.app.id}'",
            )

    async def cancel(self, request: Request) -> Response:
        state = await self._state(request.path_params["run_id"])
        if state.run.status.finished:
            return JSONResponse({"cancelled": False, "status": state.run.status.value})
        self._registered(state, "cancel")
        try:
            cancelled = await run_in_threadpool(self.backend.cancel, state.run.run_id)
        except FunctionNotFoundError as exc:
            raise ApiError(409, str(exc)) from None
        fresh = await run_in_threadpool(self.backend.get_run, state.run.run_id)
        status = (fresh or state).run.status.value
        return JSONResponse({"cancelled": cancelled, "status": status})

    async def rerun(self, request: Request) -> Response:
        state = await self._state(request.path_params["run_id"])
        self._registered(state, "rerun")
        body = await _json_body(request, optional=True)
        from_step = body.get("from") if isinstance(body, dict) else None
        if from_step is not None and not isinstance(from_step, str):
            raise ApiError(400, 'expected {"from": "<step key>"} or no body')
        try:
            new_id = await run_in_threadpool(self.backend.rerun, state.run.run_id, from_step)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        return JSONResponse({"run_id": new_id})

    async def fire_cron(self, request: Request) -> Response:
        try:
            run_id = await run_in_threadpool(self.backend.fire_cron,
                                             request.path_params["function_id"])
        except FunctionNotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse({"run_id": run_id})

    async def skip_sleep(self, request: Request) -> Response:
        state = await self._state(request.path_params["run_id"])
        self._registered(state, "skip a sleep of")
        key = request.path_params["key"]
        skipped = await run_in_threadpool(self.backend.skip_sleep, state.run.run_id, key)
        return JSONResponse({"skipped": skipped})

    async def invoke(self, request: Request) -> Response:
        body = await _json_body(request, optional=True)
        data = body.get("data", {}) if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ApiError(400, 'expected a JSON object like {"data": {"user_id": "ada"}}')
        try:
            run_id = await run_in_threadpool(
                self.backend.invoke, request.path_params["function_id"], data)
        except FunctionNotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        except InvalidEventError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse({"run_id": run_id})

    async def list_dead_letters(self, request: Request) -> Response:
        found = await run_in_threadpool(self.backend.dead_letter_rows)
        return JSONResponse({"count": len(found), "messages": [d.to_json() for d in found]})

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
            lambda: self.backend.redrive(queue=chosen["queue"], message_id=chosen["id"])
        )
        if chosen["id"] is not None and not redriven:
            raise ApiError(404, f"no dead-lettered message '{chosen['id']}'")
        return JSONResponse({"redriven": redriven})


def resolved_waits(backend: DevBackend, event_id: str) -> list[dict[str, Any]]:
    """The runs whose ``wait_for_event`` step the event ``event_id`` resolved, newest first.

    A resolved wait records the matching event as its output. Steps a fork copied from its
    original (started before the fork itself was created) are left out: the event resolved the
    original's wait, not theirs. Over the local SQLite store this is one query
    (``SqliteStore.waits_resolved_by``); over another store, the newest runs are read one by
    one.
    """
    store = backend.store
    if isinstance(store, SqliteStore):  # one query, in the store that knows its tables
        return [{"run_id": run_id, "function_id": function_id, "status": status, "step": key}
                for run_id, function_id, status, key in store.waits_resolved_by(event_id,
                                                                                MAX_LIMIT)]
    found: list[dict[str, Any]] = []
    for run in backend.list_runs(RunQuery(limit=MAX_LIMIT)):
        state = backend.get_run(run.run_id)
        for rec in (state.steps.values() if state is not None else ()):
            output = rec.output
            if (rec.kind is StepKind.WAIT and isinstance(output, dict)
                    and output.get("id") == event_id
                    and (rec.started_at is None or rec.started_at >= run.created_at)):
                found.append({"run_id": run.run_id, "function_id": run.function_id,
                              "status": run.status.value, "step": rec.key})
    return found
