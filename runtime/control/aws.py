"""The control plane of a deployed app: its table, queues and bus (``stepkit ... --aws``).

Every failure is one of the control plane's errors whose message is one line that says what
to do (no region, no credentials, a table or queue that is not deployed, an endpoint that
cannot be reached), never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from runtime.backends.aws.resources import ENV_STAGE
from runtime.client import Deployment, send
from runtime.control import (
    CONTROL_ERRORS,
    Cancelled,
    ControlError,
    DeadLetterNotFoundError,
    EventNotFoundError,
    Events,
    Json,
    NotAllowedError,
    NotFoundError,
    RunNotFoundError,
    Sent,
    StepNotFoundError,
    UnreachableError,
)
from runtime.control.views import run_detail, run_summary
from runtime.errors import FunctionRetiredError, StepkitError
from runtime.messages import CancelPayload
from runtime.orchestration.waiting import why_waiting
from runtime.records import Message, MessageKind, RunState

if TYPE_CHECKING:
    from runtime.app import FunctionDef
    from runtime.backends.aws.dlq import DeadLetterQueues
    from runtime.orchestration.protocols import RunQuery

T = TypeVar("T")

#: What the dashboard cannot do over a deployed app, and why (see :meth:`AwsControl.about`).
DISABLED_ON_AWS = {
    "skip_sleep": "a deployed run sleeps its time: skipping a sleep is the dev server's",
    "event_waits": "the table keeps no index of waits by event: open the waiting run instead",
    "event_runs": "listed per event only when it is opened (one read per function it triggers)",
}


def explain(exc: BaseException, *, table: str | None = None) -> str | None:
    """A one-line, actionable message for a failure talking to AWS, or ``None`` if unknown.

    Looks through the exception's causes, since adapters wrap botocore's errors in their own.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, NoRegionError):
            return (
                "no AWS region: set AWS_DEFAULT_REGION, or a region in your "
                "AWS profile (`aws configure`), to the region the app is deployed in"
            )
        if isinstance(seen, NoCredentialsError | PartialCredentialsError):
            return (
                "no AWS credentials: run `aws configure` or `aws sso login`, set AWS_PROFILE, "
                "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(seen, ProfileNotFound):
            return f"{seen}: fix AWS_PROFILE or add the profile with `aws configure`"
        if isinstance(seen, EndpointConnectionError | ConnectTimeoutError):
            return (
                f"cannot reach AWS ({seen}): check the network, the region, and "
                "AWS_ENDPOINT_URL* if set"
            )
        if isinstance(seen, ClientError):
            err = seen.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", ""))
            if code == "ResourceNotFoundException" and table:
                return (
                    f"table {table} not found in this account and region: deploy the app "
                    "(`scripts/cdk.sh deploy`), or point STEPKIT_TABLE/STEPKIT_STAGE and "
                    "AWS_REGION at the deployed one"
                )
            if code in ("UnrecognizedClientException", "InvalidClientTokenId",
                        "ExpiredToken", "ExpiredTokenException", "InvalidSignatureException"):
                return f"AWS refused the credentials ({code}: {message}); refresh them"
            if code in ("AccessDenied", "AccessDeniedException"):
                return f"access denied: {message}"
            return f"AWS error {code}: {message}"
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def one_line_errors(table: str | None = None) -> Iterator[None]:
    """Turn AWS and stepkit failures inside the block into the control plane's errors.

    Raises:
        UnreachableError: AWS could not be used (the message says what to fix).
        ControlError: Another stepkit error (its message).
    """
    try:
        yield
    except CONTROL_ERRORS:
        raise
    except Exception as exc:
        message = explain(exc, table=table)
        if message is not None:
            raise UnreachableError(message) from None
        if isinstance(exc, StepkitError):
            raise ControlError(str(exc)) from None
        raise


def _one_line(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(self: AwsControl, *args: Any, **kwargs: Any) -> T:
        with one_line_errors(self.deployment.table):
            return method(self, *args, **kwargs)

    return wrapper


class AwsControl:
    """The :class:`~runtime.control.ControlPlane` of a deployed app.

    Actions are messages sent to the function's queue, as a worker would send them (the
    worker applies them); listings read the table. Names come from the environment, else
    from this project's ``functions/`` (:meth:`Deployment.resolve`).

    Args:
        deployment: Where the app lives (default: resolved as above).
        clients: boto3 clients by service name (default: created as needed).

    """

    def __init__(self, deployment: Deployment | None = None, *, clients: Any = None) -> None:
        with one_line_errors():
            from runtime.backends.aws.payloads import S3Payloads
            from runtime.backends.aws.resources import ENV_PAYLOAD_BUCKET
            from runtime.backends.aws.store import DynamoStore

            self.deployment = deployment or Deployment.resolve()
            self._clients = clients
            self._events = clients["events"] if clients else None
            bucket = os.environ.get(ENV_PAYLOAD_BUCKET)  # the stack's PayloadBucketName
            self.store = DynamoStore(
                self.deployment.table, client=clients["dynamodb"] if clients else None,
                payloads=S3Payloads(bucket, clients.get("s3") if clients else None)
                if bucket else None,
            )
        self._dlqs: DeadLetterQueues | None = None

    @_one_line
    def send(self, events: Events) -> Sent:
        """Send events to the deployed bus (which does not say which ids it saw before)."""
        d = self.deployment
        return Sent(send(events, app_id=d.app_id, bus=d.bus, client=self._events))

    @_one_line
    def list_runs(self, query: RunQuery) -> list[Json]:
        """Runs, newest first (``since``: created at or after, epoch seconds)."""
        now, fns = time.time(), self._functions()
        lines: dict[tuple[str, str], list[str]] = {}  # each concurrency line read once
        return [run_summary(r, why_waiting(fns.get(r.function_id), r, self.store, now, lines))
                for r in self.store.list_runs(query)]

    @_one_line
    def run(self, run_id: str) -> Json:
        """One run with its step timeline."""
        state = self._state(run_id)
        fn = self._functions().get(state.run.function_id)
        return run_detail(state, fn, why_waiting(fn, state.run, self.store, time.time()))

    @_one_line
    def functions(self) -> Json:
        """The app's functions as deployed from this project's ``functions/``.

        Each with its open debounce or batch windows, read from the table (one Query per
        function that has them), and its pause (one Query for all).
        """
        from runtime.backends.aws.dynamo import StoreError
        from runtime.control.pausing import with_pauses
        from runtime.control.views import function_json, iso
        from runtime.discovery import load_app
        from runtime.orchestration.windows import open_windows

        app, now = load_app(), time.time()
        listing = {"app_id": app.id, "functions": [
            {**function_json(fn), "windows": [{**w, "until": iso(w["until"])}
                                              for w in open_windows(fn, self.store, now)]}
            for fn in sorted(app, key=lambda f: f.id)]}
        try:
            return with_pauses(listing, self.store)
        except StoreError as exc:  # the functions come from functions/: list them anyway
            why = explain(exc, table=self.deployment.table) or str(exc)
            return {**listing, "pauses_unread": why}

    @_one_line
    def events(self, *, limit: int = 50, summary: bool = False) -> list[Json]:
        """Recently received events, newest first (the table's event log).

        A ``summary`` is read from the event index alone: its cost does not grow with the
        events' size.
        """
        return self.store.list_events(limit, summary=summary)

    @_one_line
    def event(self, event_id: str) -> Json:
        """A logged event and the runs it triggered (``waits``: not indexed by event here)."""
        from runtime.discovery import load_app
        from runtime.orchestration.ids import run_id_for_event

        found = self.store.received_event(event_id)  # one GetItem, by the id's key
        if found is None:
            raise EventNotFoundError(
                f"no event '{event_id}' in the event log of table {self.deployment.table} "
                "(it keeps today's and yesterday's)")
        runs = []
        for fn in sorted(load_app().triggered_by(found), key=lambda f: f.id):
            state = self.store.load(run_id_for_event(fn.id, event_id))
            if state is not None:
                runs.append(run_summary(state.run))
        return {**found, "runs": runs, "waits": None}

    @_one_line
    def cancel(self, run_id: str) -> Cancelled:
        """Queue a cancel for the run's worker; the run's status as it is now."""
        state = self._state(run_id)
        if state.run.status.finished:
            return Cancelled(False, state.run.status.value)
        self._enqueue(Message(MessageKind.CANCEL, state.run.function_id, run_id,
                              payload=CancelPayload("cancelled by user").to_json()))
        return Cancelled(None, state.run.status.value, queued=True)

    @_one_line
    def rerun(self, run_id: str, from_step: str | None = None, *,
              new_id: str | None = None) -> str:
        """Queue a new run of the run's function with its events (a fork, ``from_step``)."""
        from runtime.orchestration.manual import rerun_message

        state = self._state(run_id)
        try:
            msg = rerun_message(state, from_step, time.time(), new_id)
        except LookupError as exc:
            raise StepNotFoundError(str(exc)) from None
        self._enqueue(msg)
        return msg.run_id

    @_one_line
    def invoke(self, function_id: str, data: Mapping[str, Any] | None = None) -> str:
        """Queue a run of ``function_id`` started by hand; its id."""
        from runtime.discovery import load_app
        from runtime.errors import ConfigurationError
        from runtime.orchestration.manual import invoke_message, startable

        # The deployed app's code is this project's functions/ when their app ids agree:
        # then a retired function is refused here, as the dev server refuses it. (Otherwise
        # the START is sent, and the deployed worker of a retired function drops it.)
        try:
            app = load_app()
        except ConfigurationError:
            app = None
        fn = app.find(function_id) if app is not None and app.id == self.deployment.app_id \
            else None
        if fn is not None:
            try:
                startable(fn)
            except FunctionRetiredError as exc:
                raise NotAllowedError(str(exc)) from None
        msg = invoke_message(function_id, data, time.time())
        self._enqueue(msg)
        return msg.run_id

    @_one_line
    def fire_cron(self, function_id: str) -> str:
        """Send what the function's cron schedule sends, for a fire at this second; the run id.

        The body is the schedule's input as the stack defines it (:class:`AppResources`, from
        this project's ``functions/``), its scheduled time filled in as EventBridge Scheduler
        fills it, sent to the function's queue; the worker starts the run a scheduled fire at
        that second would (the same run id, so a fire it already started starts nothing).
        """
        from runtime.backends.aws.resources import AppResources
        from runtime.discovery import load_app
        from runtime.orchestration.intake import cron_message

        app = load_app()
        fn = app.get(function_id)  # FunctionNotFoundError names the registered functions
        schedules = AppResources.for_app(app, stage=self._stage()).function(fn.id).schedules
        if not schedules:
            raise NotAllowedError(f"function '{fn.id}' has no cron trigger to fire")
        at = float(int(time.time()))  # Scheduler's scheduled time is in whole seconds
        body = schedules[0].input_at(at)
        self._sqs().send_message(QueueUrl=self._queue_url(fn.id), MessageBody=body)
        return cron_message(fn, json.loads(body)["cron"], at).run_id

    def skip_sleep(self, run_id: str, key: str) -> bool:
        """Refused: skipping a sleep is the dev server's, a deployed run sleeps its time."""
        raise NotAllowedError(f"cannot skip a sleep of run '{run_id}' in a deployed app: "
                              "skipping is for the dev server")

    def _state(self, run_id: str) -> RunState:
        state = self.store.load(run_id)
        if state is None:
            raise RunNotFoundError(f"no run '{run_id}' in table {self.deployment.table}")
        return state

    def _stage(self) -> str | None:
        return os.environ.get(ENV_STAGE) or None

    def _sqs(self) -> Any:
        import boto3

        return self._clients["sqs"] if self._clients else boto3.client("sqs")

    def _queue_url(self, function_id: str) -> str:
        """The URL of a function's queue in the deployed app (a clear error if it has none)."""
        from runtime.backends.aws.resources import function_queue_name

        sqs = self._sqs()
        name = function_queue_name(self.deployment.app_id, function_id, self._stage())
        try:
            return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except sqs.exceptions.QueueDoesNotExist:
            raise NotFoundError(
                f"no queue '{name}': is '{function_id}' a function of the deployed "
                f"app '{self.deployment.app_id}'?") from None

    def _enqueue(self, message: Message) -> None:
        """Send a message to its function's queue, as a worker would (large ones via S3)."""
        from runtime.backends.aws.queue import SqsQueue
        from runtime.orchestration.clock import SystemClock

        url = self._queue_url(message.function_id)
        SqsQueue(lambda _: url, SystemClock(), self._sqs(),
                 payloads=self.store.payloads).send([message])

    def dead_letter_queues(self) -> DeadLetterQueues:
        """The app's DLQs (names derived from ``functions/`` as the CDK app derives them)."""
        if self._dlqs is None:
            from runtime.backends.aws.dlq import DeadLetterQueues
            from runtime.backends.aws.resources import AppResources
            from runtime.discovery import load_app

            resources = AppResources.for_app(load_app(), stage=self._stage())
            self._dlqs = DeadLetterQueues(resources, self._sqs())
        return self._dlqs

    @_one_line
    def dead_letters(self) -> list[Json]:
        """What sits in the DLQs, as ``stepkit dlq list --json`` prints it."""
        return [d.to_json() for d in self.dead_letter_queues().messages()]

    @_one_line
    def dead_letter_count(self) -> int:
        """How many messages sit in the DLQs."""
        return self.dead_letter_queues().count()

    @_one_line
    def redrive(self, *, queue: str | None = None, message_id: str | None = None) -> list[str]:
        """Send DLQ messages back to their queues; the ids redriven."""
        done = self.dead_letter_queues().redrive(queue=queue, message_id=message_id)
        if message_id is not None and not done:
            raise DeadLetterNotFoundError(f"no dead-lettered message '{message_id}'")
        return done

    @_one_line
    def pause(self, function_id: str, reason: str | None = None) -> Json:
        """Pause a function of this project's app: its ``GATE#pause`` item in the table.

        Its workers see it within ``PAUSE_CACHE_SECONDS``; its queue keeps being consumed
        (held messages are sent again), so nothing waits out SQS's retention.
        """
        from runtime.control.pausing import pause_function
        from runtime.discovery import load_app
        from runtime.orchestration.clock import SystemClock

        load_app().get(function_id)  # FunctionNotFoundError names the registered functions
        return pause_function(self.store, SystemClock(), function_id, reason)

    @_one_line
    def resume(self, function_id: str) -> Json:
        """Resume a function of this project's app; its held messages go on within a minute."""
        from runtime.control.pausing import resume_function
        from runtime.discovery import load_app
        from runtime.orchestration.clock import SystemClock

        load_app().get(function_id)
        return resume_function(self.store, SystemClock(), function_id)

    # -- event keys: the table's ``GATE#eventkey`` items, written only by these ------------------

    @_one_line
    def event_keys(self) -> list[Json]:
        """The deployed app's event keys (one Query), newest first."""
        from runtime.control.keys import list_keys
        from runtime.orchestration.clock import SystemClock

        return list_keys(self.store, SystemClock())

    @_one_line
    def create_key(self, *, label: str = "", prefixes: Sequence[str] = ()) -> Json:
        """Make an event key for the deployed endpoint; only its digest goes to the table."""
        from runtime.control.keys import create_key
        from runtime.orchestration.clock import SystemClock

        return create_key(self.store, SystemClock(), label=label, prefixes=prefixes)

    @_one_line
    def rotate_key(self, key_id: str, grace: float = 0.0) -> Json:
        """A new key in ``key_id``'s place; the endpoint refuses the old one after ``grace``."""
        from runtime.control.keys import rotate_key
        from runtime.orchestration.clock import SystemClock

        return rotate_key(self.store, SystemClock(), key_id, grace)

    @_one_line
    def revoke_key(self, key_id: str) -> Json:
        """Revoke a key: the endpoint's containers refuse it within ``KEY_CACHE_SECONDS``."""
        from runtime.control.keys import revoke_key
        from runtime.orchestration.clock import SystemClock

        return revoke_key(self.store, SystemClock(), key_id)

    def about(self) -> Json:
        """Where this plane points, for a person: app, stage, region, table, bus, endpoint.

        ``disabled`` names what a deployed app cannot do here, with why (the dashboard shows
        those actions greyed out with the reason).
        """
        d, meta = self.deployment, self.store.client.meta
        region, endpoint = meta.region_name, str(meta.endpoint_url)
        custom = None if endpoint.endswith(".amazonaws.com") else endpoint
        stage = self._stage()
        label = (f"AWS: app '{d.app_id}'" + (f", stage '{stage}'" if stage else "")
                 + f", {region}, table {d.table}" + (f" at {custom}" if custom else ""))
        return {"target": "aws", "app_id": d.app_id, "stage": stage, "region": region,
                "table": d.table, "bus": d.bus, "endpoint": custom, "label": label,
                "disabled": DISABLED_ON_AWS}

    def _functions(self) -> Mapping[str, FunctionDef]:
        """The deployed functions as this project defines them, by id, if they can be read.

        None when ``functions/`` cannot be imported: runs are still shown, without what only
        their function knows (its retries, its concurrency lines).
        """
        from runtime.discovery import load_app
        from runtime.errors import ConfigurationError

        try:
            return load_app().functions
        except ConfigurationError:
            return {}
