"""Serve the dev API in a background thread: for tests, and for embedding the dashboard."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import uvicorn

from runtime.devserver.api import DevBackend, create_app, create_dashboard

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from runtime.control import ControlPlane


@contextmanager
def serve_in_background(backend: DevBackend, *, host: str = "127.0.0.1",
                        require_keys: bool = False) -> Iterator[str]:
    """Serve the dev API for ``backend`` on a free port of ``host``; yield its base URL.

    ``require_keys`` has ``POST /e/<key>`` check event keys, as ``stepkit dev --require-keys``.

    Raises:
        RuntimeError: The server did not start within 10 seconds.
    """
    with _serving(lambda: create_app(backend, allowed_hosts=[host], require_keys=require_keys),
                  host) as url:
        yield url


@contextmanager
def serve_dashboard_in_background(
    control: ControlPlane, about: Mapping[str, Any], *, host: str = "127.0.0.1",
) -> Iterator[str]:
    """Serve the API and dashboard over ``control`` on a free port of ``host``; its base URL.

    Raises:
        RuntimeError: The server did not start within 10 seconds.
    """
    with _serving(lambda: create_dashboard(control, about=about, allowed_hosts=[host]),
                  host) as url:
        yield url


@contextmanager
def _serving(build: Callable[[], ASGIApp], host: str) -> Iterator[str]:
    """Serve the app ``build()`` makes on a free port of ``host`` until the block ends."""
    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    app = build()
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dev server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
