"""A deployed app's dead-letter queues on SQS: count, list and redrive what sits in them.

Each function queue and the router queue has its own DLQ (SQS moves a message there after
``maxReceiveCount`` receives, or a worker sends a record that can never succeed there with a
``stepkit_error`` attribute). The delivery DLQ has no single source: EventBridge rules and
Scheduler schedules put there what they failed to deliver to a queue, naming the target in the
documented ``TARGET_ARN`` attribute (with ``ERROR_CODE`` and ``ERROR_MESSAGE``).

Redrive sends each message back to its source queue and deletes it from the DLQ only once the
send succeeded: at least once, which the orchestrator absorbs (a duplicate commits nothing).
SQS's own ``StartMessageMoveTask`` was not used: it cannot pick one message, cannot place the
delivery DLQ's messages (they were never in a source queue), and cannot mark a stepkit message
as re-sent (:func:`runtime.dlq.redrive_body`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from runtime.backends.aws.resources import AppResources
from runtime.dlq import DeadLetter, describe_body, redrive_body
from runtime.errors import StepkitError

_BATCH = 10
# Seconds a message listed or being redriven stays invisible; listing makes them visible again.
_LEASE = 30
_MAX_SCAN = 10_000  # messages read per DLQ at most, so a huge backlog cannot loop for ever


class DeadLetterError(StepkitError):
    """A dead-letter queue could not be read, or a message could not be redriven."""


class DeadLetterQueues:
    """The dead-letter queues of one deployed app.

    Args:
        resources: The app's resources (the DLQ names and their source queues).
        client: A boto3 ``sqs`` client.
    """

    def __init__(self, resources: AppResources, client: Any) -> None:
        self.resources = resources
        self.client = client
        self._urls: dict[str, str | None] = {}

    def url(self, name: str) -> str | None:
        """A queue's URL, or ``None`` if it does not exist (not deployed, or an older stack)."""
        if name not in self._urls:
            try:
                self._urls[name] = self.client.get_queue_url(QueueName=name)["QueueUrl"]
            except ClientError as exc:
                if _code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue",
                                      "QueueDoesNotExist"):
                    raise
                self._urls[name] = None
        return self._urls[name]

    def _queues(self, only: str | None) -> Iterator[tuple[str, str, str | None]]:
        names = self.resources.dead_letter_queues()
        if only is not None and only not in {dlq for dlq, _ in names}:
            known = ", ".join(dlq for dlq, _ in names)
            raise DeadLetterError(f"no dead-letter queue '{only}' in this app; its DLQs: {known}")
        for dlq, source in names:
            if only is not None and dlq != only:
                continue
            url = self.url(dlq)
            if url is not None:
                yield dlq, url, source

    def count(self) -> int:
        """Messages in every DLQ (SQS's approximate counts: cheap, no message is read)."""
        total = 0
        for _, url, _ in self._queues(None):
            attrs = self.client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            total += sum(int(v) for v in attrs.values())
        return total

    def _scan(self, url: str) -> Iterator[dict[str, Any]]:
        """Receive every visible message once (each stays invisible for the lease)."""
        seen: set[str] = set()
        while len(seen) < _MAX_SCAN:
            got = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=_BATCH,
                VisibilityTimeout=_LEASE,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            fresh = [m for m in got if m["MessageId"] not in seen]
            if not fresh:
                return
            for m in fresh:
                seen.add(m["MessageId"])
                yield m

    def _release(self, url: str, messages: list[dict[str, Any]]) -> None:
        """Make received messages visible again at once (listing must not hide them)."""
        for i in range(0, len(messages), _BATCH):
            chunk = messages[i : i + _BATCH]
            self.client.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for n, m in enumerate(chunk)
                ],
            )

    def messages(self, queue: str | None = None) -> list[DeadLetter]:
        """What sits in the DLQs; the messages stay there (visible again right after)."""
        out: list[DeadLetter] = []
        for dlq, url, source in self._queues(queue):
            got = list(self._scan(url))
            self._release(url, got)
            out.extend(self._describe(dlq, source, m) for m in got)
        return out

    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Send DLQ messages back to their source queues; each is deleted once sent.

        Args:
            queue: Only this DLQ.
            message_id: Only this message.

        Returns:
            The ids of the messages redriven.

        Raises:
            DeadLetterError: A message's source queue is unknown or gone, or SQS refused a
                send (that message stays in its DLQ; those already sent are done).
        """
        done: list[str] = []
        for dlq, url, source in self._queues(queue):
            skipped: list[dict[str, Any]] = []
            try:
                for m in self._scan(url):
                    if message_id is not None and m["MessageId"] != message_id:
                        skipped.append(m)
                        continue
                    try:
                        target = self._target(dlq, source, m)
                        self.client.send_message(
                            QueueUrl=target, MessageBody=redrive_body(m["Body"]))
                    except Exception:
                        skipped.append(m)  # not sent: it stays in the DLQ, visible at once
                        raise
                    self.client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
                    done.append(m["MessageId"])
            finally:
                self._release(url, skipped)
        return done

    def _target(self, dlq: str, source: str | None, m: dict[str, Any]) -> str:
        name = source
        if name is None:  # the delivery DLQ: EventBridge/Scheduler name the target queue
            arn = _attribute(m, "TARGET_ARN")
            name = arn.rsplit(":", 1)[-1] if arn and ":sqs:" in arn else None
        url = self.url(name) if name else None
        if url is None:
            where = f"queue '{name}'" if name else "a target queue (no SQS TARGET_ARN attribute)"
            raise DeadLetterError(
                f"cannot redrive message {m['MessageId']} from {dlq}: {where} does not exist; "
                "it stays in the dead-letter queue"
            )
        return url

    def _describe(self, dlq: str, source: str | None, m: dict[str, Any]) -> DeadLetter:
        kind, function_id, run_id, step = describe_body(m.get("Body", ""))
        attrs = m.get("Attributes", {})
        error = _attribute(m, "stepkit_error") or _attribute(m, "ERROR_MESSAGE")
        code = _attribute(m, "ERROR_CODE")
        if code:
            error = f"{code}: {error}" if error else code
        sent = attrs.get("SentTimestamp")
        if source is None:
            arn = _attribute(m, "TARGET_ARN")
            source = arn.rsplit(":", 1)[-1] if arn else None
        if function_id is None:
            owners = {f.queue: f.function_id for f in self.resources.functions}
            function_id = owners.get(source or "")
        return DeadLetter(
            queue=dlq,
            message_id=m["MessageId"],
            kind=kind,
            function_id=function_id,
            run_id=run_id,
            step=step,
            error=error,
            sent_ts=int(sent) / 1000 if sent else None,
            receive_count=int(attrs.get("ApproximateReceiveCount", 0)),
            source=source,
        )


def _attribute(m: dict[str, Any], name: str) -> str | None:
    value = m.get("MessageAttributes", {}).get(name)
    return str(value["StringValue"]) if value and "StringValue" in value else None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
