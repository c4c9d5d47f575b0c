"""Pushback is told from failure, and each comes again after its own backoff."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from runtime import App
from runtime.backends.aws.bus import PublishError
from runtime.backends.aws.dynamo import StoreError
from runtime.backends.aws.queue import QueueError
from runtime.backends.aws.timers import TimerError
from runtime.engine import Limits
from runtime.errors import PushbackError
from runtime.messages import Deferral, is_deferred
from runtime.orchestration.clock import FakeClock
from runtime.orchestration.ports import CommitContentionError, Ports
from runtime.orchestration.protocols import NoMetrics
from runtime.orchestration.pushback import Backoff, Deferrer, is_pushback
from runtime.records import Message, MessageKind, TimerCancel


def _aws(code: str, status: int = 400, **extra: object) -> ClientError:
    response: dict[str, object] = {"Error": {"Code": code, "Message": "m"},
                                   "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, "Op")  # type: ignore[arg-type]


@pytest.mark.parametrize("exc", [
    _aws("ProvisionedThroughputExceededException"),
    _aws("ThrottlingException"),
    _aws("TransactionConflictException"),
    _aws("TransactionCanceledException", CancellationReasons=[
        {"Code": "None"}, {"Code": "ThrottlingError"}]),
    _aws("InternalServerError", 500),
    _aws("Whatever", 503),
    _aws("SlowDown", 503),
    ReadTimeoutError(endpoint_url="http://x"),
    sqlite3.OperationalError("database is locked"),
    CommitContentionError("lost 64 races"),
    PushbackError("throttled"),
    StoreError("DynamoDB PutItem failed", code="ServiceUnavailable"),
    TimerError("Scheduler refused the timer", code="ThrottlingException"),
    TimerError("Scheduler unreachable", code="ReadTimeoutError"),
    QueueError("SQS refused 1 message(s)", codes=("InternalError",)),
    PublishError("EventBridge refused 2 entries", codes=("ThrottlingException",)),
], ids=lambda e: type(e).__name__)
def test_what_says_not_now_is_pushback(exc: BaseException) -> None:
    assert is_pushback(exc)
    wrapped = RuntimeError("while committing")
    wrapped.__cause__ = exc
    assert is_pushback(wrapped)  # what stepkit raised from it


@pytest.mark.parametrize("exc", [
    _aws("ValidationException"),
    _aws("AccessDeniedException", 403),
    _aws("TransactionCanceledException", CancellationReasons=[
        {"Code": "ConditionalCheckFailed"}]),
    sqlite3.OperationalError("disk I/O error"),
    KeyError("bug"),
    StoreError("DynamoDB PutItem failed", code="AccessDeniedException"),
    TimerError("Scheduler refused the timer", code="ValidationException"),
    PublishError("EventBridge refused 1 entry", codes=("InvalidArgument",)),
], ids=lambda e: type(e).__name__)
def test_what_says_wrong_is_a_failure(exc: BaseException) -> None:
    assert not is_pushback(exc)


def test_delays_double_to_the_cap_jittered_between_half_and_all() -> None:
    b = Backoff()
    for n, full in [(1, 2.0), (2, 4.0), (5, 32.0), (12, 900.0), (40, 900.0)]:
        d = b.delay(b.pushback, n, "m1")
        assert full / 2 <= d <= full
    assert b.delay(b.pushback, 3, "m1") != b.delay(b.pushback, 3, "m2")  # copies spread
    assert b.delay(0.0, 7, "m1") == 0.0


class _Queue:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)

    def cancel(self, timers: Sequence[TimerCancel]) -> None:
        return None


def _deferrer(clock: FakeClock, queue: _Queue) -> Deferrer:
    ports = Ports(App("a"), None, queue, None, clock, NoMetrics(), Limits(),  # type: ignore[arg-type]
                  logging.getLogger("test"))
    return Deferrer(ports, Backoff())


def test_pushback_comes_again_uncounted_for_a_day_failures_count_to_the_queues_limit() -> None:
    clock, queue = FakeClock(1000.0), _Queue()
    d = _deferrer(clock, queue)
    msg = Message(MessageKind.CONTINUE, "f", "r", id="m", version=1)
    throttled = _aws("ThrottlingException")
    for n in range(1, 30):  # 30 pushbacks in a row: never counted
        assert d.defer(msg, throttled, max_receives=5)
        msg = queue.sent[-1]
        assert is_deferred(msg) and Deferral.of(msg) == Deferral(n, 0, 1000.0)
        assert msg.due is not None and 1000.0 < msg.due <= clock.now() + 900.0
        clock.advance(msg.due - clock.now())
    clock.advance(86_400.0)  # a day of pushback: from now on it counts
    assert d.defer(msg, throttled, max_receives=5)
    assert Deferral.of(queue.sent[-1]).failures == 1
    bug = KeyError("bug")
    msg = Message(MessageKind.CONTINUE, "f", "r2", id="m2", version=1)
    for n in range(1, 5):
        assert d.defer(msg, bug, max_receives=5)
        msg = queue.sent[-1]
        assert Deferral.of(msg).failures == n
    assert not d.defer(msg, bug, max_receives=5)  # the 5th: the queue's redrive takes it
