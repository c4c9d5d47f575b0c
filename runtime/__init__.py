"""stepkit: durable functions that run in your own AWS account.

The public API is exactly what this module exports.
"""

from runtime.app import App, CancelOn, FunctionDef, Timeouts, TriggerCron, TriggerEvent
from runtime.client import send
from runtime.engine.context import Context
from runtime.engine.steps import Steps
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

__all__ = [
    "App",
    "CancelOn",
    "ConfigurationError",
    "Context",
    "Event",
    "FunctionDef",
    "InvalidEventError",
    "NonRetriableError",
    "NondeterminismError",
    "RetryAfterError",
    "StepError",
    "StepLimitError",
    "StepkitError",
    "Steps",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "send",
]
