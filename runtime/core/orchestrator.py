"""Shared run orchestration: messages and events in, engine decisions out as atomic commits.

Backends supply the I/O (:mod:`runtime.core.protocols`); this module holds every rule about
how a decision becomes state, so the local and AWS backends behave the same.

Idempotency rests on three rules:
- every change is one :class:`~runtime.records.Commit` conditioned on the run's version and
  the touched step's prior state, so a duplicate or late message cannot apply twice;
- only a CONTINUE carrying the run's current version may advance the main line;
- the outbox of the last commit is stored with it, so the redelivery of a message whose commit
  landed but whose sends did not re-sends them instead of being dropped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from runtime.app import App, FunctionDef
from runtime.core.commits import commit_for, finish_outbox, waiters_of
from runtime.core.ids import new_run_id, run_id_for_event
from runtime.core.protocols import Bus, Clock, Queue, RunQuery, Store
from runtime.engine import Limits, execute
from runtime.events import (
    SCHEDULED_TIMER,
    SYSTEM_PREFIX,
    Event,
    validate_events,
)
from runtime.expressions import Expression, interpolate
from runtime.records import (
    Commit,
    ErrorInfo,
    EventOut,
    Message,
    MessageKind,
    Outgoing,
    ParentRef,
    RunPatch,
    RunRecord,
    RunState,
    RunStatus,
    StepKind,
    StepStatus,
    StepWrite,
    Waiter,
    WaiterKind,
)

EVENT_DEDUP_SECONDS = 24 * 3600
_COMMIT_TRIES = 8
_log = logging.getLogger("stepkit")


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Expression:
    return Expression.compile(source, where="waiter")


class Orchestrator:
    """Handles queue messages and incoming events for one app.

    Args:
        app: The registered functions.
        store: Run state.
        queue: Function queues.
        bus: The event bus.
        clock: Time source.
        limits: Per-run limits.
        logger: Where run and step logs go.
    """

    def __init__(
        self,
        app: App,
        store: Store,
        queue: Queue,
        bus: Bus,
        clock: Clock,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.queue = queue
        self.bus = bus
        self.clock = clock
        self.limits = limits
        self.log = logger or _log

    # -- events ----------------------------------------------------------------------------

    def send(
        self,
        events: Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event],
        *,
        allow_system: bool = False,
    ) -> list[str]:
        """Validate and publish events (all or none); return their ids."""
        valid = validate_events(
            events, now_ms=int(self.clock.now() * 1000), allow_system=allow_system
        )
        self.bus.publish([e.to_json() for e in valid])
        return [e.id for e in valid]

    def route_event(self, event: dict[str, Any], *, start_runs: bool = True) -> None:
        """Handle one published event: dedup it, start triggered runs, resolve waiters.

        Args:
            event: A validated event.
            start_runs: False where the platform delivers triggers itself (EventBridge rules).
        """
        # Starts go first: they are idempotent (one run id per function and event id), so a
        # crash before the event is remembered loses nothing and a re-send starts nothing new.
        if start_runs:
            self.queue.send([self.start_message(fn, event) for fn in self.triggered(event)])
        now = self.clock.now()
        if not self.store.remember_event(event, now=now, ttl=EVENT_DEDUP_SECONDS):
            self.log.info("duplicate event %s ignored", event["id"])
            return
        self.resolve_waiters(event)

    def triggered(self, event: dict[str, Any]) -> list[FunctionDef]:
        """Functions that ``event`` starts."""
        return [fn for fn in self.app if self.starts(fn, event)]

    @staticmethod
    def starts(fn: FunctionDef, event: dict[str, Any]) -> bool:
        """Whether ``event`` starts ``fn``.

        A trigger (with its CEL ``if``) must match, and it must not be a system event about
        ``fn`` itself (which would loop forever).
        """
        if not fn.triggered_by(event):
            return False
        about = event.get("data", {}).get("function_id")
        return not (event["name"].startswith(SYSTEM_PREFIX) and about == fn.id)

    @staticmethod
    def start_message(fn: FunctionDef, event: dict[str, Any]) -> Message:
        """The START message for ``fn`` triggered by ``event`` (same run id on every delivery)."""
        run_id = run_id_for_event(fn.id, event["id"])
        return Message(
            MessageKind.START, fn.id, run_id, id=f"start-{run_id}", payload={"events": [event]}
        )

    def resolve_waiters(self, event: dict[str, Any]) -> None:
        """Resolve ``wait_for_event`` steps and ``cancel_on`` listeners this event matches."""
        now = self.clock.now()
        for w in self.store.waiters_for(event["name"]):
            if w.expires_at is not None and w.expires_at < now:
                continue
            if w.expression and not _compiled(w.expression).matches_vars({"async": event}):
                continue
            if w.kind is WaiterKind.CANCEL:
                self.cancel(w.run_id, f"cancelled by event '{event['name']}' ({event['id']})")
            else:
                self._resolve_step(w.run_id, w.key, StepStatus.WAITING, output=event, waiter=w)

    def fire_cron(self, fn: FunctionDef, cron: str, at: float) -> None:
        """Start ``fn`` for its cron schedule's fire time ``at`` (idempotent per fire time)."""
        self.queue.send([self.cron_message(fn, cron, at)])

    @staticmethod
    def cron_message(fn: FunctionDef, cron: str, at: float) -> Message:
        """The START message of a cron fire: one run id per function and fire time."""
        ts_ms = int(at * 1000)
        event_id = f"cron-{fn.id}-{ts_ms}"
        event = {
            "id": event_id,
            "name": SCHEDULED_TIMER,
            "data": {"cron": cron},
            "user": {},
            "ts": ts_ms,
        }
        run_id = run_id_for_event(fn.id, event_id)
        return Message(
            MessageKind.START,
            fn.id,
            run_id,
            id=f"start-{run_id}",
            payload={"events": [event], "direct": True},
        )

    # -- control ---------------------------------------------------------------------------

    def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a running run. Returns whether this call cancelled it."""
        for _ in range(_COMMIT_TRIES):
            state = self.store.load(run_id)
            if state is None or state.run.status.finished:
                return False
            # The run's function may be gone from the code (a deploy removed it): still
            # cancellable, with only the waiters its steps show.
            fn = self.app.functions.get(state.run.function_id)
            now = self.clock.now()
            error = ErrorInfo("FunctionCancelled", reason, retriable=False)
            commit = Commit(
                msg_id=f"cancel-{uuid.uuid4().hex}",
                expect_version=state.run.version,
                run=RunPatch(status=RunStatus.CANCELLED, error=error, ended_at=now),
                remove_waiters=waiters_of(fn, state),
                outbox=finish_outbox(state.run, RunStatus.CANCELLED, None, error, now),
            )
            if self.store.commit(run_id, commit):
                self.log.info("run %s cancelled: %s", run_id, reason)
                self._flush(commit.outbox)
                return True
        return False

    def rerun(self, run_id: str) -> str:
        """Start a new run of the same function with the same events; return its id."""
        state = self.store.load(run_id)
        if state is None:
            raise LookupError(f"no run '{run_id}'")
        new_id = new_run_id(self.clock.now())
        msg = Message(
            MessageKind.START,
            state.run.function_id,
            new_id,
            id=f"start-{new_id}",
            payload={"events": list(state.run.events), "direct": True},
        )
        self.queue.send([msg])
        return new_id

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs, newest first."""
        return self.store.list_runs(query)

    # -- queue messages --------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        """Perform one queue message. Safe to call again with the same message."""
        now = self.clock.now()
        if msg.due is not None and msg.due > now + 0.001:
            self.queue.send([msg])  # delivered early (a delay queue's cap): hop again
            return
        fn = self.app.get(msg.function_id)
        if msg.kind is MessageKind.START:
            self._start(fn, msg, now)
            return
        state = self.store.load(msg.run_id)
        if state is None:
            self.log.warning("message %s for unknown run %s dropped", msg.kind, msg.run_id)
            return
        if state.run.last_msg == msg.id:
            self._flush(state.run.outbox)  # the commit landed; its sends may not have
            return
        if state.run.status.finished:
            return
        if msg.kind is MessageKind.CONTINUE:
            if msg.version == state.run.version:
                self._invoke(fn, state, msg, now, target=None)
        elif msg.kind is MessageKind.BRANCH:
            rec = state.steps.get(msg.key or "")
            pending = (StepStatus.SCHEDULED, StepStatus.RETRYING)
            if rec is not None and rec.status in pending and rec.attempt == msg.attempt:
                self._invoke(fn, state, msg, now, target=rec.key)
        elif msg.kind is MessageKind.WAKE:
            self._wake(state, msg, now)
        elif msg.kind is MessageKind.RESOLVE:
            self._child_finished(state, msg)
        elif msg.kind is MessageKind.TIMEOUT:
            self._deadline(fn, state, msg, now)

    def _start(self, fn: FunctionDef, msg: Message, now: float) -> None:
        payload = msg.payload or {}
        events = tuple(payload["events"])
        direct = bool(payload.get("direct") or payload.get("parent"))
        if not direct and not self.starts(fn, events[0]):
            return  # filtered out (the trigger's `if`, or a system event about fn itself)
        parent = ParentRef(**payload["parent"]) if payload.get("parent") else None
        run = RunRecord(
            run_id=msg.run_id,
            function_id=fn.id,
            events=events,
            created_at=now,
            parent=parent,
            deadline=now + fn.finish_timeout.total_seconds() if fn.finish_timeout else None,
            last_msg=msg.id,
        )
        outbox: list[Outgoing] = []
        if run.deadline is not None:
            outbox.append(Message(MessageKind.TIMEOUT, fn.id, run.run_id, due=run.deadline))
        waiters = self._cancel_waiters(fn, run, now)
        late = (
            fn.start_timeout is not None
            and now - events[0]["ts"] / 1000 > fn.start_timeout.total_seconds()
        )
        if late:
            error = ErrorInfo("FunctionCancelled", f"not started within {fn.start_timeout}", False)
            run = replace(run, status=RunStatus.CANCELLED, error=error, ended_at=now)
            outbox = list(finish_outbox(run, RunStatus.CANCELLED, None, error, now))
            waiters = []
        run = replace(run, outbox=tuple(outbox))
        if self.store.create_run(run, waiters):
            self.log.info("run %s of %s started", run.run_id, fn.id)
            self._flush(run.outbox)
            if not late:
                self._invoke(fn, RunState(run, {}), msg, now, target=None)
            return
        state = self.store.load(msg.run_id)
        if state is None or state.run.last_msg != msg.id:
            return  # a duplicate delivery of a start long since past
        self._flush(state.run.outbox)
        if state.run.version == 0 and not state.run.status.finished:
            self._invoke(fn, state, msg, now, target=None)  # crashed before the first commit

    def _cancel_waiters(self, fn: FunctionDef, run: RunRecord, now: float) -> list[Waiter]:
        return [
            Waiter(
                event_name=spec.event,
                run_id=run.run_id,
                function_id=fn.id,
                key=f"cancel:{i}",
                kind=WaiterKind.CANCEL,
                expression=interpolate(spec.expression, {"event": run.events[0]})
                if spec.expression
                else "",
                expires_at=now + spec.timeout.total_seconds() if spec.timeout else None,
            )
            for i, spec in enumerate(fn.cancel_on)
        ]

    # -- one invocation --------------------------------------------------------------------

    def _invoke(
        self, fn: FunctionDef, state: RunState, msg: Message, now: float, target: str | None
    ) -> None:
        run = state.run
        if run.deadline is not None and now >= run.deadline and target is None:
            self.cancel(run.run_id, f"not finished within {fn.finish_timeout}")
            return
        logger = logging.LoggerAdapter(
            self.log, {"run_id": run.run_id, "function_id": fn.id, "step": target or ""}
        )
        decision = execute(fn, state, now=now, target=target, limits=self.limits, logger=logger)
        for _ in range(_COMMIT_TRIES):
            commit = commit_for(self.app, fn, state, msg, decision, now)
            if commit is None:
                return
            if self.store.commit(run.run_id, commit):
                self._flush(commit.outbox)
                return
            if target is None:
                return  # the main line moved on without us: this message was stale
            # A branch lost only a version race with a sibling: re-check and commit again.
            fresh = self.store.load(run.run_id)
            if fresh is None or fresh.run.status.finished:
                return
            rec, old = fresh.steps.get(target), state.steps.get(target)
            if rec is None or old is None or (rec.status, rec.attempt) != (old.status, old.attempt):
                return
            state = fresh

    # -- resolutions from outside the main line --------------------------------------------

    def _resolve_step(
        self,
        run_id: str,
        key: str,
        expect: StepStatus,
        *,
        output: Any = None,
        error: ErrorInfo | None = None,
        waiter: Waiter | None = None,
        msg_id: str | None = None,
    ) -> bool:
        """End a pending step (sleep, wait, invoke) and continue the run."""
        for _ in range(_COMMIT_TRIES):
            state = self.store.load(run_id)
            if state is None or state.run.status.finished:
                return False
            rec = state.steps.get(key)
            if rec is None or rec.status is not expect:
                return False
            now = self.clock.now()
            status = StepStatus.FAILED if error else StepStatus.COMPLETED
            new = replace(rec, status=status, output=output, error=error, ended_at=now)
            run = state.run
            remove: tuple[Waiter, ...] = ()
            if rec.kind is StepKind.WAIT:
                remove = (
                    waiter
                    or Waiter(rec.detail["event"], run_id, run.function_id, key, WaiterKind.STEP),
                )
            commit = Commit(
                msg_id=msg_id or f"resolve-{uuid.uuid4().hex}",
                expect_version=run.version,
                steps=(StepWrite(new, rec.status, rec.attempt),),
                remove_waiters=remove,
                outbox=(
                    Message(MessageKind.CONTINUE, run.function_id, run_id, version=run.version + 1),
                ),
            )
            if self.store.commit(run_id, commit):
                self.log.info("step %s of run %s %s", key, run_id, status.value)
                self._flush(commit.outbox)
                return True
        return False

    def _wake(self, state: RunState, msg: Message, now: float) -> None:
        rec = state.steps.get(msg.key or "")
        if rec is None or rec.wake_at is None:
            return
        if rec.wake_at > now + 0.001:
            self.queue.send([msg.with_due(rec.wake_at)])
            return
        if rec.status is StepStatus.SLEEPING or rec.status is StepStatus.WAITING:
            self._resolve_step(state.run.run_id, rec.key, rec.status, msg_id=msg.id)
        elif rec.status is StepStatus.INVOKING:
            error = ErrorInfo(
                "InvokeTimeoutError",
                f"invoked function '{rec.detail.get('function_id')}' did not finish in time",
                retriable=False,
            )
            self._resolve_step(state.run.run_id, rec.key, rec.status, error=error, msg_id=msg.id)

    def _child_finished(self, state: RunState, msg: Message) -> None:
        child_id = (msg.payload or {}).get("child_run_id", "")
        child = self.store.load(child_id)
        if child is None or not child.run.status.finished:
            return
        c = child.run
        if c.status is RunStatus.COMPLETED:
            self._resolve_step(
                state.run.run_id, msg.key or "", StepStatus.INVOKING, output=c.output, msg_id=msg.id
            )
        else:
            err = c.error or ErrorInfo("Error", "child run failed", False)
            error = ErrorInfo(
                err.name, f"invoked run {c.run_id} {c.status.value.lower()}: {err.message}", False
            )
            self._resolve_step(
                state.run.run_id, msg.key or "", StepStatus.INVOKING, error=error, msg_id=msg.id
            )

    def _deadline(self, fn: FunctionDef, state: RunState, msg: Message, now: float) -> None:
        deadline = state.run.deadline
        if deadline is None:
            return
        if now + 0.001 < deadline:
            self.queue.send([msg.with_due(deadline)])
            return
        self.cancel(state.run.run_id, f"not finished within {fn.finish_timeout}")

    # -- sending ---------------------------------------------------------------------------

    def _flush(self, outbox: Sequence[Outgoing]) -> None:
        messages = [o for o in outbox if isinstance(o, Message)]
        events = [o.event for o in outbox if isinstance(o, EventOut)]
        if events:
            self.bus.publish(events)
        if messages:
            self.queue.send(messages)
