"""stepkit: durable functions that run in your own AWS account.

The public API is exactly what this module exports. Each name is imported on first use, so
importing a submodule runs none of them: a Lambda handler (``runtime.handlers``) imports what
its first record needs and no more (see runtime/handlers/service.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.app import App, CancelOn, FunctionDef, Timeouts, TriggerCron, TriggerEvent
    from runtime.client import send
    from runtime.deploy import AwsOptions, PolicyStatement, VpcConfig
    from runtime.engine.context import Context
    from runtime.errors import (
        ConfigurationError,
        InvalidEventError,
        NondeterminismError,
        NonRetriableError,
        RetryAfterError,
        StepError,
        StepkitError,
        StepLimitError,
    )
    from runtime.events import Event
    from runtime.flow import (
        BatchEvents,
        Checkpointing,
        Concurrency,
        Debounce,
        Priority,
        RateLimit,
        Singleton,
        Throttle,
    )
    from runtime.secrets import secret
    from runtime.steps import Steps

__all__ = [
    "App",
    "AwsOptions",
    "BatchEvents",
    "CancelOn",
    "Checkpointing",
    "Concurrency",
    "ConfigurationError",
    "Context",
    "Debounce",
    "Event",
    "FunctionDef",
    "InvalidEventError",
    "NonRetriableError",
    "NondeterminismError",
    "PolicyStatement",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "Singleton",
    "StepError",
    "StepLimitError",
    "StepkitError",
    "Steps",
    "Throttle",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "VpcConfig",
    "secret",
    "send",
]


def __getattr__(name: str) -> Any:
    """Import the module a public name lives in, on its first use."""
    if name not in __all__:
        raise AttributeError(f"module 'runtime' has no attribute {name!r}")
    # Import statements, not importlib: infra/import_graph.py follows them into the asset.
    from runtime import app, client, deploy, errors, events, flow, secrets, steps
    from runtime.engine import context

    for module in (app, client, deploy, errors, events, flow, secrets, context, steps):
        if name in vars(module):
            value = vars(module)[name]
            globals()[name] = value
            return value
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")  # pragma: no cover
