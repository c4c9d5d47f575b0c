"""Pushback mode: AWS saying "not now" for as long as it does on a bad day.

The emulators never throttle. :meth:`runtime.testing.Harness.pushback` refuses the calls of
chosen services for a window of harness time, below the project's code: on the AWS backend
as botocore's own ``ThrottlingException`` (raised where the call would go out, as when the
SDK's retries are spent), on the local backend as a :class:`Throttled` error from the store,
queue or bus. A behaviour case then checks that the work was only delayed.

Targets:

- ``store-writes``: every DynamoDB write (the local store's writes);
- ``store``: every DynamoDB call (every local store call);
- ``bus``: ``PutEvents`` (the local bus);
- ``timers``: ``CreateSchedule`` (on the local backend, queue sends due more than 900 s
  later, which is what goes to Scheduler on AWS);
- ``lambda``: Lambda throttles the invocation: deliveries never reach the handler, and come
  back after the visibility timeout with their receive count raised, as on AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errors import PushbackError
from runtime.orchestration.clock import FakeClock
from runtime.records import Message, TimerCancel

TARGETS = frozenset({"store-writes", "store", "bus", "timers", "lambda"})
#: SQS's longest delay: a message due later than this is a Scheduler timer on AWS.
_SQS_DELAY = 900.0
#: A function queue's visibility timeout, in function timeouts (as the stack deploys it).
_VISIBILITY_FACTOR = 6
_DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems",
                    "BatchWriteItem")


class Throttled(PushbackError):
    """A call refused by pushback mode (the local backend's stand-in for AWS throttling)."""


class LambdaThrottled(Exception):
    """Lambda refused the invocation: the delivery never reached the handler.

    Attributes:
        retry_after: When the message is visible again (its visibility timeout).
    """

    def __init__(self, retry_after: float) -> None:
        super().__init__("Lambda throttled the invocation (pushback mode)")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Window:
    """Calls to ``targets`` are refused from ``start`` until ``end`` (harness time)."""

    targets: frozenset[str]
    start: float
    end: float


class Pushback:
    """The windows of refusal of one harness, and how many calls each target refused."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.windows: list[Window] = []
        self.refusals: dict[str, int] = dict.fromkeys(sorted(TARGETS), 0)
        self._undo: list[Callable[[], None]] = []

    def add(self, targets: Sequence[str], start: float, end: float) -> None:
        """Refuse ``targets`` from ``start`` to ``end``."""
        unknown = sorted(set(targets) - TARGETS)
        if unknown:
            raise ValueError(f"pushback targets {unknown} unknown; choose from "
                             f"{sorted(TARGETS)}")
        self.windows.append(Window(frozenset(targets), start, end))

    def refused(self, target: str) -> bool:
        """Whether a call to ``target`` is refused now (and count it if so)."""
        now = self.clock.now()
        if any(target in w.targets and w.start <= now < w.end for w in self.windows):
            self.refusals[target] += 1
            return True
        return False

    def refuse(self, target: str, what: str) -> None:
        """Raise :class:`Throttled` if ``target`` is refused now."""
        if self.refused(target):
            raise Throttled(f"{what} throttled (pushback mode, target {target!r})")

    # -- the AWS backend: botocore's own exceptions, where the call goes out -----------------

    def on_clients(self, clients: dict[str, Any]) -> None:
        """Refuse calls of the AWS backend's boto3 clients as throttled."""
        rules: list[tuple[str, str, str]] = [
            ("dynamodb", op, "store-writes") for op in _DYNAMODB_WRITES]
        rules += [("dynamodb", "*", "store"), ("events", "PutEvents", "bus"),
                  ("scheduler", "CreateSchedule", "timers")]
        for service, op, target in rules:
            client = clients[service]
            event = f"before-call.{client.meta.service_model.service_name}.{op}"
            hook = self._aws_hook(target)
            client.meta.events.register(event, hook)
            self._undo.append(_unregister(client, event, hook))

    def _aws_hook(self, target: str) -> Callable[..., None]:
        def hook(model: Any = None, **_: Any) -> None:
            if self.refused(target):
                from botocore.exceptions import ClientError

                name = getattr(model, "name", "call")
                response: Any = {"Error": {"Code": "ThrottlingException",
                                           "Message": f"Rate exceeded (pushback mode, {target})"},
                                 "ResponseMetadata": {"HTTPStatusCode": 400}}
                raise ClientError(response, name)

        return hook

    # -- the local backend: its store, queue and bus ---------------------------------------

    def on_orchestrator(self, orchestrator: Any) -> None:
        """Refuse the local orchestrator's store, queue and bus calls, and its deliveries.

        A delivery Lambda refused comes back after the deployed queue's visibility timeout
        (six times the function's timeout), not the local queue's own.
        """
        orchestrator.store = _Store(orchestrator.store, self)
        orchestrator.queue = _Queue(orchestrator.queue, self)
        orchestrator.bus = _Bus(orchestrator.bus, self)
        handle = orchestrator.handle

        def throttled_handle(msg: Message, **kwargs: Any) -> None:
            if self.refused("lambda"):
                raise LambdaThrottled(_VISIBILITY_FACTOR * orchestrator.app.get(
                    msg.function_id).aws.timeout_s)
            handle(msg, **kwargs)

        orchestrator.handle = throttled_handle

    def close(self) -> None:
        """Remove the hooks set on clients."""
        for undo in self._undo:
            undo()
        self._undo.clear()


def _unregister(client: Any, event: str, hook: Callable[..., None]) -> Callable[[], None]:
    return lambda: client.meta.events.unregister(event, hook)


class _Store:
    _WRITES = frozenset({
        "commit", "create_run", "remember_event", "log_event", "remove_waiters", "put_gate",
        "persist", "claim_slot", "free_slot", "put_place", "leave_line", "open_window",
        "take_seat", "join_window", "kill_seat", "close_window", "mark_window",
        "adopt_members", "mark_delivery"})
    _READS = frozenset({
        "load", "waiters_for", "event_seen", "events_since", "logged_event", "committed",
        "gate", "list_gates", "shard_leases", "line", "place", "window", "window_member",
        "window_seats", "list_windows"})

    def __init__(self, inner: Any, pushback: Pushback) -> None:
        self.inner = inner
        self.pushback = pushback

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self._WRITES and name not in self._READS:
            return attr
        targets = ("store-writes", "store") if name in self._WRITES else ("store",)

        def refused_or(*args: Any, **kwargs: Any) -> Any:
            for target in targets:
                self.pushback.refuse(target, f"store {name}")
            return attr(*args, **kwargs)

        return refused_or


class _Queue:
    def __init__(self, inner: Any, pushback: Pushback) -> None:
        self.inner = inner
        self.pushback = pushback

    def send(self, messages: Sequence[Message]) -> None:
        now = self.pushback.clock.now()
        if any(m.due is not None and m.due - now > _SQS_DELAY for m in messages):
            self.pushback.refuse("timers", "CreateSchedule")
        self.inner.send(messages)

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        self.inner.cancel(timers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Bus:
    def __init__(self, inner: Any, pushback: Pushback) -> None:
        self.inner = inner
        self.pushback = pushback

    def publish(self, events: Sequence[dict[str, Any]]) -> None:
        if events:
            self.pushback.refuse("bus", "PutEvents")
        self.inner.publish(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
