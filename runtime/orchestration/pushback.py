"""Pushback is not death: how a failed delivery is told apart, and when it comes back.

A delivery can end three ways short of success:

- **pushback**: a call was refused for now (AWS throttled it, a transaction conflicted, a
  5xx or a timeout, SQLite was busy, a commit kept losing races). Nothing is wrong with the
  work: the message is sent again with a growing, jittered delay, as often as it takes up to
  :attr:`Backoff.ceiling`, and this never counts towards giving up;
- **failure**: anything else stepkit's code raised. The message is sent again after a
  growing delay too, and each counts towards giving up, as a receive did before;
- **death**: the delivery never came back (the worker was killed: a Lambda timeout, out of
  memory). Only then does the queue deliver the same message again, so a receive count
  above one means a death (:mod:`runtime.orchestration.dispatch` charges the step it was
  performing a lost attempt).

Sending again is a new queue message carrying its counts (:func:`runtime.messages.deferred`),
so SQS's receive count, and its ``maxReceiveCount`` redrive, see only deaths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from runtime.errors import PushbackError
from runtime.messages import Deferral, deferred
from runtime.orchestration.ports import Ports
from runtime.records import Message

#: Error codes AWS services return when they refuse a call for now (throttling, capacity,
#: conflicts, their own faults), across DynamoDB, SQS, EventBridge, Scheduler, S3 and Lambda.
PUSHBACK_CODES = frozenset({
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "RequestThrottled",
    "RequestThrottledException", "SlowDown", "TransactionConflictException",
    "TransactionInProgressException", "InternalServerError", "InternalServerException",
    "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    "KMSThrottlingException", "ReplicatedWriteConflictException",
})
#: Why a cancelled DynamoDB transaction was cancelled, when that is pushback too.
PUSHBACK_REASONS = frozenset({
    "ThrottlingError", "TransactionConflict", "ProvisionedThroughputExceeded",
    "RequestLimitExceeded", "InternalServerError",
})
#: botocore's exceptions for a call that never got an answer (by name: no botocore import).
_UNANSWERED = frozenset({
    "ConnectTimeoutError", "ReadTimeoutError", "EndpointConnectionError",
    "ConnectionClosedError", "ResponseStreamingError",
})
_CONTENTION = frozenset({"CommitContentionError", "GateMovedError", "GateContentionError"})


def is_pushback(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says "not now" rather than "wrong"."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if _says_not_now(cur):
            return True
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    return False


def lost_races(exc: BaseException) -> bool:
    """Whether ``exc`` is stepkit's own contention (lost commit or gate races), not AWS's."""
    return bool({c.__name__ for c in type(exc).__mro__} & _CONTENTION)


def _says_not_now(exc: BaseException) -> bool:
    if isinstance(exc, PushbackError):
        return True
    # By name: importing sqlite3 here would load it into every Lambda's cold start.
    if type(exc).__module__ == "sqlite3" and type(exc).__name__ == "OperationalError":
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    names = {c.__name__ for c in type(exc).__mro__}
    if names & (_UNANSWERED | _CONTENTION):
        return True
    # stepkit's own wrappings of AWS errors carry the code(s) AWS gave
    codes = {str(getattr(exc, "code", "") or "")} | {str(c) for c in getattr(exc, "codes", ())}
    if codes & (PUSHBACK_CODES | _UNANSWERED):
        return True
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    error = response.get("Error") or {}
    code = str(error.get("Code", ""))
    if code in PUSHBACK_CODES:
        return True
    if code == "TransactionCanceledException":
        reasons = {str(r.get("Code", "")) for r in response.get("CancellationReasons") or []}
        return bool(reasons & PUSHBACK_REASONS)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return isinstance(status, int) and (status == 429 or status >= 500)


@dataclass(frozen=True)
class Backoff:
    """When a message that failed or was pushed back comes again.

    Attributes:
        pushback: The first delay after a pushback (seconds); each next one doubles.
        contention: The same after stepkit's own lost races (a commit's, a gate's): no
            service is overloaded, so it comes back sooner.
        failure: The first delay after a failure; each next one doubles.
        cap: The longest delay: SQS's 900 s, so no timer is needed.
        ceiling: How long a message keeps coming back on pushback alone (a day); past it,
            the pushback counts as a failure, towards giving up.
    """

    pushback: float = 2.0
    contention: float = 1.0
    failure: float = 60.0
    cap: float = 900.0
    ceiling: float = 86_400.0

    def pushed_back(self, counts: Deferral, exc: BaseException, now: float,
                    seed: str) -> tuple[Deferral, float] | None:
        """The counts and delay of one more pushback, or ``None`` past the ceiling.

        Lost races come back after :attr:`contention`, anything else AWS refused after
        :attr:`pushback`, doubling with each pushback of the same work.
        """
        since = counts.since if counts.since is not None else now
        if now - since >= self.ceiling:
            return None
        counts = Deferral(counts.pushbacks + 1, counts.failures, since)
        first = self.contention if lost_races(exc) else self.pushback
        return counts, self.delay(first, counts.pushbacks, seed)

    def delay(self, first: float, n: int, seed: str) -> float:
        """The ``n``-th delay (from 1): doubling from ``first`` up to the cap, jittered.

        Between half and all of it, from ``seed`` (the message and the count), so copies
        pushed back together spread out instead of coming back together.
        """
        if first <= 0:
            return 0.0
        full = min(self.cap, first * 2.0 ** max(0, n - 1))
        digest = hashlib.blake2b(f"{seed}/{n}".encode(), digest_size=4).digest()
        return full * (0.5 + int.from_bytes(digest, "big") / 2**33)


class Deferrer:
    """Sends a message again later instead of failing its delivery (see the module doc).

    Args:
        ports: Where the copy is sent, and the clock and log.
        backoff: The delays.
    """

    def __init__(self, ports: Ports, backoff: Backoff) -> None:
        self.ports = ports
        self.backoff = backoff

    def defer(self, msg: Message, exc: Exception, max_receives: int | None) -> bool:
        """Send ``msg`` again, due after its backoff; whether it was (else the caller raises).

        A pushback is deferred until its first one is :attr:`Backoff.ceiling` old; a
        failure until its count would reach ``max_receives``, so a message that only ever
        fails still ends in the dead-letter queue through the queue's own redrive.
        """
        p = self.ports
        now = p.clock.now()
        counts = Deferral.of(msg)
        what = f"{msg.kind.value} message {msg.id} of run {msg.run_id}"
        later = self.backoff.pushed_back(counts, exc, now, msg.id) if is_pushback(exc) else None
        if later is not None:
            counts, delay = later
            p.log.warning("%s pushed back (%d): %s; again in %.0fs", what, counts.pushbacks,
                          short(exc), delay)
            p.metrics.pushback(msg.function_id)
        else:
            counts = Deferral(counts.pushbacks, counts.failures + 1, counts.since)
            if max_receives is not None and counts.failures >= max_receives:
                return False
            delay = self.backoff.delay(self.backoff.failure, counts.failures, msg.id)
            p.log.error("%s failed (%d): %s; again in %.0fs", what, counts.failures,
                        short(exc), delay, exc_info=exc)
        copy = deferred(msg, counts, now + delay)
        try:
            p.in_place(lambda: p.queue.send([copy]), f"deferring {what}")
        except Exception:
            p.log.exception("%s could not be deferred; the queue delivers it again", what)
            return False
        return True


def short(exc: BaseException) -> str:
    """``exc`` in one line of at most 300 characters."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 300 else text[:297] + "..."
