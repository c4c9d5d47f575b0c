"""The ``stepkit`` console script: a clear message when the ``cli`` extra is missing.

The command line and dev server depend on the ``cli`` extra (click, httpx, starlette,
uvicorn), which the Lambda asset leaves out; an install without it gets one line saying
what to install instead of a traceback.
"""

from __future__ import annotations

import sys

_CLI_PACKAGES = frozenset({"click", "httpx", "starlette", "uvicorn"})


def main() -> None:
    """Run ``stepkit``."""
    try:
        from runtime.cli import main as run
    except ModuleNotFoundError as exc:
        if exc.name not in _CLI_PACKAGES:
            raise
        sys.exit(
            f"stepkit: the command line needs the 'cli' extra ({exc.name} is not installed): "
            "uv sync --extra cli, or pip install 'stepkit[cli]'"
        )
    run()
