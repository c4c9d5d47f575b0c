"""The control plane over HTTP: a client of a running dev server's API (``stepkit ...``).

Each method is one request; the API's error statuses come back as the control plane's errors
(400: :class:`~runtime.control.BadRequestError`, 404: :class:`~runtime.control.NotFoundError`,
409: :class:`~runtime.control.NotAllowedError`, other 4xx:
:class:`~runtime.control.ControlError`), carrying the server's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from runtime.control import (
    BadRequestError,
    Cancelled,
    ControlError,
    Events,
    Json,
    NotAllowedError,
    NotFoundError,
    Sent,
    UnreachableError,
)

if TYPE_CHECKING:
    from runtime.orchestration.protocols import RunQuery

_ERRORS: dict[int, type[ControlError]] = {400: BadRequestError, 404: NotFoundError,
                                          409: NotAllowedError}


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)


class HttpControl:
    """The :class:`~runtime.control.ControlPlane` of a running dev server.

    Args:
        url: The dev server's base URL.
        timeout: Seconds to wait for an answer.

    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        not_there = f"no stepkit dev server at {self.url}; start one with `stepkit dev`"
        try:
            # Proxy variables are ignored: the dev server is local.
            resp = httpx.request(
                method,
                self.url + path,
                params={k: v for k, v in (params or {}).items() if v is not None},
                json=body,
                timeout=self.timeout,
                trust_env=False,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise UnreachableError(f"invalid --url {self.url!r}: {exc}") from None
        except httpx.ConnectError:
            raise UnreachableError(not_there) from None
        except httpx.TimeoutException:
            raise UnreachableError(
                f"the dev server at {self.url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise UnreachableError(f"request to {self.url} failed: {exc}") from None
        try:
            data = resp.json()
        except ValueError:
            raise UnreachableError(
                f"{self.url}{path} answered HTTP {resp.status_code} without JSON; is it a "
                "stepkit dev server?"
            ) from None
        if resp.is_error:
            error = data.get("error") if isinstance(data, dict) else None
            raise _ERRORS.get(resp.status_code, ControlError)(
                error or f"HTTP {resp.status_code} from {self.url}{path}")
        return data

    # -- actions ------------------------------------------------------------------------------

    def send(self, events: Events) -> Sent:
        """Send events; their ids, and those received before (``duplicates``)."""
        data = self._request("POST", "/api/events", body=events)
        return Sent(list(data["ids"]), list(data.get("duplicates") or []))

    def cancel(self, run_id: str) -> Cancelled:
        """Cancel a run; whether this call cancelled it, and its status."""
        return Cancelled.from_json(self._request("POST", "/api/runs" + _path(run_id, "cancel")))

    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Start a new run with a run's events (a fork, ``from_step``); the new run's id."""
        body = {k: v for k, v in (("from", from_step), ("run_id", new_id)) if v} or None
        return str(self._request("POST", "/api/runs" + _path(run_id, "rerun"),
                                 body=body)["run_id"])

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run of a function by hand; its id."""
        path = "/api/functions" + _path(function_id, "invoke")
        return str(self._request("POST", path, body={"data": dict(data or {})})["run_id"])

    def fire_cron(self, function_id: str) -> str:
        """Fire a function's cron trigger now; the run's id."""
        return str(self._request("POST", "/api/functions" + _path(function_id, "cron"))["run_id"])

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now; whether there was one."""
        path = "/api/runs" + _path(run_id, "steps", key, "skip")
        return bool(self._request("POST", path)["skipped"])

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered messages back to work; the ids redriven."""
        body = {k: v for k, v in (("queue", queue), ("id", message_id)) if v is not None}
        return list(self._request("POST", "/api/dlq/redrive", body=body)["redriven"])

    # -- listings -----------------------------------------------------------------------------

    def list_runs(self, query: RunQuery) -> list[Json]:
        """Runs, newest first, as the API renders them."""
        from runtime.durations import format_instant

        params = {"function_id": query.function_id,
                  "status": query.status.value if query.status else None,
                  "limit": query.limit,
                  "since": None if query.since is None else format_instant(query.since),
                  "until": None if query.until is None else format_instant(query.until)}
        return list(self._request("GET", "/api/runs", params=params)["runs"])

    def run(self, run_id: str) -> Json:
        """One run with its step timeline."""
        data: Json = self._request("GET", "/api/runs" + _path(run_id))
        return data

    def functions(self) -> Json:
        """The app's functions, with their triggers, options and open windows."""
        data: Json = self._request("GET", "/api/functions")
        return data

    def events(self, *, limit: int = 50, summary: bool = False) -> list[Json]:
        """Recently received events, newest first (without payloads with ``summary``)."""
        params: dict[str, Any] = {"limit": limit}
        if summary:
            params["summary"] = "true"
        return list(self._request("GET", "/api/events", params=params)["events"])

    def event(self, event_id: str) -> Json:
        """One recent event with the runs it started and the waits it resolved."""
        data: Json = self._request("GET", "/api/events" + _path(event_id))
        return data

    def dead_letters(self) -> list[Json]:
        """Dead-lettered messages, oldest first, as the API renders them."""
        return list(self._request("GET", "/api/dlq")["messages"])

    def dead_letter_count(self) -> int:
        """How many messages sit in dead-letter queues."""
        return int(self._request("GET", "/api/dlq")["count"])

    def pause(self, function_id: str, reason: str | None = None) -> Json:
        """``POST /api/functions/{id}/pause`` with ``{"reason": ...}``."""
        data: Json = self._request("POST", "/api/functions" + _path(function_id, "pause"),
                                   body={"reason": reason})
        return data

    def resume(self, function_id: str) -> Json:
        """``POST /api/functions/{id}/resume``."""
        data: Json = self._request("POST", "/api/functions" + _path(function_id, "resume"))
        return data

    # -- event keys ---------------------------------------------------------------------------

    def event_keys(self) -> list[Json]:
        """``GET /api/keys``."""
        return list(self._request("GET", "/api/keys")["keys"])

    def create_key(self, *, label: str = "", prefixes: Sequence[str] = ()) -> Json:
        """``POST /api/keys`` with ``{"label", "prefixes"}``."""
        data: Json = self._request("POST", "/api/keys",
                                   body={"label": label, "prefixes": list(prefixes)})
        return data

    def rotate_key(self, key_id: str, grace: float = 0.0) -> Json:
        """``POST /api/keys/{id}/rotate`` with ``{"grace": "<seconds>s"}``."""
        data: Json = self._request("POST", "/api/keys" + _path(_key_id(key_id), "rotate"),
                                   body={"grace": f"{grace:f}s"})
        return data

    def revoke_key(self, key_id: str) -> Json:
        """``POST /api/keys/{id}/revoke``."""
        data: Json = self._request("POST", "/api/keys" + _path(_key_id(key_id), "revoke"))
        return data


def _key_id(given: str) -> str:
    """The id of a key named by its id or whole: only the id goes into a URL (and its logs)."""
    from runtime.control.keys import key_ident

    return key_ident(given)
