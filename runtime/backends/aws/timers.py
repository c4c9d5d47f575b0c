"""Long timers on EventBridge Scheduler: one one-time schedule per message due beyond 900 s.

SQS delays a message by at most 900 s. A message due later is put on a one-time schedule
(``at(...)``, in the app's schedule group) whose target is the message's queue and whose input
is the message itself, so a one-day sleep costs one ``CreateSchedule`` and one delivery
instead of ~95 SQS timer hops (each a receive, a send, a delete and a Lambda invocation).

Why each guarantee holds:

- **Never early.** The time is rounded up to the second; should a delivery still come early,
  the worker re-enqueues the message for the remainder, as for any early delivery.
- **Exactly one schedule per send.** The name is the message id and its due second, so a
  redelivery that re-sends its commit's outbox (a crash after ``CreateSchedule``, before the
  ack) finds the schedule there (``ConflictException``) and counts that as done.
- **Nothing dropped.** Any other refusal (throttling included) raises, so the message fails and
  is redelivered; a delivery Scheduler cannot make is retried for a day, then lands in the
  app's delivery DLQ (``stepkit dlq redrive`` sends it on). ``ActionAfterCompletion=DELETE``
  removes the schedule once it has fired.
- **None outlives its purpose.** A commit that makes a timer moot (a wait answered, an invoke
  returned, the run ended) lists it in its outbox (a ``TimerCancel``), and the queue deletes
  its schedule (``DeleteSchedule``, best effort: one left fires into work that moved on), so
  the account's schedules count only pending work.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runtime.backends.aws.resources import (
    DELIVERY_MAX_EVENT_AGE_S,
    DELIVERY_MAX_RETRY_ATTEMPTS,
    AppResources,
    HandlerConfig,
)
from runtime.errors import StepkitError
from runtime.records import Message, TimerCancel

#: The largest message put on a schedule. Scheduler bills an invocation per 64 KB of input, and
#: the API model sets no size, so we stay far below any request limit; a larger message (none
#: of stepkit's timers is near it) hops on SQS instead.
MAX_INPUT_BYTES = 64 * 1024
#: Schedule names: 1-64 of these characters (the API's pattern). A message id that fits in
#: 52 (leaving room for "-" and the due second) is used as it is; others are hashed.
_NAME_CHARS = re.compile(r"[0-9A-Za-z_.-]{1,52}")


class TimerError(StepkitError):
    """Scheduler refused a timer's schedule: the message is redelivered and sent again.

    Attributes:
        code: AWS's error code, or botocore's error class when there was no answer (what
            tells a throttled call from a refused one).
    """

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def schedule_name(message: Message) -> str:
    """The schedule of ``message``: the same for every send of it, unique to its due second."""
    if message.due is None:
        raise ValueError(f"message {message.id} has no due time to schedule")
    return _name(message.id, message.due)


def _name(message_id: str, due: float) -> str:
    ident = message_id
    if not _NAME_CHARS.fullmatch(ident):
        ident = hashlib.sha256(ident.encode()).hexdigest()[:40]
    return f"{ident}-{math.ceil(due)}"


def at_expression(due: float) -> str:
    """Scheduler's one-time expression for ``due`` (UTC), rounded up: never before it."""
    return datetime.fromtimestamp(math.ceil(due), UTC).strftime("at(%Y-%m-%dT%H:%M:%S)")


class SchedulerTimers:
    """Puts messages due beyond SQS's delay on one-time EventBridge Scheduler schedules.

    Args:
        client: Returns the boto3 ``scheduler`` client; called on the first long timer, so a
            Lambda that never sets one never builds the client.
        group: The app's schedule group.
        role_arn: The role Scheduler sends with (``sqs:SendMessage`` to the app's queues and
            the delivery DLQ).
        queue_arn: The ARN of a function's queue, by function id.
        dlq_arn: The app's delivery DLQ.
    """

    def __init__(self, client: Callable[[], Any], *, group: str, role_arn: str,
                 queue_arn: Callable[[str], str], dlq_arn: str) -> None:
        self._client = client
        self.group = group
        self.role_arn = role_arn
        self.queue_arn = queue_arn
        self.dlq_arn = dlq_arn

    @classmethod
    def for_handler(cls, resources: AppResources, config: HandlerConfig,
                    clients: dict[str, Any]) -> SchedulerTimers | None:
        """The timers of a Lambda, or ``None`` when its environment names no timer role.

        Without one (a hand-run handler, a stack deployed before timers), long delays keep
        hopping on SQS.
        """
        own_arn, role = config.queue_arn, config.timer_role_arn
        if not own_arn or not role:
            return None

        def client() -> Any:
            if "scheduler" not in clients:
                import boto3

                clients["scheduler"] = boto3.client("scheduler")
            return clients["scheduler"]

        def queue_arn(function_id: str) -> str:
            return resources.queue_arn(resources.function(function_id).queue, own_arn)

        return cls(client, group=resources.schedule_group, role_arn=role, queue_arn=queue_arn,
                   dlq_arn=resources.queue_arn(resources.delivery_dlq, own_arn))

    def schedule(self, message: Message, body: str) -> bool:
        """Create the schedule that puts ``body`` on the message's queue when it is due.

        Returns:
            Whether it is scheduled (now or by an earlier send of the same message); ``False``
            when the body is too large for a schedule, to be sent on SQS instead.

        Raises:
            TimerError: Scheduler refused (throttled, a quota, a permission): nothing is
                dropped, the caller fails and its message is redelivered.
        """
        if message.due is None:
            raise ValueError(f"message {message.id} has no due time to schedule")
        if len(body.encode()) > MAX_INPUT_BYTES:
            return False
        name = schedule_name(message)
        try:
            self._client().create_schedule(
                Name=name,
                GroupName=self.group,
                ScheduleExpression=at_expression(message.due),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target={
                    "Arn": self.queue_arn(message.function_id),
                    "RoleArn": self.role_arn,
                    "Input": body,
                    "RetryPolicy": {
                        "MaximumEventAgeInSeconds": DELIVERY_MAX_EVENT_AGE_S,
                        "MaximumRetryAttempts": DELIVERY_MAX_RETRY_ATTEMPTS,
                    },
                    "DeadLetterConfig": {"Arn": self.dlq_arn},
                },
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConflictException":  # an earlier send of this message created it
                return True
            raise TimerError(
                f"Scheduler refused the timer {name} of run {message.run_id}: {code}: {exc}",
                code=code) from None
        except BotoCoreError as exc:
            raise TimerError(f"Scheduler unreachable for the timer {name}: {exc}",
                             code=type(exc).__name__) from None
        return True

    def delete(self, timer: TimerCancel) -> None:
        """Delete the schedule of a moot timer; one already gone (fired, deleted) is fine.

        Raises:
            TimerError: Scheduler refused (throttled, a permission): the delivery that
                asked comes back and deletes it again.
        """
        name = _name(timer.message_id, timer.due)
        try:
            self._client().delete_schedule(Name=name, GroupName=self.group)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "ResourceNotFoundException":
                raise TimerError(f"Scheduler refused to delete the timer {name}: {code}: "
                                 f"{exc}", code=code) from None
        except BotoCoreError as exc:
            raise TimerError(f"Scheduler unreachable to delete the timer {name}: {exc}",
                             code=type(exc).__name__) from None
