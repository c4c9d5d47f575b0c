"""Errors raised by stepkit and by user code into stepkit.

This module sits at the bottom of the dependency chain and imports nothing from the project.
Every user-facing error says whether it is retriable; control-flow interrupts are not here
(they live in the engine and subclass ``BaseException`` so user ``except Exception`` blocks
cannot swallow them).
"""

from __future__ import annotations

from datetime import datetime, timedelta


class StepkitError(Exception):
    """Base class for stepkit's own errors."""

    is_retriable: bool = True


class ConfigurationError(StepkitError):
    """A function, trigger or option is invalid; raised at registration time."""

    is_retriable = False


class InvalidEventError(StepkitError, ValueError):
    """An event failed validation; the message names the field and what is wrong."""

    is_retriable = False


class NonRetriableError(StepkitError):
    """Raise from a step or handler to fail it at once, without retries."""

    is_retriable = False


class RetryAfterError(StepkitError):
    """Raise to retry no earlier than a given time (a delay or an absolute time).

    Args:
        message: What went wrong.
        after: A delay, in the forms ``step.sleep`` takes (``"10m"``, ``"1h30m"`` or
            a ``timedelta``), or an aware ``datetime`` to retry at. An invalid value fails
            the step for good, with an error naming the step.
    """

    def __init__(self, message: str, after: str | timedelta | datetime) -> None:
        super().__init__(message)
        self.after = after


class StepError(StepkitError):
    """A step failed for good (retries exhausted or non-retriable).

    User code may catch it to run a fallback; left uncaught it fails the run without further
    retries, because the step already used its own.

    Attributes:
        step_id: The id of the step that failed.
        name: The class name of the original error.
        message: The original error's message.
    """

    is_retriable = False

    def __init__(self, step_id: str, name: str, message: str) -> None:
        super().__init__(f"step '{step_id}' failed: {name}: {message}")
        self.step_id = step_id
        self.name = name
        self.message = message


class NondeterminismError(StepkitError):
    """Replay found a different kind of step where the history recorded another."""

    is_retriable = False


class StepLimitError(StepkitError):
    """A run exceeded a limit (steps per run, step output size, JSON serialisability)."""

    is_retriable = False


class FunctionNotFoundError(StepkitError, LookupError):
    """No function with the given id is registered."""

    is_retriable = False


class FunctionRetiredError(StepkitError):
    """A by-hand start of a function marked ``retired=True`` (draining: it starts no run)."""

    is_retriable = False


class GateMovedError(StepkitError):
    """A flow-control gate changed between reading it and writing it; read it again."""


class PushbackError(StepkitError):
    """A service asked us to slow down (throttled, a conflict, busy): try again later.

    Raised by stepkit's own code (and by the harness's pushback mode) where AWS's errors
    would be; :func:`runtime.orchestration.pushback.is_pushback` also recognises AWS's.
    """


class WorkerLostError(StepkitError):
    """A step's attempt never came back: its worker died (a Lambda timeout, out of memory).

    Recorded as a failed attempt of the step, retried by its own ``retries``.
    """


#: A field a malformed message does not have at all (``None`` is a value it may hold).
_MISSING = object()


class MalformedMessageError(StepkitError, ValueError):
    """A queue message has a field missing or of the wrong type: stepkit never wrote it so.

    It can never succeed, so a worker sends it to the dead-letter queue on its first
    delivery, with this description as the reason (neither a pushback nor a failure that
    another delivery could get past).

    Attributes:
        kind: The message's kind (``start``, ``flush``...), or ``queue`` before it is known.
        field: The field, as a path into the message (``payload.events``).
    """

    is_retriable = False

    def __init__(self, kind: str, field: str, expected: str, *, found: object = _MISSING) -> None:
        super().__init__(f"malformed {kind} message: '{field}' {_found(found)}; expected "
                         f"{expected}")
        self.kind = kind
        self.field = field


def _found(value: object) -> str:
    """What a malformed field holds, in a few words (``is missing``, ``is 'x' (str)``)."""
    if value is _MISSING:
        return "is missing"
    text = repr(value)
    return f"is {text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"
