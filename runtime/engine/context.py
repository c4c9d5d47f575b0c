"""``ctx``: what a handler receives."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from runtime import steps as step_kinds  # the module: its kinds import the engine in turn
from runtime.engine.template import ReplayState, step_key
from runtime.errors import NonRetriableError
from runtime.events import Event

_UUIDS = uuid.UUID("0f7d4a2e-5c1b-4e8a-9d3f-6b2a1c0e9f87")
#: The id of the step that records a ``ctx.patched(change_id)`` came out true.
PATCH_PREFIX = "patched:"


def _true() -> bool:
    return True


class ReplayLogger:
    """A logger that stays quiet while the handler replays memoized steps.

    Each invocation re-runs the handler from the top; without this, every line logged before
    the current step would be printed again on every invocation.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any], state: ReplayState):
        self._logger = logger
        self._state = state

    def _log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        # The level first: a disabled call costs one check, whatever the run's length.
        if self._logger.isEnabledFor(level) and self._state.live:
            kwargs.setdefault("stacklevel", 3)
            self._logger.log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at DEBUG, unless replaying."""
        self._log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at INFO, unless replaying."""
        self._log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at WARNING, unless replaying."""
        self._log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR, unless replaying."""
        self._log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: Any, **kwargs: Any) -> None:
        """Log at ERROR with the current exception, unless replaying."""
        kwargs.setdefault("exc_info", True)
        self._log(logging.ERROR, msg, *args, **kwargs)


class Context:
    """The handler's view of its run.

    Attributes:
        event: The triggering event (the first, for batches).
        events: All triggering events.
        run_id: This run's id.
        attempt: The current attempt (0-based) of the step being run, or of the handler.
        step: The step tools.
        logger: A logger that does not repeat lines on replay.
    """

    def __init__(
        self,
        state: ReplayState,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        data_model: type[Any] | None = None,
    ) -> None:
        self._state = state
        self._model = data_model
        self._data: Any = None
        self.events = [Event.model_validate(e) for e in state.run.events]
        self.event = self.events[0]
        self.run_id = state.run.run_id
        self.attempt = state.run.attempt
        self.step = step_kinds.Steps(state)
        self.logger = ReplayLogger(logger, state)
        self._uuids = 0
        self._patches: dict[str, bool] = {}

    @property
    def data(self) -> Any:
        """The triggering event's data, typed when its trigger declares a ``data=`` model.

        An instance of that model, or the dict when there is none.

        Raises:
            NonRetriableError: The data does not match the model (an event that reached the
                run without passing stepkit's send, e.g. a plain ``PutEvents``).
        """
        if self._model is None:
            return self.event.data
        if self._data is None:
            try:
                self._data = self._model.model_validate(self.event.data)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise NonRetriableError(
                    f"event '{self.event.name}' ({self.event.id}): its data does not match "
                    f"{self._model.__name__}: {exc}") from None
        return self._data

    def now(self) -> datetime:
        """The time of the run's latest checkpoint; the same value on every replay.

        It is when the last step the handler has passed finished (or when the run was
        created), like a workflow clock: use it instead of ``datetime.now()`` in handler code.
        """
        s = self._state
        point = s.scope_checkpoint.get(s.scope, s.checkpoint) if s.scope else s.checkpoint
        return datetime.fromtimestamp(max(point, s.run.created_at), tz=UTC)

    def uuid(self) -> uuid.UUID:
        """A random-looking UUID that is the same on every replay.

        Inside a parallel branch it depends only on that branch's own progress.
        """
        s = self._state
        if s.scope:
            s.scope_uuids[s.scope] += 1
            seed = f"{self.run_id}/{s.scope}/{s.scope_visited[s.scope]}/{s.scope_uuids[s.scope]}"
            return uuid.uuid5(_UUIDS, seed)
        self._uuids += 1
        seed = f"{self.run_id}/{len(s.visited)}/{self._uuids}"
        return uuid.uuid5(_UUIDS, seed)

    def patched(self, change_id: str) -> bool:
        """Whether this run takes the new code of a deliberate change (Temporal's ``patched``).

        True for a run that reaches this call under the code that has it: the first time,
        a ``run`` step ``patched:<change_id>`` records it (one more step), so the run takes
        the new code on every replay. False for a run that had already recorded steps past
        this point under the code before, so it replays the old code it ran. The same answer
        for every call with this id in one run. Remove the call (keeping the new code) only
        once no run that recorded the old path is in flight.

        Raises:
            NonRetriableError: Called in a parallel branch (its siblings' steps are not
                replayed yet, so "past this point" cannot be told).
        """
        if change_id not in self._patches:
            self._patches[change_id] = self._patch(change_id)
        return self._patches[change_id]

    def _patch(self, change_id: str) -> bool:
        s = self._state
        if s.scope:
            raise NonRetriableError(
                f"ctx.patched('{change_id}') in a parallel branch: call it before the group")
        step_id = f"{PATCH_PREFIX}{change_id}"
        # Any record not replayed yet (of any status) was made past this point by old code.
        if step_key(step_id) not in s.history and any(k not in s.visited for k in s.history):
            return False
        return bool(self.step.run(step_id, _true))
