"""Manual control of runs: cancel, rerun (or fork), start by hand, fire a cron, skip a sleep.

Each is a queued message with every guarantee a message has (a rerun's START, a skip's
WAKE), except cancel, which is also committed at once (its queued copy lands it, or re-sends
what its commit had to send, if this process dies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.app import FunctionDef
from runtime.errors import FunctionRetiredError
from runtime.events import FUNCTION_INVOKED, validate_events
from runtime.messages import CancelPayload, StartPayload, skip_message
from runtime.orchestration.finishing import Finisher
from runtime.orchestration.ids import new_run_id
from runtime.orchestration.intake import cron_message
from runtime.orchestration.ports import CommitContentionError, Ports
from runtime.orchestration.protocols import RunQuery
from runtime.records import Message, MessageKind, RerunOf, RunRecord, RunState, StepStatus


def rerun_message(state: RunState, from_step: str | None, now: float,
                  run_id: str | None = None) -> Message:
    """The START of a rerun of ``state``'s run (a fork from ``from_step``, if given).

    A rerun is asked for by hand: ``direct`` (its trigger's ``if`` is not applied again) and
    ``rerun`` (idempotency, rate limit and singleton let it by). ``run_id`` is the new run's
    id when the caller derives it (a bulk replay, so that asking twice starts one run: a
    START whose run exists creates nothing); otherwise a fresh one.

    Raises:
        LookupError: The run has no step ``from_step``.
    """
    if from_step is not None and from_step not in state.steps:
        raise LookupError(f"run '{state.run.run_id}' has no step '{from_step}' (has: "
                          f"{', '.join(sorted(state.steps)) or 'none'})")
    start = StartPayload(state.run.events, direct=True, rerun=True,
                         rerun_of=RerunOf(state.run.run_id, from_step))
    return start.message(state.run.function_id, run_id or new_run_id(now))


def startable(fn: FunctionDef) -> FunctionDef:
    """``fn``, which may be started by hand: every control plane asks this before an invoke.

    Raises:
        FunctionRetiredError: It is retired (draining before removal).
    """
    if fn.retired:
        raise FunctionRetiredError(f"function '{fn.id}' is retired (draining before removal): "
                                   "it starts no new runs")
    return fn


def invoke_message(function_id: str, data: Mapping[str, Any] | None, now: float) -> Message:
    """The START of a run started by hand: its event ``stepkit/function.invoked`` with ``data``.

    Raises:
        InvalidEventError: ``data`` is not a JSON object within the event limits.
    """
    new_id = new_run_id(now)
    [event] = validate_events(
        [{"id": new_id, "name": FUNCTION_INVOKED, "data": dict(data or {})}],
        now_ms=int(now * 1000), allow_system=True)
    return StartPayload((event.to_json(),), direct=True, rerun=True).message(function_id,
                                                                            new_id)


class ManualControl:
    """The by-hand operations on runs (the dev server's buttons, the CLI, the API)."""

    def __init__(self, ports: Ports, finisher: Finisher) -> None:
        self.ports = ports
        self.finisher = finisher

    def cancel(self, run_id: str, reason: str) -> bool:
        """Cancel a running run now; whether it was running.

        A CANCEL message is queued first and marked ``resend``, then the cancel is committed
        here under that message's id: if this process dies at any point, the queued message
        lands the cancel or re-sends what its commit had to send.
        """
        p = self.ports
        state = p.store.load(run_id)
        if state is None or state.run.status.finished:
            return False
        msg = Message(MessageKind.CANCEL, state.run.function_id, run_id,
                      payload=CancelPayload(reason, resend=True).to_json())
        if state.run.function_id in p.app.functions:  # a removed function has no queue
            p.queue.send([msg])
        try:
            self.finisher.cancel(run_id, reason, msg.id)
        except CommitContentionError:
            p.log.warning("run %s: cancel left to its queued message", run_id)
        return True

    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Start a new run of the same function with the same events; return its id.

        With ``from_step`` it is a fork (DBOS's word): the new run starts with the results
        the original recorded before that step (completed or failed for good, started
        before it), so its replay returns them, and it performs ``from_step`` and what
        follows again. ``new_id``: the new run's id (see :func:`rerun_message`).

        Raises:
            LookupError: No such run, or no such step in it.
        """
        p = self.ports
        state = p.store.load(run_id)
        if state is None:
            raise LookupError(f"no run '{run_id}'")
        msg = rerun_message(state, from_step, p.clock.now(), new_id)
        p.queue.send([msg])
        return msg.run_id

    def fire_cron_now(self, function_id: str) -> str:
        """Fire a function's cron trigger now, by hand; the run's id.

        The run is the one a scheduled fire at this instant would start (same event shape,
        ``stepkit/scheduled.timer``, and derived id), so firing twice in the same
        millisecond starts one run.

        Raises:
            FunctionNotFoundError: No such function.
            ValueError: It has no cron trigger.
        """
        p = self.ports
        fn = p.app.get(function_id)
        if not fn.crons:
            raise ValueError(f"function '{fn.id}' has no cron trigger to fire")
        msg = cron_message(fn, fn.crons[0].spec, p.clock.now())
        p.queue.send([msg])
        return msg.run_id

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now (the dev server's "skip"); whether there was one to end.

        Queued as a WAKE marked ``skip`` under an id derived from the step, so it is applied
        by a worker with every guarantee a wake has, and asking twice wakes it once.

        Raises:
            LookupError: No such run.
        """
        p = self.ports
        state = p.store.load(run_id)
        if state is None:
            raise LookupError(f"no run '{run_id}'")
        rec = state.steps.get(key)
        if state.run.status.finished or rec is None or rec.status is not StepStatus.SLEEPING:
            return False
        p.queue.send([skip_message(state.run.function_id, run_id, key)])
        return True

    def start_by_hand(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run of a function by hand, with ``data``; return its id.

        The run's event is ``stepkit/function.invoked`` (as a ``step.invoke`` child's), so
        the function's triggers and their ``if`` do not apply; flow control's start rules
        are let by, as for a rerun.

        Raises:
            FunctionNotFoundError: No such function.
            FunctionRetiredError: It is retired.
            InvalidEventError: ``data`` is not a JSON object within the event limits.
        """
        p = self.ports
        fn = startable(p.app.get(function_id))
        msg = invoke_message(fn.id, data, p.clock.now())
        p.queue.send([msg])
        return msg.run_id

    def list_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs, newest first."""
        return self.ports.store.list_runs(query)
