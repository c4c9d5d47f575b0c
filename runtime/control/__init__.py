"""The control plane: what a person or a test can ask of an app's runs, as one Protocol.

:class:`ControlPlane` is the one declaration of the control surface (send, cancel, rerun,
invoke, fire a cron, skip a sleep, redrive, pause, manage event keys) and of the listings that
go with it (runs, a run, events, functions, dead letters, event keys). It has three
implementations:

- :class:`runtime.control.local.InProcessControl`: over an orchestrator in this process (the
  dev server's API handlers and the test harness call it);
- :class:`runtime.control.http.HttpControl`: a client of a running dev server's API (the CLI);
- :class:`runtime.control.aws.AwsControl`: a deployed app's table, queues and bus (the CLI's
  ``--aws``).

Listings are the dev API's JSON (:mod:`runtime.control.views` renders them), the one shape
all three can give: the HTTP client receives nothing else. Failures are the errors below
(plus :class:`~runtime.errors.FunctionNotFoundError` and
:class:`~runtime.errors.InvalidEventError`), whichever implementation raises them;
:data:`CONTROL_ERRORS` names them all for callers that turn them into messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from runtime.errors import FunctionNotFoundError, InvalidEventError, StepkitError

if TYPE_CHECKING:
    from runtime.events import Event
    from runtime.orchestration.protocols import RunQuery

#: A JSON object in the dev API's shape (a run, a run summary, an event, a dead letter...).
Json = dict[str, Any]

#: What ``send`` takes: one event or several, as mappings or :class:`~runtime.events.Event`.
Events: TypeAlias = "Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event]"


class ControlError(StepkitError):
    """A control request that could not be done; the message says why, in one line."""


class NotFoundError(ControlError, LookupError):
    """What the request names does not exist (or is no longer kept)."""


class RunNotFoundError(NotFoundError):
    """No run with this id."""


class StepNotFoundError(NotFoundError):
    """The run has no step with this key."""


class EventNotFoundError(NotFoundError):
    """No event with this id among those kept in view."""


class DeadLetterNotFoundError(NotFoundError):
    """No dead-lettered message with this id."""


class EventKeyNotFoundError(NotFoundError):
    """No event key with this id (revoked keys are kept a while, then forgotten)."""


class BadRequestError(ControlError):
    """What the request gives cannot be used (a bad key id, label, prefix or grace)."""


class NotAllowedError(ControlError):
    """The target exists but cannot take this action.

    Its function is no longer registered, the function has no cron trigger, or the action
    is the dev server's only.
    """


class UnreachableError(ControlError):
    """The control plane could not be reached, or did not answer as one."""


#: Every error a :class:`ControlPlane` raises for a request it cannot do.
CONTROL_ERRORS: tuple[type[StepkitError], ...] = (
    ControlError, FunctionNotFoundError, InvalidEventError)


@dataclass(frozen=True)
class Sent:
    """The outcome of sending events.

    Attributes:
        ids: The events' ids, in the order sent.
        duplicates: The given ids received before (such an event starts no new run); a
            deployed bus does not say, so this is empty there.
    """

    ids: list[str]
    duplicates: list[str] = field(default_factory=list)

    def to_json(self) -> Json:
        """The API's shape (``POST /api/events``)."""
        return {"duplicates": self.duplicates, "ids": self.ids}


@dataclass(frozen=True)
class Cancelled:
    """The outcome of cancelling a run.

    Attributes:
        cancelled: Whether this request cancelled it; ``None`` when it was only queued for
            the run's worker (a deployed app), which decides.
        status: The run's status after the request (a :class:`~runtime.records.RunStatus`
            value).
        queued: The cancel was sent to the function's queue rather than applied here.
    """

    cancelled: bool | None
    status: str
    queued: bool = False

    def to_json(self) -> Json:
        """The API's shape (``POST /api/runs/{id}/cancel``): ``queued`` only when it was."""
        if self.queued:
            return {"cancelled": self.cancelled, "queued": True, "status": self.status}
        return {"cancelled": self.cancelled, "status": self.status}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cancelled:
        """Read the API's shape back."""
        return cls(data.get("cancelled"), str(data.get("status")), bool(data.get("queued")))


class ControlPlane(Protocol):
    """The control surface of an app's runs, wherever they run."""

    # -- actions --------------------------------------------------------------------------

    def send(self, events: Events) -> Sent:
        """Validate and send events (all or none).

        Raises:
            InvalidEventError: An event is invalid.
        """
        ...

    def cancel(self, run_id: str) -> Cancelled:
        """Cancel a run (its steps in flight finish; no new step starts).

        Raises:
            RunNotFoundError: No such run.
            NotAllowedError: Its function is no longer registered.
        """
        ...

    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Start a new run with a run's events (a fork from ``from_step``); its id.

        ``new_id`` (a ULID) is the new run's id when the caller derives it, so that asking
        twice starts one run (a bulk replay's resume); by default a fresh one.

        Raises:
            RunNotFoundError: No such run.
            StepNotFoundError: The run has no step ``from_step``.
            NotAllowedError: Its function is no longer registered.
        """
        ...

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run of a function by hand (event ``stepkit/function.invoked``); its id.

        Raises:
            FunctionNotFoundError: No such function.
            InvalidEventError: ``data`` is not a JSON object within the event limits.
        """
        ...

    def fire_cron(self, function_id: str) -> str:
        """Fire a function's cron trigger now, as its schedule would; the run's id.

        Raises:
            FunctionNotFoundError: No such function.
            NotAllowedError: It has no cron trigger.
        """
        ...

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now; whether there was one to end.

        Raises:
            RunNotFoundError: No such run.
            NotAllowedError: Its function is no longer registered, or the control plane
                does not skip sleeps (a deployed app).
        """
        ...

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered messages back to work (all, one queue's, or one); the ids.

        Raises:
            DeadLetterNotFoundError: ``message_id`` is given and no such message was found.
        """
        ...

    # -- listings -------------------------------------------------------------------------

    def list_runs(self, query: RunQuery) -> list[Json]:
        """Runs matching ``query``, newest first, as run summaries."""
        ...

    def run(self, run_id: str) -> Json:
        """One run with its step timeline.

        Raises:
            RunNotFoundError: No such run.
        """
        ...

    def functions(self) -> Json:
        """The app's id and its functions, with their triggers, options and open windows."""
        ...

    def events(self, *, limit: int = 50, summary: bool = False) -> list[Json]:
        """Recently received events, newest first.

        With ``summary``, perhaps without their payloads (``data``, ``user``), where leaving
        them out reads less.
        """
        ...

    def event(self, event_id: str) -> Json:
        """One event with the runs it started and the waits it resolved.

        ``runs`` and ``waits`` are lists of run summaries; ``waits`` is ``None`` where that is
        not known (a deployed app's table keeps no index of waits by event).

        Raises:
            EventNotFoundError: No such event in view.
        """
        ...

    def dead_letters(self) -> list[Json]:
        """Dead-lettered messages, oldest first."""
        ...

    def dead_letter_count(self) -> int:
        """How many messages sit in dead-letter queues."""
        ...

    # -- pausing (issue 25) ---------------------------------------------------------------

    def pause(self, function_id: str, reason: str | None = None) -> Json:
        """Pause a function: no run starts, no step runs; what is sent to it is kept.

        Idempotent (a paused function keeps its ``since`` and takes the new ``reason``).

        Returns:
            ``{"function_id": ..., "paused": {"reason": ..., "since": <ISO 8601>}}``.

        Raises:
            FunctionNotFoundError: No such function.
        """
        ...

    def resume(self, function_id: str) -> Json:
        """Resume a paused function: what was held goes on within a minute.

        Returns:
            ``{"function_id": ..., "paused": None, "resumed": <whether it was paused>}``.

        Raises:
            FunctionNotFoundError: No such function.
        """
        ...

    # -- event keys (issue 26) ------------------------------------------------------------
    # The answers to a creation and a rotation carry ``key``: the only time a key is shown.
    # ``key_id`` is a key's id (12 hex digits) or the whole key, whose id is taken from it.

    def event_keys(self) -> list[Json]:
        """The app's event keys, newest first (revoked ones for 30 days), never the keys.

        Each ``{id, label, prefixes, created, revoked, replaced_by, live}``.
        """
        ...

    def create_key(self, *, label: str = "", prefixes: Sequence[str] = ()) -> Json:
        """Make an event key allowed to send names starting with ``prefixes`` (none: any).

        Returns:
            The key as :meth:`event_keys` lists it, and ``key``: the key itself.

        Raises:
            BadRequestError: A label or prefix that cannot be kept.
        """
        ...

    def rotate_key(self, key_id: str, grace: float = 0.0) -> Json:
        """A new key with ``key_id``'s label and prefixes; the old one stops after ``grace`` s.

        Returns:
            The new key with ``key``, and ``replaces``: the old key as it now stands.

        Raises:
            EventKeyNotFoundError: No such key.
            BadRequestError: ``key_id`` is no key id, or ``grace`` is negative.
        """
        ...

    def revoke_key(self, key_id: str) -> Json:
        """Revoke a key now (the endpoint refuses it within 30 s); the key as it now stands.

        Raises:
            EventKeyNotFoundError: No such key.
            BadRequestError: ``key_id`` is no key id.
        """
        ...
