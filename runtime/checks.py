"""Whether registering a function runs the checks that need a parser (CEL, cron) loaded.

Every app is loaded with all its checks wherever it is written and deployed: in tests, by
the dev server, and by ``cdk synth``, which loads the very ``functions/`` the Lambda asset
carries. A Lambda handler loads that already-checked app again on every cold start, so it
defers what needs celpy (~0.4 s to import and build its grammar) or croniter: an expression
is parsed on its first evaluation, and only by the Lambda that evaluates it; a cron spec
gets only its shape checked (EventBridge Scheduler fires it on AWS). Only the checks move:
every value registration builds is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_DEFERRED: ContextVar[bool] = ContextVar("stepkit_checked_at_deploy", default=False)


def parser_checks() -> bool:
    """Whether registration parses expressions and cron specs now (everywhere but a Lambda)."""
    return not _DEFERRED.get()


@contextmanager
def checked_at_deploy() -> Iterator[None]:
    """Within: registration defers the parser checks (see the module docstring)."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)
