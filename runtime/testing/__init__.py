"""A harness for testing durable functions in pytest: send events, skip time, inspect runs.

Example::

    from runtime.testing import Harness

    def test_welcome(tmp_path):
        h = Harness.local(app, path=tmp_path / "db.sqlite3")
        h.send("user/signup", {"user_id": "u1"})
        h.advance("3d")
        run = h.only_run("send-welcome-email")
        assert run.status == "Completed"
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runtime.app import App
from runtime.durations import parse_duration
from runtime.events import Event
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.protocols import RunQuery
from runtime.records import Gate, GateWrite, Message, RunRecord, RunState, RunStatus, StepRecord

if TYPE_CHECKING:
    from runtime.control import ControlPlane
    from runtime.ingress.endpoint import Answer, Ingress
    from runtime.testing.chaos import Chaos
    from runtime.testing.pushback import Pushback
    from stepkit_emulators.emulators import AwsEmulators


class TestBackend(Protocol):
    """What a backend offers the harness (the local and the AWS emulator backends do)."""

    def send(self, events: Any) -> list[str]:
        """Validate and publish events; return ids."""
        ...

    def run_until_idle(self) -> int:
        """Process every due piece of work; return how many messages were handled."""
        ...

    def get_run(self, run_id: str) -> RunState | None:
        """A run with its steps."""
        ...

    def list_runs(self, query: RunQuery = ...) -> list[RunRecord]:
        """Runs, newest first."""
        ...

    def cancel(self, run_id: str) -> bool:
        """Cancel a run."""
        ...

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Start a new run with the same events (a fork, ``from_step``)."""
        ...

    def dead_letters(self) -> list[Message]:
        """Messages that exhausted their deliveries."""
        ...

    def pending_timers(self) -> list[str]:
        """Timers still waiting to fire (locally: delayed messages; on AWS: schedules)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...


#: How a harness deploys new code over its backend's state: ``(old backend, new app,
#: keep_queues) -> new backend``, the old one released.
Deploy = Callable[[TestBackend, App, bool], TestBackend]


@dataclass(frozen=True)
class RunView:
    """A run as tests look at it."""

    state: RunState

    @property
    def id(self) -> str:
        """The run id."""
        return self.state.run.run_id

    @property
    def status(self) -> RunStatus:
        """Lifecycle state (compares equal to strings like ``"Completed"``)."""
        return self.state.run.status

    @property
    def output(self) -> Any:
        """The handler's return value."""
        return self.state.run.output

    @property
    def error(self) -> str | None:
        """``"Name: message"`` of the failure or cancellation, if any."""
        err = self.state.run.error
        return f"{err.name}: {err.message}" if err else None

    @property
    def steps(self) -> dict[str, StepRecord]:
        """Step records by key."""
        return self.state.steps

    def step(self, key: str) -> StepRecord:
        """One step record, by key or by the id it was given if that is unique in the run.

        Steps inside parallel branches are keyed with their branch (``charge@2``); a test
        may still ask for ``"charge"`` when only one step has that id.

        Raises:
            KeyError: No such step (or the id is ambiguous); the message names the keys.
        """
        found = self.state.steps.get(key)
        if found is not None:
            return found
        same = [r for r in self.state.steps.values() if r.id == key]
        if len(same) == 1:
            return same[0]
        raise KeyError(f"run {self.id} has no step '{key}' (has: {sorted(self.steps)})")


class Harness:
    """Drives an app's runs on a backend with a clock that only moves when told to.

    Args:
        app: The app under test.
        backend: Where runs execute.
        clock: The backend's clock.
        deploy: How to deploy new code over the backend's state (:meth:`redeploy`);
            :meth:`local` and :meth:`aws` give one.
    """

    def __init__(self, app: App, backend: TestBackend, clock: FakeClock, *,
                 deploy: Deploy | None = None) -> None:
        self.app = app
        self.backend = backend
        self.clock = clock
        self.chaos: Chaos | None = None
        self._settle: Any = backend.run_until_idle
        self._pushback: Pushback | None = None
        self._deploy = deploy
        self._duplicating = False
        #: The harness that replaced this one (:meth:`redeploy`), which :meth:`close` closes.
        self._successor: Harness | None = None
        self._local_ingress: Ingress | None = None

    def once(self, effects: Iterable[Any]) -> list[Any]:
        """Side effects as a test recorded them, with chaos mode's repeats collapsed.

        Steps are at-least-once: a step whose result could not be recorded (an injected
        failure, a duplicated delivery running it concurrently) runs again. In chaos mode this
        keeps the first occurrence of each effect; in normal mode it returns them unchanged.
        """
        if self.chaos is None:
            return list(effects)
        return list(dict.fromkeys(effects))

    def enable_chaos(self, chaos: Chaos | None = None) -> Harness:
        """Settle in chaos mode from now on (see :mod:`runtime.testing.chaos`).

        Concurrent workers, shuffled and duplicated deliveries, crashes after commits and
        injected store, queue and bus failures.
        """
        from runtime.testing.chaos import Chaos, LocalChaos

        self.chaos = chaos or Chaos()
        own = getattr(self.backend, "enable_chaos", None)
        if own is not None:
            self._settle = own(self.chaos)
        else:
            self._settle = LocalChaos(self.backend, self.chaos).run_until_idle
        return self

    def pushback(self, *targets: str, span: str | float | timedelta = "30m",
                 after: str | float | timedelta = 0.0) -> Pushback:
        """Refuse calls to ``targets`` for ``span`` of harness time, from ``after`` on.

        AWS saying "not now" (see :mod:`runtime.testing.pushback` for the targets:
        ``store-writes``, ``store``, ``bus``, ``timers``, ``lambda``). Returns the pushback
        mode's record, whose ``refusals`` count what it refused.
        """
        from runtime.testing.pushback import Pushback

        if self._pushback is None:
            self._attach_pushback(Pushback(self.clock))
        assert self._pushback is not None
        start = self.clock.now() + _seconds(after, "Harness.pushback after")
        self._pushback.add(targets, start, start + _seconds(span, "Harness.pushback span"))
        return self._pushback

    def _attach_pushback(self, pushback: Pushback) -> None:
        """Refuse this harness's backend calls in ``pushback``'s windows."""
        self._pushback = pushback
        clients = getattr(self.backend, "clients", None)
        if clients is not None:  # the AWS backend: refused where boto3 calls go out
            pushback.on_clients(clients)
            self.backend.pushback = pushback  # type: ignore[attr-defined]
        else:
            pushback.on_orchestrator(self.backend.orchestrator)  # type: ignore[attr-defined]

    @classmethod
    def local(
        cls,
        app: App,
        *,
        path: str | Path,
        start: datetime | float | None = None,
        **options: Any,
    ) -> Harness:
        """A harness on the embedded SQLite backend.

        Args:
            app: The app under test.
            path: The SQLite file.
            start: The fake clock's start time (default: now).
            **options: Passed to ``LocalBackend``.
        """
        from runtime.backends.local import LocalBackend

        clock = FakeClock(start)

        def deploy(old: TestBackend, new_app: App, keep_queues: bool) -> TestBackend:
            # A restarted dev server: the old process's workers stop and its connections
            # close before the new code opens the same file. One queue table holds every
            # function's messages, so there is no queue to keep or delete.
            old.close()
            return LocalBackend(new_app, path, clock=clock, **options)

        return cls(app, LocalBackend(app, path, clock=clock, **options), clock, deploy=deploy)

    @classmethod
    def aws(
        cls,
        app: App,
        emulators: AwsEmulators,
        *,
        start: datetime | float | None = None,
        **options: Any,
    ) -> Harness:
        """A harness on the AWS backend against running emulators (see ``stepkit_emulators.aws``).

        Args:
            app: The app under test.
            emulators: DynamoDB Local + moto, with fresh state.
            start: The fake clock's start time (default: now).
            **options: Passed to ``AwsBackend``.

        Raises:
            ModuleNotFoundError: The emulator package or moto is not installed.
        """
        try:  # imported here: the emulators are an extra, never a dependency of runtime
            from stepkit_emulators.aws import AwsBackend
        except ModuleNotFoundError as e:
            if (e.name or "").partition(".")[0] not in {"stepkit_emulators", "moto"}:
                raise
            raise ModuleNotFoundError(
                "Harness.aws needs the AWS emulators: pip install 'stepkit[emulators]'",
                name=e.name,
            ) from e

        clock = FakeClock(start)

        def deploy(old: TestBackend, new_app: App, keep_queues: bool) -> TestBackend:
            assert isinstance(old, AwsBackend)
            return old.redeploy(new_app, keep_queues=keep_queues)

        return cls(app, AwsBackend(app, emulators, clock, **options), clock, deploy=deploy)

    def redeploy(self, app: App, *, keep_queues: bool = False) -> Harness:
        """Deploy new code over this harness's state; return the harness that runs it.

        What ``cdk deploy`` does on AWS and restarting the dev server does locally: ``app``
        (the same app id, new code) runs over the same runs, queues, timers, clock and
        emulators. This harness is retired: use the one returned (closing either closes it).
        Chaos mode, pushback mode and duplicated deliveries carry over.

        Args:
            app: The new code.
            keep_queues: On AWS, keep the queues of functions the new code removes, with their
                messages, as a ``RemovalPolicy.RETAIN`` would (by default they are deleted,
                as CloudFormation does); a function added back later finds them. The local
                backend keeps every message in one queue table either way.

        Raises:
            TypeError: The harness was not built by :meth:`local` or :meth:`aws`.
            RuntimeError: It was already redeployed.
        """
        if self._deploy is None:
            raise TypeError("only harnesses built by Harness.local or Harness.aws redeploy")
        if self._successor is not None:
            raise RuntimeError("this harness was redeployed already: redeploy its successor")
        new = Harness(app, self._deploy(self.backend, app, keep_queues), self.clock,
                      deploy=self._deploy)
        self._successor = new
        self._hand_over_modes(new)
        return new

    def _hand_over_modes(self, new: Harness) -> None:
        """Put ``new`` in this harness's delivery modes, in the order they are usually set."""
        if self._duplicating:
            new.duplicate_deliveries()
        if self.chaos is not None:
            new.enable_chaos(self.chaos)
        if self._pushback is not None:  # its windows and refusal counts go on
            new._attach_pushback(self._pushback)
            self._pushback = None

    def send(
        self,
        event: str | Mapping[str, Any] | Event | Sequence[Mapping[str, Any] | Event],
        data: Mapping[str, Any] | None = None,
        *,
        settle: bool = True,
        **fields: Any,
    ) -> list[str]:
        """Send an event (by name and data, or whole) and, by default, run until idle."""
        payload: Any = (
            {"name": event, "data": dict(data or {}), **fields} if isinstance(event, str) else event
        )
        ids = self.backend.send(payload)
        if settle:
            self.settle()
        return ids

    def settle(self) -> int:
        """Run every piece of work that is due now; return messages handled."""
        return int(self._settle())

    def advance(self, by: str | float | timedelta) -> None:
        """Skip the clock forward and run what became due, in time order.

        The clock jumps from one due time to the next (timers, retries, cron fires, a
        delay queue's hops), so everything fires at its exact instant however long the span.
        """
        span = parse_duration(by, where="Harness.advance").total_seconds()
        end = self.clock.now() + span
        next_due = getattr(self.backend, "next_due", None)
        self.settle()
        while True:
            now = self.clock.now()
            if now >= end:
                return
            due = next_due() if next_due is not None else None
            target = end if due is None or due <= now else min(due, end)
            # At least a millisecond: the clock may not represent a smaller step.
            self.clock.advance(max(target - now, 0.001))
            self.settle()

    def runs(self, function_id: str | None = None, status: str | None = None) -> list[RunView]:
        """Runs, newest first."""
        query = RunQuery(
            function_id=function_id, status=RunStatus(status) if status else None, limit=1000
        )
        views = []
        for r in self.backend.list_runs(query):
            state = self.backend.get_run(r.run_id)
            assert state is not None
            views.append(RunView(state))
        return views

    def run(self, run_id: str) -> RunView:
        """One run."""
        state = self.backend.get_run(run_id)
        if state is None:
            raise KeyError(f"no run '{run_id}'")
        return RunView(state)

    def pending_timers(self) -> list[str]:
        """Timers still waiting to fire: locally delayed messages, on AWS the app's schedules."""
        return self.backend.pending_timers()

    def only_run(self, function_id: str) -> RunView:
        """The single run of a function; fails if there are none or several."""
        found = self.runs(function_id)
        if len(found) != 1:
            raise AssertionError(f"expected one run of '{function_id}', found {len(found)}")
        return found[0]

    def cancel(self, run_id: str) -> bool:
        """Cancel a run and settle."""
        done = self.backend.cancel(run_id)
        self.settle()
        return done

    def rerun(self, run_id: str, from_step: str | None = None) -> str:
        """Rerun (a fork, with ``from_step``) and settle; return the new run id."""
        new = self.backend.rerun(run_id, from_step)
        self.settle()
        return new

    @property
    def control(self) -> ControlPlane:
        """The control plane over the backend: the dev server's and the CLI's operations.

        Its actions queue work; settle (or use :meth:`invoke`, :meth:`fire_cron`,
        :meth:`skip_sleep`, which do) to see them done.

        Raises:
            TypeError: The backend offers none (only the local backend does today).
        """
        control: ControlPlane | None = getattr(self.backend, "control", None)
        if control is None:
            raise TypeError(f"{type(self.backend).__name__} offers no control plane")
        return control

    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run by hand (as ``stepkit invoke``) and settle; return its id."""
        run_id = self.control.invoke(function_id, data)
        self.settle()
        return run_id

    def fire_cron(self, function_id: str) -> str:
        """Fire a function's cron now (as ``stepkit fire``) and settle; return the run's id."""
        run_id = self.control.fire_cron(function_id)
        self.settle()
        return run_id

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """End a sleeping step now (the dashboard's "skip") and settle; whether one slept."""
        skipped = self.control.skip_sleep(run_id, key)
        self.settle()
        return skipped

    def pause(self, function_id: str, reason: str | None = None) -> None:
        """Pause a function (as ``stepkit pause``), then let the workers' cached view lapse.

        A worker trusts the pause it read for ``PAUSE_CACHE_SECONDS``; the clock moves on by
        that much (running nothing), so what is sent next finds the function paused.
        """
        from runtime.orchestration.pausing import PAUSE_CACHE_SECONDS, pause

        pause(self._store, self.clock, function_id, reason)
        self.clock.advance(PAUSE_CACHE_SECONDS)

    def resume(self, function_id: str) -> bool:
        """Resume a paused function (as ``stepkit resume``); whether it was paused.

        Its held messages come back within ``PAUSED_RETRY``: advance the clock to see them run.
        """
        from runtime.orchestration.pausing import resume

        return resume(self._store, self.clock, function_id)

    def create_key(self, label: str = "", prefixes: Sequence[str] = ()) -> str:
        """Make an event key (as ``stepkit keys create``); return the key."""
        from runtime.ingress.keys import create_key

        return create_key(self._store, self.clock, label=label, prefixes=prefixes)[1]

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        settle: bool = True,
    ) -> Answer:
        """A request to the event endpoint, as a client over HTTPS sends it; its answer.

        On AWS, the deployed endpoint's Lambda gets API Gateway's event for it; locally, the
        dev server's endpoint answers it, with keys checked as deployed.

        Args:
            path: ``/e/<key>``, ``/e`` or ``/webhooks/<source>``.
            body: Sent as JSON (``Content-Type: application/json``).
            raw: The body's bytes instead (a webhook's signed body).
            headers: Request headers (names in any case).
            method: The HTTP method.
            settle: Run until idle afterwards.
        """
        from runtime.ingress.endpoint import IngressRequest

        sent = raw if raw is not None else json.dumps(body).encode()
        given = {k.lower(): v for k, v in (headers or {}).items()}
        request = IngressRequest(method, path, {"content-type": "application/json", **given},
                                 sent)
        own = getattr(self.backend, "post", None)
        answer: Answer = own(request) if own is not None else self._ingress().handle(request)
        if settle:
            self.settle()
        return answer

    def _ingress(self) -> Ingress:
        """The local endpoint: keys checked, events published as ``send`` publishes them."""
        if self._local_ingress is None:
            from runtime.ingress.endpoint import Ingress
            from runtime.ingress.keys import EventKeys

            orchestrator = self.backend.orchestrator  # type: ignore[attr-defined]
            self._local_ingress = Ingress(self.app,
                                          keys=EventKeys(_CurrentGates(orchestrator), self.clock),
                                          publish=orchestrator.send, clock=self.clock)
        return self._local_ingress

    @property
    def _store(self) -> Any:
        """The backend's store (both the local and the AWS emulator backend have one)."""
        return self.backend.store  # type: ignore[attr-defined]

    def duplicate_deliveries(self) -> None:
        """Fault injection: from now on every queue message is delivered twice."""
        self._duplicating = True
        own = getattr(self.backend, "duplicate_deliveries", None)
        if own is not None:  # a backend with several senders (AWS: one per Lambda) wraps them
            own()
            return
        from runtime.testing.faults import DuplicatingQueue

        orchestrator = self.backend.orchestrator  # type: ignore[attr-defined]
        orchestrator.queue = DuplicatingQueue(orchestrator.queue)

    def close(self) -> None:
        """Release the backend (after :meth:`redeploy`, the one that replaced it)."""
        if self._successor is not None:
            self._successor.close()
            return
        if self._pushback is not None:
            self._pushback.close()
        self.backend.close()


class _CurrentGates:
    """The local orchestrator's gates as they are at each call.

    Chaos and pushback modes wrap its store in place: the endpoint's key reads must meet
    what its other reads meet.
    """

    def __init__(self, orchestrator: Any) -> None:
        self.orchestrator = orchestrator

    def gate(self, scope: str, key: str) -> Gate:
        """The store's ``gate``."""
        found: Gate = self.orchestrator.store.gate(scope, key)
        return found

    def list_gates(self, scope: str, limit: int = 100) -> list[tuple[str, Gate]]:
        """The store's ``list_gates``."""
        found: list[tuple[str, Gate]] = self.orchestrator.store.list_gates(scope, limit)
        return found

    def put_gate(self, write: GateWrite) -> bool:
        """The store's ``put_gate``."""
        return bool(self.orchestrator.store.put_gate(write))


def _seconds(value: str | float | timedelta, where: str) -> float:
    """A duration given as ``"30m"``, seconds or a ``timedelta``, in seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return parse_duration(value, where=where).total_seconds()
