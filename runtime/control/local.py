"""The control plane in process: over an orchestrator and its store, in this process.

The dev server's API handlers call it (and only translate its errors to HTTP statuses), and
the test harness offers it; its answers are the API's JSON (:mod:`runtime.control.views`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from runtime.control import (
    Cancelled,
    ControlError,
    DeadLetterNotFoundError,
    EventNotFoundError,
    Events,
    Json,
    NotAllowedError,
    RunNotFoundError,
    Sent,
    StepNotFoundError,
    keys,
    views,
)
from runtime.control.pausing import pause_function, resume_function, with_pauses
from runtime.errors import FunctionNotFoundError, FunctionRetiredError, InvalidEventError
from runtime.events import Event, validate_events
from runtime.orchestration.intake import EVENT_DEDUP_SECONDS
from runtime.orchestration.protocols import RunQuery
from runtime.orchestration.waiting import why_waiting
from runtime.orchestration.windows import open_windows
from runtime.records import RunRecord, RunState, StepKind

if TYPE_CHECKING:
    from runtime.app import App
    from runtime.dlq import DeadLetter
    from runtime.orchestration.protocols import Clock, Store

#: How many of the newest runs and events the listings look through (the dev server's view).
MAX_LIMIT = 1000
_CANCEL_REASON = "cancelled by user"


class PartlySentError(ControlError):
    """Routing a list of valid events failed part way: some were routed, the rest not.

    Each event is routed (and then remembered by id) on its own, so sending the same events
    again with the same ids routes the rest and ignores those routed already.

    Attributes:
        ids: Every event's id, in the order sent (generated ones included).
        routed: The ids routed before the failure.
    """

    def __init__(self, ids: list[str], routed: list[str], cause: Exception) -> None:
        super().__init__(
            f"routing failed after {len(routed)} of {len(ids)} event(s) "
            f"({type(cause).__name__}: {cause}); send the same events again with these ids "
            f"to route the rest (an id routed already is ignored): {', '.join(ids)}")
        self.ids = ids
        self.routed = routed


class Orchestrating(Protocol):
    """The orchestrator's public control methods this plane calls."""

    def send(self, events: Events) -> list[str]:
        """Validate and publish events; their ids."""
        ...

    def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a running run now; whether it was running."""
        ...

    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Queue a rerun (a fork from ``from_step``, as run ``new_id`` if given); its id."""
        ...

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Queue a run started by hand; its id."""
        ...

    def fire_cron_now(self, function_id: str) -> str:
        """Queue a cron fire at this instant; the run's id."""
        ...

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """Queue the end of a sleeping step; whether there was one."""
        ...

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs, newest first."""
        ...


class DeadLetterBox(Protocol):
    """Where a local backend keeps dead-lettered messages."""

    def dead_letter_rows(self) -> list[DeadLetter]:
        """Dead-lettered messages, oldest first."""
        ...

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered messages back to work; the ids redriven."""
        ...


class ControlledBackend(DeadLetterBox, Protocol):
    """A backend this plane can be built over (``LocalBackend`` is one)."""

    app: App
    clock: Clock

    @property
    def orchestrator(self) -> Orchestrating:
        """Performs the actions."""
        ...

    @property
    def store(self) -> Store:
        """Run state, gates and the event log."""
        ...


class InProcessControl:
    """The :class:`~runtime.control.ControlPlane` over an orchestrator in this process.

    Args:
        orchestrator: Performs the actions.
        app: The registered functions.
        store: Where runs, gates and the event log are read.
        clock: The backend's clock (what "now" is for flow-control windows and dedup).
        dead_letters: Where dead-lettered messages sit (none: there are none to show).

    """

    def __init__(
        self, orchestrator: Orchestrating, *, app: App, store: Store, clock: Clock,
        dead_letters: DeadLetterBox | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.app = app
        self.store = store
        self.clock = clock
        self.dead_letter_box = dead_letters

    @classmethod
    def over(cls, backend: ControlledBackend) -> InProcessControl:
        """The plane over a backend's orchestrator, store and dead letters."""
        return cls(backend.orchestrator, app=backend.app, store=backend.store,
                   clock=backend.clock, dead_letters=backend)

    # -- actions ------------------------------------------------------------------------------

    def send(self, events: Events) -> Sent:
        """Send events, all validated before any is routed; the ids, and those received before.

        Raises:
            InvalidEventError: An event is invalid; none was routed.
            PartlySentError: Routing failed part way (see there).
        """
        now = self.clock.now()
        valid = validate_events(events, now_ms=int(now * 1000))
        ids = [e.id for e in valid]
        seen = self._seen(valid, now)  # asked before sending: once routed, every id is "seen"
        try:
            self.orchestrator.send(valid)
        except InvalidEventError:  # a typed event's data: refused before any was routed
            raise
        except Exception as exc:
            raise PartlySentError(ids, self._seen(valid, self.clock.now()), exc) from exc
        return Sent(ids, seen)

    def cancel(self, run_id: str) -> Cancelled:
        """Cancel a run now; whether this call cancelled it, and its status after."""
        state = self._state(run_id)
        if state.run.status.finished:
            return Cancelled(False, state.run.status.value)
        self._registered(state, "cancel")
        try:
            cancelled = self.orchestrator.cancel(run_id, _CANCEL_REASON)
        except FunctionNotFoundError as exc:
            raise NotAllowedError(str(exc)) from None
        fresh = self.store.load(run_id)
        return Cancelled(cancelled, (fresh or state).run.status.value)

    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Queue a new run with the run's events (a fork from ``from_step``); its id."""
        state = self._state(run_id)
        self._registered(state, "rerun")
        try:
            return self.orchestrator.rerun(run_id, from_step, new_id=new_id)
        except LookupError as exc:  # the run is there: it is the step that is not
            raise StepNotFoundError(str(exc)) from None

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Queue a run of ``function_id`` started by hand; its id."""
        try:
            return self.orchestrator.invoke(function_id, data)
        except FunctionRetiredError as exc:
            raise NotAllowedError(str(exc)) from None

    def fire_cron(self, function_id: str) -> str:
        """Queue the run a cron fire at this instant starts; its id."""
        try:
            return self.orchestrator.fire_cron_now(function_id)
        except FunctionNotFoundError:
            raise
        except ValueError as exc:  # it has no cron trigger
            raise NotAllowedError(str(exc)) from None

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """Queue the end of a sleeping step; whether there was one to end."""
        state = self._state(run_id)
        self._registered(state, "skip a sleep of")
        return self.orchestrator.skip_sleep(run_id, key)

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Put dead-lettered messages back to work; the ids redriven."""
        redriven = (self.dead_letter_box.redrive(queue=queue, message_id=message_id)
                    if self.dead_letter_box is not None else [])
        if message_id is not None and not redriven:
            raise DeadLetterNotFoundError(f"no dead-lettered message '{message_id}'")
        return redriven

    # -- listings -----------------------------------------------------------------------------

    def list_runs(self, query: RunQuery) -> list[Json]:
        """Runs, newest first, each with why it is held back (if it is)."""
        lines: dict[tuple[str, str], list[str]] = {}  # each concurrency gate read once
        return [views.run_summary(r, self._waiting(r, lines))
                for r in self.orchestrator.list_runs(query)]

    def run(self, run_id: str) -> Json:
        """One run with its step timeline, why it waits and the runs that rerun it."""
        state = self._state(run_id)
        fn = self.app.find(state.run.function_id)
        return views.run_detail(state, fn, self._waiting(state.run), self._reruns(state.run))

    def functions(self) -> Json:
        """The app's functions, each with its open flow-control windows."""
        now = self.clock.now()
        fns = [{**views.function_json(fn), "windows": [
                    {**w, "until": views.iso(w["until"])}
                    for w in open_windows(fn, self.store, now)]}
               for fn in sorted(self.app, key=lambda f: f.id)]
        return with_pauses({"app_id": self.app.id, "functions": fns}, self.store)

    def events(self, *, limit: int = 50, summary: bool = False) -> list[Json]:
        """Recently received events, newest first, each with the runs it started.

        Whole, ``summary`` or not: the local database reads no less for it.
        """
        found = self.store.list_events(limit)
        started = self._started()
        return [{**e, "runs": started.get(str(e.get("id")), [])} for e in found]

    def event(self, event_id: str) -> Json:
        """One recent event, the runs it started and the waits it resolved."""
        found = next((e for e in self.store.list_events(MAX_LIMIT)
                      if str(e.get("id")) == event_id), None)
        if found is None:
            raise EventNotFoundError(
                f"no recent event '{event_id}' (the newest {MAX_LIMIT} are kept in view)")
        return {**found, "runs": self._started().get(event_id, []),
                "waits": self.resolved_waits(event_id)}

    def dead_letters(self) -> list[Json]:
        """Dead-lettered messages, oldest first."""
        return [d.to_json() for d in self._dead_letter_rows()]

    def dead_letter_count(self) -> int:
        """How many messages are dead-lettered."""
        return len(self._dead_letter_rows())

    def resolved_waits(self, event_id: str) -> list[Json]:
        """The runs whose ``wait_for_event`` step the event ``event_id`` resolved, newest first.

        A resolved wait records the matching event as its output. Steps a fork copied from
        its original (started before the fork itself was created) are left out: the event
        resolved the original's wait, not theirs. Over the local SQLite store this is one
        query (``SqliteStore.waits_resolved_by``); over another store, the newest runs are
        read one by one.
        """
        from runtime.backends.local.store import SqliteStore

        store = self.store
        if isinstance(store, SqliteStore):  # one query, in the store that knows its tables
            return [{"run_id": run_id, "function_id": function_id, "status": status,
                     "step": key}
                    for run_id, function_id, status, key in store.waits_resolved_by(
                        event_id, MAX_LIMIT)]
        found: list[Json] = []
        for run in self.orchestrator.list_runs(RunQuery(limit=MAX_LIMIT)):
            state = store.load(run.run_id)
            for rec in (state.steps.values() if state is not None else ()):
                output = rec.output
                if (rec.kind is StepKind.WAIT and isinstance(output, dict)
                        and output.get("id") == event_id
                        and (rec.started_at is None or rec.started_at >= run.created_at)):
                    found.append({"run_id": run.run_id, "function_id": run.function_id,
                                  "status": run.status.value, "step": rec.key})
        return found

    # -- helpers ------------------------------------------------------------------------------

    def _seen(self, events: Sequence[Event], now: float) -> list[str]:
        """The ids of ``events`` routed (as events of their names) within the dedup window."""
        return [e.id for e in events if self.store.event_seen(
            e.id, now=now, ttl=EVENT_DEDUP_SECONDS, name=e.name)]

    def _state(self, run_id: str) -> RunState:
        state = self.store.load(run_id)
        if state is None:
            raise RunNotFoundError(f"no run '{run_id}'")
        return state

    def _registered(self, state: RunState, action: str) -> None:
        """Refuse an action on a run whose function was since removed from the app."""
        if state.run.function_id not in self.app.functions:
            raise NotAllowedError(
                f"cannot {action} run '{state.run.run_id}': its function "
                f"'{state.run.function_id}' is no longer registered in app '{self.app.id}'")

    def _waiting(
        self, run: RunRecord, lines: dict[tuple[str, str], list[str]] | None = None
    ) -> dict[str, Any] | None:
        fn = self.app.find(run.function_id)
        return why_waiting(fn, run, self.store, self.clock.now(), lines)

    def _reruns(self, run: RunRecord) -> list[RunRecord]:
        """Runs that rerun ``run`` (of the same function, created after it), newest first."""
        same = self.orchestrator.list_runs(RunQuery(function_id=run.function_id,
                                                    since=run.created_at, limit=MAX_LIMIT))
        return [r for r in same if r.rerun_of is not None and r.rerun_of.run_id == run.run_id]

    def _started(self) -> dict[str, list[Json]]:
        """The runs each event started (by event id), from the newest runs."""
        started: dict[str, list[Json]] = {}
        for run in self.orchestrator.list_runs(RunQuery(limit=MAX_LIMIT)):
            for e in run.events:
                started.setdefault(str(e.get("id")), []).append({
                    "run_id": run.run_id, "function_id": run.function_id,
                    "status": run.status.value})
        return started

    def _dead_letter_rows(self) -> list[DeadLetter]:
        return self.dead_letter_box.dead_letter_rows() if self.dead_letter_box else []

    # -- pausing ------------------------------------------------------------------------------

    def pause(self, function_id: str, reason: str | None = None) -> Json:
        """Pause a registered function (its workers see it within ``PAUSE_CACHE_SECONDS``)."""
        self.app.get(function_id)  # FunctionNotFoundError names the registered functions
        return pause_function(self.store, self.clock, function_id, reason)

    def resume(self, function_id: str) -> Json:
        """Resume a registered function; its held messages come back within a minute."""
        self.app.get(function_id)
        return resume_function(self.store, self.clock, function_id)

    # -- event keys ---------------------------------------------------------------------------

    def event_keys(self) -> list[Json]:
        """The event keys in this store, newest first."""
        return keys.list_keys(self.store, self.clock)

    def create_key(self, *, label: str = "", prefixes: Sequence[str] = ()) -> Json:
        """Make an event key; the answer alone carries it (``key``)."""
        return keys.create_key(self.store, self.clock, label=label, prefixes=prefixes)

    def rotate_key(self, key_id: str, grace: float = 0.0) -> Json:
        """A new key in ``key_id``'s place; the old one stops after ``grace`` seconds."""
        return keys.rotate_key(self.store, self.clock, key_id, grace)

    def revoke_key(self, key_id: str) -> Json:
        """Revoke an event key now."""
        return keys.revoke_key(self.store, self.clock, key_id)
