"""stepkit: durable functions that run in your own AWS account.

The public API is exactly what this module exports.
"""

from runtime.app import App, CancelOn, FunctionDef, Timeouts, TriggerCron, TriggerEvent
from runtime.client import send
from runtime.deploy import AwsOptions, PolicyStatement, VpcConfig
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
from runtime.flow import (
    BatchEvents,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
)
from runtime.secrets import secret

__all__ = [
    "App",
    "AwsOptions",
    "BatchEvents",
    "CancelOn",
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
