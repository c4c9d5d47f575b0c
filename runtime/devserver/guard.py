"""Who may talk to the dev server: no other web page, by DNS rebinding or by a forged form.

The dev server runs the developer's functions with their local credentials, so a page open in
the same browser must neither read its state nor change it:

- **Host** must name this server: a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any
  port) or the address ``stepkit dev --host`` bound. A rebinding page reaches the server under
  its own domain name, which the browser sends as ``Host``; refusing unknown names defeats it.
  An IP address literal is also accepted when the server was bound to a wildcard address
  (``0.0.0.0``, ``::``): a browser sends an address literal only for a URL naming that address,
  whose origin is then this server itself, so no other page can use it.
- A **state-changing** request (POST, PUT, PATCH, DELETE) with an ``Origin`` header must come
  from this server's own origin (``http://`` + its ``Host``): browsers send ``Origin`` on every
  cross-origin POST, including ``no-cors`` fetches and form posts.
- Its body must be ``Content-Type: application/json`` (parameters such as ``charset`` allowed);
  a request without a body may carry no content type. A cross-origin form can only send
  ``text/plain``, ``multipart/form-data`` or ``application/x-www-form-urlencoded``.

Refusals are JSON errors naming the rule: 403 for Host and Origin, 415 for the content type.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

#: Host names every dev server answers to, whatever it was bound to.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Bind addresses that listen on every interface.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
#: The methods that change state, whose origin and body type are checked.
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON = "application/json"


def host_name(host: str) -> str:
    """The host of a ``Host`` header or an origin's authority, without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8288
        return host[1:].partition("]")[0]
    if host.count(":") == 1:  # localhost:8288 (more colons: a bare IPv6 address)
        return host.partition(":")[0]
    return host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostRule:
    """Which ``Host`` names the server answers to.

    Args:
        allowed: Names accepted besides the loopback ones (the address the server was bound
            to); a wildcard address among them accepts every IP address literal.

    """

    def __init__(self, allowed: Collection[str] = ()) -> None:
        names = {host_name(a) for a in allowed}
        self.any_address = bool(names & WILDCARD_HOSTS)
        self.names = frozenset(LOOPBACK_HOSTS | (names - WILDCARD_HOSTS))

    def allows(self, host: str) -> bool:
        """Whether a request whose ``Host`` header is ``host`` is for this server."""
        name = host_name(host)
        return name in self.names or (self.any_address and _is_ip(name))

    def problem(self, host: str) -> str | None:
        """Why a request with this ``Host`` header (``""``: none) is refused, or ``None``."""
        if not host:
            return "the request has no Host header; the dev server answers only requests " \
                   "addressed to it by name (a guard against DNS rebinding)"
        if self.allows(host):
            return None
        names = ", ".join(f"[{n}]" if ":" in n else n
                          for n in sorted(self.names, key=lambda n: (n != "localhost", n)))
        return (f"Host {host!r} is not this server: the dev server answers only requests "
                f"addressed to {names} (a guard against DNS rebinding); to use another name, "
                "bind it with `stepkit dev --host`")


def origin_problem(origin: str | None, host: str) -> str | None:
    """Why a state-changing request from ``origin`` to ``host`` is refused, or ``None``.

    No ``Origin`` (the CLI, curl, a same-origin GET) is accepted; a browser sends one with
    every cross-origin POST. ``null`` (a sandboxed frame, a ``file:`` page) is not this server.
    """
    if origin is None:
        return None
    scheme, sep, authority = origin.strip().lower().partition("://")
    if sep and scheme == "http" and authority == host.strip().lower():
        return None
    return (f"Origin {origin!r} is not this server (http://{host}): another web page may not "
            "change the dev server's state (a guard against cross-site request forgery)")


def content_type_problem(headers: Mapping[str, str]) -> str | None:
    """Why a state-changing request's body type is refused, or ``None``.

    A request with a body must say it is JSON; one without may say nothing.
    """
    declared = headers.get("content-type")
    if declared is None:
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        if not has_body:
            return None
    elif declared.partition(";")[0].strip().lower() == _JSON:
        return None
    shown = "a body without a Content-Type" if declared is None else f"Content-Type {declared!r}"
    return (f"{shown} is not accepted: send the body as JSON with Content-Type: {_JSON} "
            "(a guard against cross-site form posts)")


class LocalOnly:
    """ASGI middleware refusing requests from other web pages (see the module docstring).

    Args:
        app: The app it guards.
        hosts: The ``Host`` names accepted.
        open_paths: Path prefixes left to their routes, which admit requests themselves (the
            dev server's webhook endpoint, by signature).

    """

    def __init__(self, app: ASGIApp, *, hosts: HostRule,
                 open_paths: Sequence[str] = ()) -> None:
        self.app = app
        self.hosts = hosts
        self.open_paths = tuple(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an allowed HTTP request on; answer any other with its refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, message = refused
        await _send_error(send, status, message)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """The status and message refusing this request, or ``None`` to let it through."""
        if self.open_paths and str(scope.get("path", "")).startswith(self.open_paths):
            return None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        problem = self.hosts.problem(host)
        if problem is not None:
            return 403, problem
        if scope["method"] not in STATE_CHANGING:
            return None
        problem = origin_problem(headers.get("origin"), host)
        if problem is not None:
            return 403, problem
        problem = content_type_problem(headers)
        return None if problem is None else (415, problem)


async def _send_error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
