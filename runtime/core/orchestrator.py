"""Shared run orchestration: messages and events in, engine decisions out as atomic commits.

Backends supply the I/O (:mod:`runtime.core.protocols`); this module holds every rule about
how a decision becomes state, so the local and AWS backends behave the same.

Idempotency rests on these rules (ARCHITECTURE.md explains each):
- every change is one :class:`~runtime.records.Commit` conditioned on the run's version and
  the touched step's prior state, so a duplicate or late message cannot apply twice;
- every commit is made by a queue message (events and API cancels enqueue MATCH and CANCEL
  messages rather than committing), so a crash anywhere is followed by a redelivery;
- only a CONTINUE carrying the run's current version may advance the main line;
- every commit keeps its own outbox in the commit log, under the id of its message;
- a message that finds its work already done does nothing, unless it is a *redelivery* (the
  queue's receive count is above one: its earlier delivery failed or crashed). A redelivery
  re-sends the outbox of its own commit, so a send lost to a crash is always repeated, and a
  duplicate copy (which made no commit) never multiplies.
- a commit that keeps losing races raises (:class:`CommitContentionError`): the message is
  redelivered instead of being dropped.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any

from runtime.app import App, FunctionDef
from runtime.core.commits import (
    MAX_WAITERS_PER_COMMIT,
    cancel_waiters,
    commit_for,
    finish_outbox,
    step_waiter,
    waiters_of,
)
from runtime.core.gates import FlowGates, Windows
from runtime.core.ids import new_run_id, run_id_for_event
from runtime.core.metrics import observe_commit, observe_created
from runtime.core.protocols import Bus, Clock, Metrics, NoMetrics, Queue, RunQuery, Store
from runtime.engine import Limits, execute
from runtime.engine.decisions import ScheduleBranches, StepSucceeded
from runtime.errors import GateMovedError, InvalidEventError, StepkitError
from runtime.events import (
    FUNCTION_INVOKED,
    SCHEDULED_TIMER,
    SYSTEM_PREFIX,
    Event,
    validate_events,
)
from runtime.expressions import Expression
from runtime.records import (
    Commit,
    ErrorInfo,
    EventOut,
    GateWrite,
    Message,
    MessageKind,
    Outgoing,
    ParentRef,
    RerunOf,
    RunPatch,
    RunRecord,
    RunState,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
    Waiter,
    WaiterKind,
    applied,
)

EVENT_DEDUP_SECONDS = 24 * 3600
#: How long events stay in the timeline that waits and cancel_on look back over.
LOOKBACK_SECONDS = 24 * 3600
_COMMIT_TRIES = 64
_LAST_SEND_TRIES = 8
_MATCH_IDS = uuid.UUID("5d7e0c1b-9a34-4c2e-b8f6-3e1a7d9c0b42")
_INLINE_EVENT_BYTES = 64 * 1024  # larger matched events travel as a timeline reference
_log = logging.getLogger("stepkit")


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Expression:
    return Expression.compile(source, where="waiter")


class CommitContentionError(StepkitError):
    """A commit lost the race for its run more times than it may retry in one delivery.

    Raised so that the message is redelivered (and retried later) instead of dropped.
    """


def _matches(expression: str, event: dict[str, Any]) -> bool:
    return not expression or _compiled(expression).matches_vars({"async": event})


def rerun_message(state: RunState, from_step: str | None, now: float) -> Message:
    """The START of a rerun of ``state``'s run (a fork from ``from_step``, if given).

    A rerun is asked for by hand: ``direct`` (its trigger's ``if`` is not applied again) and
    ``rerun`` (idempotency, rate limit and singleton let it by).

    Raises:
        LookupError: The run has no step ``from_step``.
    """
    if from_step is not None and from_step not in state.steps:
        raise LookupError(f"run '{state.run.run_id}' has no step '{from_step}' (has: "
                          f"{', '.join(sorted(state.steps)) or 'none'})")
    payload: dict[str, Any] = {"events": list(state.run.events), "direct": True,
                               "rerun": True,
                               "rerun_of": {"run_id": state.run.run_id, "step": from_step}}
    new_id = new_run_id(now)
    return Message(MessageKind.START, state.run.function_id, new_id, id=f"start-{new_id}",
                   payload=payload)


def invoke_message(function_id: str, data: Mapping[str, Any] | None, now: float) -> Message:
    """The START of a run started by hand: its event ``stepkit/function.invoked`` with ``data``.

    Raises:
        InvalidEventError: ``data`` is not a JSON object within the event limits.
    """
    new_id = new_run_id(now)
    [event] = validate_events(
        [{"id": new_id, "name": FUNCTION_INVOKED, "data": dict(data or {})}],
        now_ms=int(now * 1000), allow_system=True)
    return Message(MessageKind.START, function_id, new_id, id=f"start-{new_id}",
                   payload={"events": [event.to_json()], "direct": True, "rerun": True})


def _only_continue(outbox: Sequence[Outgoing], run_id: str) -> Message | None:
    """The outbox's one message if it is the run's next CONTINUE, due now; else ``None``."""
    if len(outbox) != 1:
        return None
    [only] = outbox
    if (isinstance(only, Message) and only.kind is MessageKind.CONTINUE
            and only.run_id == run_id and only.due is None and not (only.payload or {})):
        return only
    return None


def chained(last_msg: str | None, msg_id: str) -> bool:
    """Whether a checkpointed chain that ``msg_id`` began or went on with made ``last_msg``.

    A chain's CONTINUEs are ``<base>~v<version>``, ``<base>`` being the id of the message
    that began it; the CONTINUE for version N makes version N+1. So ``last_msg`` is the
    chain's work past ``msg_id`` when both share the base and ``last_msg`` is a chain
    CONTINUE for ``msg_id``'s version or a later one (a chain's own first message has none).
    """
    if last_msg is None or "~v" not in last_msg:
        return False
    base, _, version = last_msg.partition("~v")
    mine, _, own = msg_id.partition("~v")
    if base != mine:
        return False
    return not own or (version.isdigit() and own.isdigit() and int(version) >= int(own))


def _late(fn: FunctionDef, event: dict[str, Any], now: float) -> bool:
    """Whether a run of ``fn`` triggered by ``event`` is past its ``timeouts.start``."""
    limit = fn.start_timeout
    return limit is not None and now - event["ts"] / 1000 > limit.total_seconds()


def _event_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The event itself when small, else its timeline key (the worker reads it back)."""
    if len(json.dumps(event, separators=(",", ":"))) <= _INLINE_EVENT_BYTES:
        return {"event": event}
    return {"ref": {"name": event["name"], "ts": int(event["ts"]), "event_id": event["id"]}}


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
        metrics: Told of every run started and finished and every step ended or retried,
            once its commit landed; nothing by default.
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
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.queue = queue
        self.bus = bus
        self.clock = clock
        self.limits = limits
        self.log = logger or _log
        self.metrics: Metrics = metrics or NoMetrics()
        self.gates = FlowGates(self)
        self.windows = Windows(self, self._start_window)

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
        for i, e in enumerate(valid):
            self._check_typed(e, i if len(valid) > 1 else None)
        self.bus.publish([e.to_json() for e in valid])
        return [e.id for e in valid]

    def _check_typed(self, event: Event, index: int | None) -> None:
        """Validate ``event.data`` against every ``data=`` model declared for its name.

        Raises:
            InvalidEventError: It does not match one, naming the event, model and function.
        """
        where = "event" if index is None else f"event[{index}]"
        for fn in self.app:
            for f in fn.events:
                if f.model is None or f.event != event.name:
                    continue
                try:
                    f.model.model_validate(event.data)
                except ValueError as exc:
                    raise InvalidEventError(
                        f"{where}.data: '{event.name}' does not match {f.model.__name__} "
                        f"(declared by function '{fn.id}'): {exc}") from None

    def route_event(self, event: dict[str, Any], *, start_runs: bool = True) -> None:
        """Handle one published event: start triggered runs, hand matched waiters their work.

        Safe to repeat until it returns: the event is remembered (and later copies ignored)
        only after everything else is done, and everything before is idempotent (one run id
        per function and event id; one MATCH message id per event and waiter).

        Args:
            event: A validated event.
            start_runs: False where the platform delivers triggers itself (EventBridge rules).
        """
        now = self.clock.now()
        if self.store.event_seen(event["id"], now=now, ttl=EVENT_DEDUP_SECONDS):
            self.log.info("duplicate event %s ignored", event["id"])
            return
        # Logged before the waiters are read: a wait committed after that read finds the
        # event in the timeline (its lookback), one committed before is found by the read.
        self.store.log_event(event, now=now, ttl=LOOKBACK_SECONDS)
        if start_runs:
            self.queue.send([self.start_message(fn, event) for fn in self.triggered(event)])
        self.queue.send(self.match_messages(event))
        self.store.remember_event(event, now=now, ttl=EVENT_DEDUP_SECONDS)

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

    def match_messages(self, event: dict[str, Any]) -> list[Message]:
        """One MATCH (wait) or CANCEL (cancel_on) message per live waiter ``event`` matches."""
        now = self.clock.now()
        out = []
        for w in self.store.waiters_for(event):
            if w.expires_at is not None and w.expires_at < now:
                continue
            if _matches(w.expression, event):
                out.append(self._waiter_message(w.function_id, w.run_id, w.key, w.kind, event))
        return out

    @staticmethod
    def _waiter_message(
        function_id: str, run_id: str, key: str, kind: WaiterKind, event: dict[str, Any]
    ) -> Message:
        """The message an event matching a waiter sends (same id however often it is sent)."""
        mid = uuid.uuid5(_MATCH_IDS, f"{event['id']}/{run_id}/{key}").hex
        if kind is WaiterKind.CANCEL:
            reason = f"cancelled by event '{event['name']}' ({event['id']})"
            return Message(
                MessageKind.CANCEL, function_id, run_id, id=mid, payload={"reason": reason}
            )
        return Message(
            MessageKind.MATCH, function_id, run_id, id=mid, key=key, payload=_event_payload(event)
        )

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
        """Cancel a running run now; whether it was running.

        A CANCEL message is queued first and marked ``resend``, then the cancel is committed
        here under that message's id: if this process dies at any point, the queued message
        lands the cancel or re-sends what its commit had to send.
        """
        state = self.store.load(run_id)
        if state is None or state.run.status.finished:
            return False
        msg = Message(
            MessageKind.CANCEL,
            state.run.function_id,
            run_id,
            payload={"reason": reason, "resend": True},
        )
        if state.run.function_id in self.app.functions:  # a removed function has no queue
            self.queue.send([msg])
        try:
            self._cancel(run_id, reason, msg.id)
        except CommitContentionError:
            self.log.warning("run %s: cancel left to its queued message", run_id)
        return True

    def _cancel(self, run_id: str, reason: str, msg_id: str) -> bool:
        """Commit the cancellation of a running run; whether this call cancelled it."""
        error = ErrorInfo("FunctionCancelled", reason, retriable=False)
        return self._finish(run_id, RunStatus.CANCELLED, error, msg_id)

    def _finish(
        self,
        run_id: str,
        status: RunStatus,
        error: ErrorInfo,
        msg_id: str,
        flush: Callable[[Sequence[Outgoing]], None] | None = None,
    ) -> bool:
        """Cancel or fail a running run from outside its handler; whether this call did."""
        for _ in range(_COMMIT_TRIES):
            state = self.store.load(run_id)
            if state is None or state.run.status.finished:
                return False
            # The run's function may be gone from the code (a deploy removed it): still
            # cancellable, with only the waiters its steps show.
            fn = self.app.functions.get(state.run.function_id)
            now = self.clock.now()
            remove = waiters_of(fn, state)
            commit = Commit(
                msg_id=msg_id,
                expect_version=state.run.version,
                run=RunPatch(status=status, error=error, ended_at=now),
                remove_waiters=remove[:MAX_WAITERS_PER_COMMIT],
                outbox=finish_outbox(state.run, status, None, error, now),
            )
            if self._commit(state.run.function_id, run_id, commit):
                self.log.info("run %s %s: %s", run_id, status.value.lower(), error.message)
                (flush or self._flush)(commit.outbox)
                # Waiters past one transaction's worth are removed afterwards; until then a
                # match finds the run finished and does nothing.
                self.store.remove_waiters(remove[MAX_WAITERS_PER_COMMIT:])
                return True
        raise CommitContentionError(f"finishing run {run_id}: lost {_COMMIT_TRIES} races")

    def _give_up_hard(
        self, fn: FunctionDef, msg: Message, receive_count: int, cause: Exception | None = None
    ) -> None:
        """:meth:`_give_up`, retried in place (it is idempotent): no delivery is left after."""
        self._in_place(lambda: self._give_up(fn, msg, receive_count, cause),
                       f"failing run {msg.run_id}")

    def _in_place(self, action: Callable[[], object], what: str) -> None:
        """Run an idempotent ``action``, retrying here: on a last delivery none follows."""
        for attempt in range(_LAST_SEND_TRIES):
            try:
                action()
                return
            except Exception:
                if attempt == _LAST_SEND_TRIES - 1:
                    raise
                self.log.warning("%s failed; trying again", what)

    def _give_up(
        self, fn: FunctionDef, msg: Message, receive_count: int, cause: Exception | None = None
    ) -> None:
        """The last delivery of a message that cannot be done: fail the run instead.

        Every earlier delivery ended without a result: the worker was killed (Lambda timeout,
        out of memory) or the platform kept failing (``cause``: what the last try raised).
        Running it again would only land it in the dead-letter queue and leave the run
        Running for ever.
        """
        where = f"step '{msg.key}'" if msg.key else "the handler"
        if cause is None:
            error = ErrorInfo(
                "WorkerLostError",
                f"{where} was delivered {receive_count} times without finishing: the worker "
                "was killed (timeout or out of memory) or kept failing; the run is failed "
                "rather than retried for ever",
                retriable=False,
            )
        else:
            error = ErrorInfo(
                "DeliveryFailedError",
                f"the {msg.kind.value} message for {where} failed on all {receive_count} "
                f"deliveries; last error: {type(cause).__name__}: {cause}"[:8192],
                retriable=False,
            )
        if msg.kind is MessageKind.START and self.store.load(msg.run_id) is None:
            now = self.clock.now()
            events = tuple((msg.payload or {})["events"])
            parent = (msg.payload or {}).get("parent")
            run = RunRecord(
                run_id=msg.run_id, function_id=fn.id, events=events, created_at=now,
                parent=ParentRef(**parent) if parent else None, status=RunStatus.FAILED,
                error=error, ended_at=now, last_msg=msg.id,
            )
            run = replace(run, outbox=finish_outbox(run, RunStatus.FAILED, None, error, now))
            if self._create(run, []) is not None:
                self._flush_hard(run.outbox)
            return
        self._finish(msg.run_id, RunStatus.FAILED, error, msg.id, flush=self._flush_hard)

    def _commit(self, function_id: str, run_id: str, commit: Commit) -> bool:
        """``Store.commit``, reporting to the metrics what a commit that landed did."""
        if not self.store.commit(run_id, commit):
            return False
        observe_commit(self.metrics, function_id, commit)
        return True

    def _create(self, run: RunRecord, waiters: Sequence[Waiter],
                steps: Sequence[StepRecord] = ()) -> RunRecord | None:
        """``Store.create_run``, reporting a run this call created; the run, if it did."""
        if not self.store.create_run(run, waiters, (), steps):
            return None
        observe_created(self.metrics, run)
        return run

    def _create_gated(
        self, fn: FunctionDef, run: RunRecord, waiters: Sequence[Waiter]
    ) -> RunRecord | None:
        """Create ``run`` through ``fn``'s flow control (it may be skipped or held)."""
        created = self.gates.create(fn, run, waiters)
        if created is not None:
            observe_created(self.metrics, created)
        return created

    def _started(self, run: RunRecord) -> None:
        """Log a run just created: started, held back, skipped or cancelled late."""
        if run.status is RunStatus.SKIPPED and run.error is not None:
            self.log.info("run %s of %s skipped: %s", run.run_id, run.function_id,
                          run.error.message)
        elif run.held_by is not None and run.held_until is not None:
            self.log.info("run %s of %s created, held by %s for %.1fs", run.run_id,
                          run.function_id, run.held_by, run.held_until - run.created_at)
        else:
            self.log.info("run %s of %s started", run.run_id, run.function_id)

    def _flush_hard(self, outbox: Sequence[Outgoing]) -> None:
        """Send, retrying in place: on a message's last delivery there is no redelivery."""
        self._in_place(lambda: self._flush(outbox), "sending an outbox")

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Start a new run of the same function with the same events; return its id.

        With ``from_step`` it is a fork (DBOS's word): the new run starts with the results
        the original recorded before that step (completed or failed for good, started
        before it), so its replay returns them, and it performs ``from_step`` and what
        follows again.

        Raises:
            LookupError: No such run, or no such step in it.
        """
        state = self.store.load(run_id)
        if state is None:
            raise LookupError(f"no run '{run_id}'")
        msg = rerun_message(state, from_step, self.clock.now())
        self.queue.send([msg])
        return msg.run_id

    def _forked_steps(self, fork: RerunOf) -> dict[str, StepRecord]:
        """The records a fork starts with: the original's, recorded before the fork step."""
        original = self.store.load(fork.run_id)
        if original is None:  # kept at least as long as the fork's START: a retention race
            return {}
        target = original.steps.get(str(fork.step))
        if target is None:
            return {}
        # Before it: started earlier, or at the same instant but recorded earlier (stores
        # keep records in the order they were first written; a fake clock stands still).
        order = {key: i for i, key in enumerate(original.steps)}

        def rank(rec: StepRecord) -> tuple[float, int]:
            return (rec.started_at or 0.0, order[rec.key])

        return {rec.key: rec for rec in original.steps.values()
                if rec.status.final and rank(rec) < rank(target)}

    def fire_cron_now(self, function_id: str) -> str:
        """Fire a function's cron trigger now, by hand; the run's id.

        The run is the one a scheduled fire at this instant would start (same event shape,
        ``stepkit/scheduled.timer``, and derived id), so firing twice in the same millisecond
        starts one run.

        Raises:
            FunctionNotFoundError: No such function.
            ValueError: It has no cron trigger.
        """
        fn = self.app.get(function_id)
        if not fn.crons:
            raise ValueError(f"function '{fn.id}' has no cron trigger to fire")
        msg = self.cron_message(fn, fn.crons[0].spec, self.clock.now())
        self.queue.send([msg])
        return msg.run_id

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now (the dev server's "skip"); whether there was one to end.

        Queued as a WAKE marked ``skip`` under an id derived from the step, so it is applied
        by a worker with every guarantee a wake has, and asking twice wakes it once.

        Raises:
            LookupError: No such run.
        """
        state = self.store.load(run_id)
        if state is None:
            raise LookupError(f"no run '{run_id}'")
        rec = state.steps.get(key)
        if state.run.status.finished or rec is None or rec.status is not StepStatus.SLEEPING:
            return False
        self.queue.send([Message(MessageKind.WAKE, state.run.function_id, run_id,
                                 id=f"skip-{run_id}-{key}", key=key,
                                 payload={"skip": True})])
        return True

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run of a function by hand, with ``data``; return its id.

        The run's event is ``stepkit/function.invoked`` (as a ``step.invoke`` child's), so the
        function's triggers and their ``if`` do not apply; flow control's start rules are let
        by, as for a rerun.

        Raises:
            FunctionNotFoundError: No such function.
            InvalidEventError: ``data`` is not a JSON object within the event limits.
        """
        msg = invoke_message(self.app.get(function_id).id, data, self.clock.now())
        self.queue.send([msg])
        return msg.run_id

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs, newest first."""
        return self.store.list_runs(query)

    # -- queue messages --------------------------------------------------------------------

    def handle(
        self, msg: Message, *, receive_count: int = 1, max_receives: int | None = None
    ) -> None:
        """Perform one queue message. Safe to call again with the same message.

        Args:
            msg: The message.
            receive_count: Which delivery of this queue entry this is (SQS's
                ``ApproximateReceiveCount``). Above one, the earlier delivery failed or
                crashed, possibly after its commit: work already done is re-sent, not redone.
            max_receives: The queue's deliveries before dead-lettering. On the last one, a
                message that would run user code fails its run instead (see ``_give_up``).
        """
        now = self.clock.now()
        if msg.due is not None and msg.due > now + 0.001:
            self.queue.send([msg])  # delivered early (a delay queue's cap): hop again
            return
        fn = self.app.get(msg.function_id)
        redelivered = receive_count > 1 or bool((msg.payload or {}).get("resend"))
        # The last two deliveries before the dead-letter queue: the first of them gives up,
        # the second is there in case giving up itself failed.
        last = max_receives is not None and receive_count >= max(max_receives - 1, 2)
        if last and msg.kind is not MessageKind.START:
            self._last_delivery(fn, msg, receive_count)
            return
        if msg.kind is MessageKind.FLUSH:
            if self.windows.due(fn, msg, redelivered) and redelivered:
                self._resume(fn, msg.run_id, f"flush-{msg.run_id}", now, last)
            return
        if msg.kind is MessageKind.START:
            if last:
                state = self.store.load(msg.run_id)
                if state is None or (state.run.version == 0 and not state.run.status.finished):
                    self._give_up_hard(fn, msg, receive_count)
                    return
            self._start(fn, msg, now, redelivered, last)
            return
        state = self.store.load(msg.run_id)
        if state is None:
            self.log.warning("message %s for unknown run %s dropped", msg.kind, msg.run_id)
            return
        mine = state.run.last_msg == msg.id or chained(state.run.last_msg, msg.id)
        if redelivered and (mine or self.store.committed(msg.run_id, msg.id) is not None):
            self._resend(fn, msg, state, hard=last)  # a message commits once: re-send it
            return
        if mine or state.run.status.finished:
            return
        self._perform(fn, state, msg, now, redelivered)

    def _last_delivery(self, fn: FunctionDef, msg: Message, receive_count: int) -> None:
        """The last deliveries of a message before the dead-letter queue: never strand the run.

        A message that would run user code fails its run (:meth:`_give_up`): every earlier
        delivery ended without a result. Any other message (a wake, match, resolve, cancel,
        timeout) is handled as a redelivery, retried here; if it still cannot be done, its
        run is failed with the reason rather than left waiting for work that is gone.
        """
        state = self.store.load(msg.run_id)
        if state is None:
            return
        if (state.run.last_msg == msg.id or chained(state.run.last_msg, msg.id)
                or self.store.committed(msg.run_id, msg.id) is not None):
            # Its commit landed (perhaps failing the run on an earlier last delivery) and a
            # crash lost the sends: send them, as on any redelivery.
            self._resend(fn, msg, state, hard=True)
            return
        if state.run.status.finished:
            return
        if self._runs_code(state, msg):
            self._give_up_hard(fn, msg, receive_count)
            return
        try:
            self._in_place(lambda: self.handle(msg, receive_count=receive_count),
                           f"{msg.kind.value} message {msg.id} of run {msg.run_id}")
        except Exception as exc:
            self.log.exception("giving up on %s message %s", msg.kind.value, msg.id)
            self._give_up_hard(fn, msg, receive_count, cause=exc)

    @staticmethod
    def _runs_code(state: RunState, msg: Message) -> bool:
        """Whether ``msg`` would run the handler or a step now.

        That is a CONTINUE at the current version, or a BRANCH whose step still waits for
        this attempt.
        """
        if msg.kind is MessageKind.CONTINUE:
            return msg.version == state.run.version and not (msg.payload or {}).get("slice")
        if msg.kind is MessageKind.BRANCH:
            rec = state.steps.get(msg.key or "")
            pending = (StepStatus.SCHEDULED, StepStatus.RETRYING)
            return rec is not None and rec.status in pending and rec.attempt == msg.attempt
        return False

    def _perform(
        self, fn: FunctionDef, state: RunState, msg: Message, now: float, redelivered: bool = False
    ) -> bool:
        """Do the message's work if it is still due; whether it was."""
        if msg.kind is MessageKind.CONTINUE:
            if (msg.payload or {}).get("slice"):
                return self._next_slice(fn, state, msg, now)
            if msg.version != state.run.version:
                return False
            return self._invoke(fn, state, msg, now, target=None, redelivered=redelivered)
        if msg.kind is MessageKind.BRANCH:
            rec = state.steps.get(msg.key or "")
            pending = (StepStatus.SCHEDULED, StepStatus.RETRYING)
            if rec is None or rec.status not in pending or rec.attempt != msg.attempt:
                return False
            return self._invoke(fn, state, msg, now, target=rec.key, redelivered=redelivered)
        if msg.kind is MessageKind.WAKE:
            return self._wake(state, msg, now)
        if msg.kind is MessageKind.RESOLVE:
            return self._child_finished(state, msg)
        if msg.kind is MessageKind.TIMEOUT:
            return self._deadline(fn, state, msg, now)
        if msg.kind is MessageKind.MATCH:
            return self._match(state, msg)
        if msg.kind is MessageKind.CANCEL:
            reason = str((msg.payload or {}).get("reason") or "cancelled")
            return self._cancel(state.run.run_id, reason, msg.id)
        raise AssertionError(f"unhandled message kind {msg.kind}")

    def _start(
        self, fn: FunctionDef, msg: Message, now: float, redelivered: bool, last: bool = False
    ) -> None:
        payload = msg.payload or {}
        events = tuple(payload["events"])
        direct = bool(payload.get("direct") or payload.get("parent"))
        if not direct and not self.starts(fn, events[0]):
            return  # filtered out (the trigger's `if`, or a system event about fn itself)
        if not direct and fn.flow.window is not None and self.windows.gathers(fn, events[0]):
            resume = self.windows.fold(fn, events[0], redelivered)
            if resume is not None:  # our earlier delivery closed the window, then crashed
                self._resume(fn, resume, f"flush-{resume}", now, last)
            return
        parent = ParentRef(**payload["parent"]) if payload.get("parent") else None
        # ("fork": a START queued before reruns recorded their original)
        origin = payload.get("rerun_of") or payload.get("fork")
        rerun_of = RerunOf(str(origin["run_id"]), origin.get("step")) if origin else None
        run, waiters = self._new_run(fn, msg.run_id, events, msg.id, now, parent, rerun_of)
        outbox = list(run.outbox)
        late = _late(fn, events[0], now)
        if late:
            error = ErrorInfo("FunctionCancelled", f"not started within {fn.start_timeout}", False)
            run = replace(run, status=RunStatus.CANCELLED, error=error, ended_at=now)
            outbox = list(finish_outbox(run, RunStatus.CANCELLED, None, error, now))
            waiters = []
        run = replace(run, outbox=tuple(outbox))
        gated = not late and not payload.get("rerun")
        seed = self._forked_steps(rerun_of) if rerun_of and rerun_of.step else {}
        created = (self._create_gated(fn, run, waiters) if gated
                   else self._create(run, waiters, list(seed.values())))
        if created is not None:
            self._begin(fn, created, msg, now, seed)
            return
        # The run exists. A first delivery is a copy (a re-sent event, a duplicated message):
        # its run is someone else's work. A redelivery may be our own start that crashed.
        if redelivered:
            self._resume(fn, msg.run_id, msg.id, now, last)

    def _new_run(
        self,
        fn: FunctionDef,
        run_id: str,
        events: tuple[dict[str, Any], ...],
        msg_id: str,
        now: float,
        parent: ParentRef | None = None,
        rerun_of: RerunOf | None = None,
    ) -> tuple[RunRecord, list[Waiter]]:
        """A new run record (with its finish timer in its outbox) and its cancel waiters."""
        run = RunRecord(
            run_id=run_id,
            function_id=fn.id,
            events=events,
            created_at=now,
            parent=parent,
            rerun_of=rerun_of,
            deadline=now + fn.finish_timeout.total_seconds() if fn.finish_timeout else None,
            last_msg=msg_id,
        )
        if run.deadline is not None:
            timer = Message(MessageKind.TIMEOUT, fn.id, run.run_id, due=run.deadline)
            run = replace(run, outbox=(timer,))
        return run, cancel_waiters(fn, run, now)

    def _begin(self, fn: FunctionDef, created: RunRecord, msg: Message, now: float,
               steps: Mapping[str, StepRecord] | None = None) -> None:
        """A run just created: send its outbox, look back for cancels, run its first step."""
        self._started(created)
        self._flush(created.outbox)
        if not created.status.finished:
            state = RunState(created, dict(steps or {}))
            self._flush(self._cancel_lookback(fn, state))
            if created.held_by is None:
                self._invoke(fn, state, msg, now, target=None)

    def _resume(self, fn: FunctionDef, run_id: str, msg_id: str, now: float, last: bool) -> None:
        """A redelivered start of a run that exists: finish what a crash may have cut short.

        Before its first commit, send its outbox and run its first step again; after, re-send
        what the start's own commit had to send.
        """
        state = self.store.load(run_id)
        if state is None:
            return
        msg = Message(MessageKind.START, fn.id, run_id, id=msg_id)
        if state.run.version == 0 and not state.run.status.finished:
            self._flush(state.run.outbox)
            self._flush(self._cancel_lookback(fn, state))
            if state.run.held_by is None:  # a held run's first message does the rest
                # crashed before the first commit
                self._invoke(fn, state, msg, now, target=None, redelivered=True)
        else:
            self._resend(fn, msg, hard=last)

    def _start_window(
        self, fn: FunctionDef, run_id: str, events: Sequence[dict[str, Any]], clear: GateWrite
    ) -> None:
        """Create and begin the run of a debounce or batch window, closing it atomically.

        Raises:
            GateMovedError: The window changed since it was read (nothing was written).
        """
        now = self.clock.now()
        msg_id = f"flush-{run_id}"
        run, waiters = self._new_run(fn, run_id, tuple(events), msg_id, now)
        if not self.store.create_run(run, waiters, [clear]):
            # Someone else closed this window (its run and the gate write landed together):
            # read the window again.
            raise GateMovedError(f"window of run {run_id} already closed")
        observe_created(self.metrics, run)
        self._begin(fn, run, Message(MessageKind.FLUSH, fn.id, run_id, id=msg_id), now)

    # -- redelivery: re-send what this message's own commit had to send -----------------

    def _resend(
        self, fn: FunctionDef, msg: Message, state: RunState | None = None, *, hard: bool = False
    ) -> None:
        """A redelivered message whose work is done: re-send what its commit had to send.

        The commit log keeps every commit's outbox under the id of the message that made it,
        so this is exact whatever commits came after (a sibling branch's, a resolve's), and
        a copy that made no commit re-sends nothing: duplicates never multiply.
        """
        state = state or self.store.load(msg.run_id)
        if state is None:
            return
        out: list[Outgoing] = []
        # A checkpointed chain this message began (or went on with) committed the run's last
        # change: what is left to send is that commit's outbox, not its first one's.
        last = state.run.last_msg
        done = self.store.committed(msg.run_id, last if last and chained(last, msg.id)
                                    else msg.id)
        if done is not None:
            out.extend(done.outbox)
            for key in done.step_keys:  # a wait it committed may have missed its event
                rec = state.steps.get(key)
                if rec is not None and rec.status is StepStatus.WAITING:
                    out.extend(self._wait_lookback(state, rec))
        elif state.run.last_msg == msg.id:  # a start whose run was created, nothing more
            out.extend(state.run.outbox)
        if msg.kind is MessageKind.START and not state.run.status.finished:
            out.extend(self._cancel_lookback(fn, state))
        if out:
            self.log.info("run %s: redelivered %s re-sends %d", msg.run_id, msg.kind, len(out))
            (self._flush_hard if hard else self._flush)(out)

    # -- lookback: events that arrived before their waiter ---------------------------------

    def _wait_lookback(self, state: RunState, rec: StepRecord) -> list[Message]:
        """MATCH messages for timeline events a just-committed wait may have missed.

        Events the run was started by, or that resolved another of its waits, are not
        candidates: one event resolves a given run's wait once.
        """
        since = rec.detail.get("since")
        if since is None:
            return []
        run = state.run
        own = {e["id"] for e in run.events}
        own |= {
            r.output["id"]
            for r in state.steps.values()
            if r.kind is StepKind.WAIT and isinstance(r.output, dict) and "id" in r.output
        }
        now = self.clock.now()
        for event in self.store.events_since(rec.detail["event"], int(since), now=now):
            if event["id"] not in own and _matches(rec.detail.get("expression", ""), event):
                return [self._waiter_message(run.function_id, run.run_id, rec.key,
                                             WaiterKind.STEP, event)]
        return []

    def _cancel_lookback(self, fn: FunctionDef, state: RunState) -> list[Message]:
        """A CANCEL message if a cancel_on event arrived since the run's trigger was sent."""
        run = state.run
        if not fn.cancel_on:
            return []
        own = {e["id"] for e in run.events}
        since = int(run.events[0].get("ts") or 0)
        now = self.clock.now()
        for i, w in enumerate(cancel_waiters(fn, run, run.created_at)):
            if w.expires_at is not None and w.expires_at < now:
                continue
            for event in self.store.events_since(w.event_name, since, now=now):
                if event["id"] not in own and _matches(w.expression, event):
                    return [self._waiter_message(fn.id, run.run_id, f"cancel:{i}",
                                                 WaiterKind.CANCEL, event)]
        return []

    # -- one invocation --------------------------------------------------------------------

    def _invoke(
        self,
        fn: FunctionDef,
        state: RunState,
        msg: Message,
        now: float,
        target: str | None,
        *,
        redelivered: bool = False,
    ) -> bool:
        """Replay the handler and commit its decision; whether a commit landed.

        With concurrency limits, the handler runs holding a slot per limit; without a free
        slot the message waits in line (re-sent to come back later) and nothing runs.

        Raises:
            CommitContentionError: A branch kept losing version races to its siblings.
        """
        run = state.run
        if run.deadline is not None and now >= run.deadline and target is None:
            return self._cancel(run.run_id, f"not finished within {fn.finish_timeout}", msg.id)
        if run.held_by is not None and run.version == 0 and _late(fn, run.events[0], now):
            return self._cancel(run.run_id, f"not started within {fn.start_timeout}", msg.id)
        slots = self.gates.take_slots(fn, state, msg, target, redelivered=redelivered)
        if slots is None:
            return False  # queued behind the concurrency limit; msg comes back
        try:
            return self._run_code(fn, state, msg, now, target)
        finally:
            self.gates.release(slots)

    def _run_code(
        self, fn: FunctionDef, state: RunState, msg: Message, now: float, target: str | None
    ) -> bool:
        """Replay the handler (holding any concurrency slots) and commit its decision."""
        if target is None:
            return self._main_line(fn, state, msg, now)
        run = state.run
        logger = logging.LoggerAdapter(
            self.log, {"run_id": run.run_id, "function_id": fn.id, "step": target or ""}
        )
        decision = execute(fn, state, now=now, target=target, limits=self.limits, logger=logger)
        for _ in range(_COMMIT_TRIES):
            commit = commit_for(self.app, fn, state, msg, decision, now)
            if commit is None:
                return False
            if self._commit(fn.id, run.run_id, commit):
                self._flush(commit.outbox)
                self._after_commit(state, commit)
                return True
            # A branch lost only a version race with a sibling: re-check and commit again.
            fresh = self.store.load(run.run_id)
            if fresh is None or fresh.run.status.finished:
                return False
            rec, old = fresh.steps.get(target), state.steps.get(target)
            if rec is None or old is None or (rec.status, rec.attempt) != (old.status, old.attempt):
                return False
            state = fresh
        raise CommitContentionError(
            f"run {run.run_id}: branch '{target}' lost {_COMMIT_TRIES} commit races in a row"
        )

    def _main_line(self, fn: FunctionDef, state: RunState, msg: Message, now: float) -> bool:
        """Replay the main line and commit its decision; whether a commit landed.

        A commit refused means the main line moved on without us: the message was stale.
        With ``checkpointing``, a step's commit whose only work left is the run's next
        CONTINUE does not send it: this invocation replays on as if it had received it (the
        state it just committed is the run's, since its commit took that version), until a
        decision that needs the queue (a sleep, a wait, branches, a retry's delay, the end),
        the function's ``max_runtime``, or a lost race (a cancel, a timeout); then the last
        commit's outbox is sent. Each CONTINUE of the chain has the id
        ``<first message id>~v<version>``, and its commit records that id, so a redelivery of
        any message of the chain finds the run's last commit among its own
        (:func:`chained`) and re-sends that commit's outbox: a crash anywhere in the chain
        loses no recorded step and strands no run.
        """
        run_id, base = state.run.run_id, msg.id.partition("~v")[0]
        logger = logging.LoggerAdapter(self.log, {"run_id": run_id, "function_id": fn.id,
                                                  "step": ""})
        chain = fn.checkpoint is not None
        stop_at = time.monotonic() + (fn.checkpoint.total_seconds() if fn.checkpoint else 0)
        last: Commit | None = None  # the last commit that landed, while its sends are due
        landed = False
        while True:
            decision = execute(fn, state, now=now, target=None, limits=self.limits,
                               logger=logger)
            commit = commit_for(self.app, fn, state, msg, decision, now)
            if commit is None:
                break
            if chain:
                commit = replace(commit, outbox=tuple(
                    replace(o, id=f"{base}~v{o.version}")
                    if isinstance(o, Message) and o.kind is MessageKind.CONTINUE
                    and o.run_id == run_id and o.version is not None else o
                    for o in commit.outbox))
            if not self._commit(fn.id, run_id, commit):
                break  # the run moved on without us (stale, or a cancel mid-chain): stop here
            landed = True
            nxt = _only_continue(commit.outbox, run_id)
            now = self.clock.now()
            if (not chain or nxt is None or not isinstance(decision, StepSucceeded)
                    or time.monotonic() >= stop_at
                    or (state.run.deadline is not None and now >= state.run.deadline)):
                # Its sends first, as soon as the commit landed: what follows (the lookback
                # of a wait) may fail, and the run must not wait for a redelivery to go on.
                self._flush(commit.outbox)
                self._after_commit(state, commit)
                last = None
                break
            self._after_commit(state, commit)
            last = commit
            state = applied(state, commit)
            self.store.persist()  # recorded for good before the next step's side effects
            msg = nxt  # performed here rather than sent
        if last is not None:
            # A chain cut short by a refused or empty commit: the last landed commit's sends
            # (its CONTINUE: stale, and dropped, if the run moved on without us).
            self._flush(last.outbox)
        return landed

    def _next_slice(self, fn: FunctionDef, state: RunState, msg: Message, now: float) -> bool:
        """Schedule the next slice of a wide parallel group, at the run's current version.

        Only a ScheduleBranches decision is committed: anything else is the main line's own
        work, done by its CONTINUE.

        Unlike other messages, a slice message is not tied to a version or a step, so nothing
        in the run stops a copy of it from scheduling the slice after the one it already
        scheduled. A message commits once (a redelivery re-sends *its* commit's outbox), so
        each try first asks whether this message id has a commit: if so, this is a copy
        and the slice is someone's work already (its sends, if a crash lost them, come with
        that delivery's redelivery).

        Raises:
            CommitContentionError: The group's branches kept moving the version on.
        """
        for _ in range(_COMMIT_TRIES):
            if self.store.committed(state.run.run_id, msg.id) is not None:
                return False
            decision = execute(fn, state, now=now, target=None, limits=self.limits)
            if not isinstance(decision, ScheduleBranches):
                return False
            commit = commit_for(self.app, fn, state, msg, decision, now)
            if commit is not None and self._commit(fn.id, state.run.run_id, commit):
                self._flush(commit.outbox)
                return True
            fresh = self.store.load(state.run.run_id)
            if fresh is None or fresh.run.status.finished:
                return False
            state = fresh
        raise CommitContentionError(
            f"run {state.run.run_id}: scheduling the next slice lost {_COMMIT_TRIES} races"
        )

    def _after_commit(self, state: RunState, commit: Commit) -> None:
        """Look back for events a wait just committed may have missed (sent before it).

        And a run that finished with more waiters than its commit could remove loses the rest
        now (until then they match a finished run, which does nothing).
        """
        if commit.run is not None and commit.run.status is not None:
            fn = self.app.functions.get(state.run.function_id)
            self.store.remove_waiters(waiters_of(fn, state)[MAX_WAITERS_PER_COMMIT:])
        for w in commit.steps:
            if w.record.status is StepStatus.WAITING and w.expect_status is not StepStatus.WAITING:
                self._flush(self._wait_lookback(state, w.record))

    # -- resolutions from outside the main line --------------------------------------------

    def _resolve_step(
        self,
        run_id: str,
        key: str,
        expect: StepStatus,
        *,
        msg_id: str,
        output: Any = None,
        error: ErrorInfo | None = None,
    ) -> bool:
        """End a pending step (sleep, wait, invoke) and continue the run.

        Raises:
            CommitContentionError: The run kept changing under us.
        """
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
                remove = (step_waiter(run, rec),)
            commit = Commit(
                msg_id=msg_id,
                expect_version=run.version,
                steps=(StepWrite(new, rec.status, rec.attempt),),
                remove_waiters=remove,
                outbox=(
                    Message(MessageKind.CONTINUE, run.function_id, run_id, version=run.version + 1),
                ),
            )
            if self._commit(run.function_id, run_id, commit):
                self.log.info("step %s of run %s %s", key, run_id, status.value)
                self._flush(commit.outbox)
                return True
        raise CommitContentionError(f"run {run_id}: resolving '{key}' lost {_COMMIT_TRIES} races")

    def _match(self, state: RunState, msg: Message) -> bool:
        payload = msg.payload or {}
        rec = state.steps.get(msg.key or "")
        if rec is None or rec.status is not StepStatus.WAITING:
            return False
        event = payload.get("event")
        if event is None and payload.get("ref"):
            event = self.store.logged_event(**payload["ref"])
        if event is None:
            self.log.warning("run %s: matched event of %s no longer kept", msg.run_id, msg.key)
            return False
        return self._resolve_step(
            state.run.run_id, rec.key, StepStatus.WAITING, output=event, msg_id=msg.id
        )

    def _wake(self, state: RunState, msg: Message, now: float) -> bool:
        rec = state.steps.get(msg.key or "")
        if rec is None or rec.wake_at is None:
            return False
        skip = bool((msg.payload or {}).get("skip")) and rec.status is StepStatus.SLEEPING
        if rec.wake_at > now + 0.001 and not skip:
            self.queue.send([msg.with_due(rec.wake_at)])
            return True
        if rec.status is StepStatus.SLEEPING or rec.status is StepStatus.WAITING:
            return self._resolve_step(state.run.run_id, rec.key, rec.status, msg_id=msg.id)
        if rec.status is StepStatus.INVOKING:
            error = ErrorInfo(
                "InvokeTimeoutError",
                f"invoked function '{rec.detail.get('function_id')}' did not finish in time",
                retriable=False,
            )
            return self._resolve_step(
                state.run.run_id, rec.key, rec.status, error=error, msg_id=msg.id
            )
        return False

    def _child_finished(self, state: RunState, msg: Message) -> bool:
        child_id = (msg.payload or {}).get("child_run_id", "")
        child = self.store.load(child_id)
        if child is None or not child.run.status.finished:
            return False
        c = child.run
        if c.status is RunStatus.COMPLETED:
            return self._resolve_step(
                state.run.run_id, msg.key or "", StepStatus.INVOKING, output=c.output, msg_id=msg.id
            )
        err = c.error or ErrorInfo("Error", "child run failed", False)
        error = ErrorInfo(
            err.name, f"invoked run {c.run_id} {c.status.value.lower()}: {err.message}", False
        )
        return self._resolve_step(
            state.run.run_id, msg.key or "", StepStatus.INVOKING, error=error, msg_id=msg.id
        )

    def _deadline(self, fn: FunctionDef, state: RunState, msg: Message, now: float) -> bool:
        deadline = state.run.deadline
        if deadline is None:
            return False
        if now + 0.001 < deadline:
            self.queue.send([msg.with_due(deadline)])
            return True
        return self._cancel(state.run.run_id, f"not finished within {fn.finish_timeout}", msg.id)

    # -- sending ---------------------------------------------------------------------------

    def _flush(self, outbox: Sequence[Outgoing]) -> None:
        messages = [o for o in outbox if isinstance(o, Message)]
        events = [o.event for o in outbox if isinstance(o, EventOut)]
        if events:
            self.bus.publish(events)
        if messages:
            self.queue.send(messages)
