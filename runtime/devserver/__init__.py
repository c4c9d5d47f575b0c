"""The local dev server: a JSON API over a backend, and a dashboard to watch runs.

``create_app(backend)`` builds the Starlette app; ``stepkit dev`` (:mod:`runtime.cli`) serves it
over a :class:`~runtime.backends.local.LocalBackend`.
"""

from runtime.devserver.api import DevBackend, create_app

__all__ = ["DevBackend", "create_app"]
