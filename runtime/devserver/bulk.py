"""``POST /api/runs/bulk/cancel`` and ``/api/runs/bulk/replay``: bulk actions by filter.

The body is the filter (``function_id``, ``status``, ``since``, ``until``, ``if``) and
``dry_run``; a replay also takes ``from`` (a step) and ``operation`` (to resume one). The
answer is the report (:meth:`runtime.control.bulk.Report.to_json`) and ``capped``.

The dev server runs the action in the request, on at most ``limit`` runs (the newest; 1000 at
most) at ``rate`` runs a second: the dashboard waits for the report. ``capped`` says more
runs may match than were handled: asking again handles the next ones (a cancel's are still
unfinished, and the same replay ``operation`` replays none twice).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.control import ControlPlane
from runtime.control.bulk import (
    DEFAULT_RATE,
    Operation,
    Pacer,
    Report,
    cancel_matching,
    filter_from_json,
    replay_matching,
)
from runtime.control.local import MAX_LIMIT
from runtime.devserver.bodies import BodyError, parse_json, read_body

_FIELDS = {"function_id", "status", "since", "until", "if", "dry_run", "rate", "limit",
           "from", "operation"}


def bulk_routes(control: ControlPlane) -> list[Route]:
    """The two routes, over ``control`` (listed before ``/api/runs/{run_id}/...``)."""
    async def cancel(request: Request) -> Response:
        return await _answer(request, control, "cancel")

    async def replay(request: Request) -> Response:
        return await _answer(request, control, "replay")

    return [Route("/api/runs/bulk/cancel", cancel, methods=["POST"]),
            Route("/api/runs/bulk/replay", replay, methods=["POST"])]


async def _answer(request: Request, control: ControlPlane, action: str) -> Response:
    raw = await read_body(request)
    body = parse_json(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise BodyError(400, "expected a JSON object with the filter and dry_run")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BodyError(400, f"unknown field(s) {', '.join(unknown)}; expected "
                             f"{', '.join(sorted(_FIELDS))}")
    limit = _number(body, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    report = await run_in_threadpool(_run, control, action, body, limit)
    return JSONResponse({**report.to_json(), "capped": report.matched >= limit})


def _run(control: ControlPlane, action: str, body: dict[str, Any], limit: int) -> Report:
    try:
        where = filter_from_json(body)
        # The in-process plane's clock (a test's fake one); a deployed app's is the wall's.
        clock = getattr(control, "clock", None)
        now = clock.now() if clock is not None else time.time()
        op = Operation.resume(body["operation"]) if body.get("operation") else Operation.begin(now)
        pacer = Pacer(_number(body, "rate", DEFAULT_RATE, 0.1, 1000))
        dry = _flag(body, "dry_run")
        if action == "cancel":
            return cancel_matching(control, where, operation=op, dry_run=dry, pacer=pacer,
                                   limit=limit)
        return replay_matching(control, where, from_step=_step(body), operation=op,
                               dry_run=dry, pacer=pacer, limit=limit)
    except (ValueError, TypeError) as exc:
        raise BodyError(400, str(exc)) from None


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> Any:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BodyError(400, f"{name}: expected a number {low:g}-{high:g}, got {value!r}")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value


def _step(body: dict[str, Any]) -> str | None:
    value = body.get("from")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"from: expected a step key, got {value!r}")
    return value or None
