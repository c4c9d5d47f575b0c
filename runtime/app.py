"""The public registration API: ``App``, ``@app.function`` and its triggers and options."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from runtime.deploy import AwsOptions
from runtime.durations import MAX_SLEEP, user_duration
from runtime.errors import ConfigurationError, FunctionNotFoundError
from runtime.events import FUNCTION_FAILED, name_problem, shown_name
from runtime.expressions import Expression, ExpressionError, match_expression
from runtime.flow import (
    BatchEvents,
    Checkpointing,
    Concurrency,
    Debounce,
    FlowSpec,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
)
from runtime.ingress.webhooks import (
    Transform,
    Verifier,
    WebhookSource,
    secret_refs,
    webhook_source,
)

if TYPE_CHECKING:
    from runtime.cron import CronSchedule
    from runtime.engine.context import Context

Handler = Callable[["Context"], Any]
MAX_TRIGGERS = 10
MAX_RETRIES = 20
_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class TriggerEvent:
    """Start a run for each event with this name, if the optional CEL ``if_`` holds.

    Args:
        event: The event name, e.g. ``"user/signup"``.
        if_: CEL over ``event``, e.g. ``"event.data.plan == 'pro'"``.
        data: A pydantic model of the event's ``data``: events of this name are validated
            against it when sent through stepkit (dev server, CLI, ``Harness``), and the
            handler gets ``ctx.data`` as an instance of it.
    """

    event: str
    if_: str | None = None
    data: type[Any] | None = None


@dataclass(frozen=True)
class TriggerCron:
    """Start a run on a schedule: 5-field cron, optionally prefixed ``TZ=Area/City``.

    Args:
        cron: e.g. ``"0 9 * * *"`` or ``"TZ=Europe/Paris 0 9 * * 1-5"``.
    """

    cron: str


Trigger = TriggerEvent | TriggerCron


@dataclass(frozen=True)
class CancelOn:
    """Cancel a run when a matching event arrives.

    Args:
        event: The event name to listen for.
        if_: CEL over ``event`` (the run's triggering event) and ``async`` (the incoming one).
        match: Shorthand: a field path that must be equal in both, e.g. ``"data.order_id"``.
        timeout: Stop listening after this long (duration string or ``timedelta``).
    """

    event: str
    if_: str | None = None
    match: str | None = None
    timeout: str | timedelta | None = None


@dataclass(frozen=True)
class Timeouts:
    """Run time limits; a run past either is cancelled.

    Args:
        start: Longest wait between the triggering event and the run starting.
        finish: Longest time between the run starting and finishing.
    """

    start: str | timedelta | None = None
    finish: str | timedelta | None = None


@dataclass(frozen=True)
class EventFilter:
    """A compiled event trigger."""

    event: str
    condition: Expression | None
    model: type[Any] | None = None  # the pydantic model of the event's data, if declared

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` triggers this filter."""
        if event.get("name") != self.event:
            return False
        return self.condition is None or self.condition.matches_vars({"event": event})


@dataclass(frozen=True)
class CancelSpec:
    """A compiled ``cancel_on``."""

    event: str
    expression: str
    timeout: timedelta | None


@dataclass(frozen=True)
class FunctionDef:
    """A registered durable function. Created by :meth:`App.function`."""

    app_id: str
    id: str
    handler: Handler
    events: tuple[EventFilter, ...]
    crons: tuple[CronSchedule, ...]
    retries: int
    cancel_on: tuple[CancelSpec, ...]
    start_timeout: timedelta | None
    finish_timeout: timedelta | None
    aws: AwsOptions = field(default_factory=AwsOptions)
    flow: FlowSpec = field(default_factory=FlowSpec)
    #: Draining before removal: no trigger is in effect (no event or cron starts it, no
    #: rule or schedule is deployed for it) and it cannot be invoked; its runs in flight
    #: go on with its code. Once none is left, it can be deleted.
    retired: bool = False
    #: With checkpointing: how long one invocation keeps performing steps (None: one step).
    checkpoint: timedelta | None = None
    #: ``finished_event="full"``: its ``function.finished`` events copy the trigger and output.
    full_finished_event: bool = False

    def __call__(self, ctx: Context) -> Any:
        """Call the handler directly (for unit tests of pure logic)."""
        return self.handler(ctx)

    def triggered_by(self, event: dict[str, Any]) -> bool:
        """Whether an event starts a run of this function."""
        return any(f.matches(event) for f in self.events)


def _check_id(value: str, where: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigurationError(
            f"{where}: invalid id {value!r}; use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def _duration(value: str | timedelta | None, where: str) -> timedelta | None:
    if value is None:
        return None
    try:
        return user_duration(value, where=where)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _compile(source: str, where: str, names: Sequence[str] = ("event",)) -> Expression:
    try:
        Expression.check_names(source, names, where=where)
        return Expression.compile(source, where=where)
    except ExpressionError as exc:
        raise ConfigurationError(str(exc)) from None


def _check_event_name(name: object, where: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise ConfigurationError(f"{where}: invalid event name {shown_name(name)}: {problem}")
    assert isinstance(name, str)
    return name


def _timeout(value: str | timedelta | None, where: str) -> timedelta | None:
    found = _duration(value, where)
    if found is not None and found > MAX_SLEEP:
        raise ConfigurationError(f"{where}: {found} is over the one-year limit ({MAX_SLEEP})")
    return found


class App:
    """A set of durable functions deployed together.

    Args:
        app_id: Names the app; it prefixes AWS resource names and is the EventBridge source.
    """

    def __init__(self, app_id: str) -> None:
        self.id = _check_id(app_id, "App")
        self._functions: dict[str, FunctionDef] = {}
        self._webhooks: dict[str, WebhookSource] = {}
        #: ``data=`` models by event name, built on first use (``models_for``).
        self._models: dict[str, list[tuple[FunctionDef, Any]]] | None = None

    def webhook(
        self,
        name: str,
        *,
        verify: Verifier,
        transform: Transform | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> WebhookSource:
        """Declare a webhook source: third parties post signed requests to ``/webhooks/<name>``.

        A request whose signature verifies becomes events (one per request by default,
        ``<name>/webhook`` with the JSON body as its data), published as ``stepkit send``
        publishes; the provider's delivery id is the event id, so its retries start nothing
        new. One that does not verify is answered 401 and starts nothing.

        Args:
            name: The path segment (lower-case letters, digits, ``-``, ``_``).
            verify: The provider's signature scheme: ``Stripe(secret=...)``,
                ``GitHub(secret=...)`` or ``Hmac(secret=..., ...)`` (``runtime.webhooks``).
            transform: The verified request -> events: a function of
                ``(WebhookRequest, Verified)`` returning an event, a list or ``None``, or a
                mapping of event fields (see ``runtime.ingress.webhooks``).
            secrets: Where the verifier's secret lives on AWS, as in ``AwsOptions.secrets``
                (``{"STRIPE_WEBHOOK_SECRET": "secretsmanager:stripe/webhook"}``); locally
                it is the environment variable of that name.

        Raises:
            ConfigurationError: An argument is invalid, or the name is taken.
        """
        source = webhook_source(name, verify, transform, secrets)
        if name in self._webhooks:
            raise ConfigurationError(f"webhook {name!r} is already declared in app '{self.id}'")
        secret_refs([*self._webhooks.values(), source])  # one name, one secret
        self._webhooks[name] = source
        return source

    @property
    def webhooks(self) -> dict[str, WebhookSource]:
        """Declared webhook sources by name."""
        return dict(self._webhooks)

    def find_webhook(self, name: str) -> WebhookSource | None:
        """The webhook source ``name``, or ``None``."""
        return self._webhooks.get(name)

    def function(
        self,
        *,
        id: str,
        trigger: Trigger | Sequence[Trigger],
        retries: int = 4,
        cancel_on: CancelOn | Sequence[CancelOn] = (),
        timeouts: Timeouts | None = None,
        on_failure: Handler | None = None,
        aws: AwsOptions | Mapping[str, Any] | None = None,
        idempotency: str | None = None,
        throttle: Throttle | Mapping[str, Any] | None = None,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
        concurrency: int | Concurrency | Mapping[str, Any] | Sequence[Any] | None = None,
        singleton: Singleton | Mapping[str, Any] | None = None,
        priority: Priority | Mapping[str, Any] | None = None,
        debounce: Debounce | Mapping[str, Any] | None = None,
        batch_events: BatchEvents | Mapping[str, Any] | None = None,
        checkpointing: bool | Checkpointing | Mapping[str, Any] | None = None,
        finished_event: str = "ids",
        retired: bool = False,
        **unknown: Any,
    ) -> Callable[[Handler], FunctionDef]:
        """Register a durable function.

        Args:
            id: Unique within the app.
            trigger: One trigger or a list of up to 10.
            retries: Retries per step and for the handler itself (0-20; 4 means 5 attempts).
            cancel_on: Events that cancel a running run.
            timeouts: Start and finish time limits.
            on_failure: Called as its own function with the ``stepkit/function.failed`` event
                when a run of this function fails.
            aws: How it is deployed (memory, timeout, concurrency, permissions, environment,
                secrets, VPC, layers): :class:`~runtime.deploy.AwsOptions` or a dict of its
                fields. The ``on_failure`` function gets the same.
            idempotency: CEL over ``event``: at most one run per key value per 24 h; later
                events with the same key start no run (recorded as Skipped).
            throttle: :class:`~runtime.flow.Throttle`: starts over the rate are delayed.
            rate_limit: :class:`~runtime.flow.RateLimit`: starts over the rate are skipped.
            concurrency: A limit, a :class:`~runtime.flow.Concurrency` or a list of up to
                two: executing steps at once, per key and per function or app.
            singleton: :class:`~runtime.flow.Singleton`: one running run per key.
            priority: :class:`~runtime.flow.Priority`: moves runs ahead in the concurrency
                line (needs ``concurrency``).
            debounce: :class:`~runtime.flow.Debounce`: one run with the last event once
                events stop coming for ``period``.
            batch_events: :class:`~runtime.flow.BatchEvents`: one run for many events
                (``ctx.events``), when the batch is full or its timeout passes.
            checkpointing: ``True`` or :class:`~runtime.flow.Checkpointing`: consecutive
                steps run in one invocation, each recorded before the next.
            finished_event: What its ``stepkit/function.finished`` events carry: ``"ids"``
                (ids, status, error and the trigger's id and name) or ``"full"`` (also the
                trigger and the output, each while under 64 KiB).
            retired: Drain it before removing it: no new runs (its triggers are kept in the
                code but none is in effect, and it cannot be invoked), while its runs in
                flight finish with this code. ``stepkit deploy-check`` says when none is left.
            **unknown: Refused with a clear error (a misspelt option never passes silently).

        Raises:
            ConfigurationError: An option is unknown or invalid, or the id is taken.
        """
        if unknown:
            raise ConfigurationError(_unknown_options(id, unknown))
        settings = _aws_options(id, aws)
        flow = _flow_spec(id, idempotency, throttle, rate_limit, concurrency, singleton, priority,
                          debounce, batch_events)
        checkpoint = _checkpoint(id, checkpointing, settings)
        if finished_event not in ("ids", "full"):
            raise ConfigurationError(
                f"function '{id}': finished_event is {finished_event!r}; use 'ids' or 'full'")

        def register(handler: Handler) -> FunctionDef:
            fn = self._build(id, handler, trigger, retries, cancel_on, timeouts, settings)
            fn = replace(fn, flow=flow, checkpoint=checkpoint,
                         full_finished_event=finished_event == "full")
            if retired:  # validated as written, in effect none
                fn = replace(fn, events=(), crons=(), retired=True)
            self._add(fn)
            if on_failure is not None:
                failure = self._build(
                    f"{id}-failure",
                    on_failure,
                    TriggerEvent(FUNCTION_FAILED, if_=f"event.data.function_id == '{id}'"),
                    retries,
                    (),
                    None,
                    settings,
                )
                self._add(failure)
            return fn

        return register

    def models_for(self, name: str) -> list[tuple[FunctionDef, Any]]:
        """The ``data=`` models declared for events named ``name``, with their functions.

        Indexed by name once, so checking an event costs the same in an app of 200
        functions as in one of 2.
        """
        if self._models is None:
            index: dict[str, list[tuple[FunctionDef, Any]]] = {}
            for fn in self._functions.values():
                for f in fn.events:
                    if f.model is not None:
                        index.setdefault(f.event, []).append((fn, f.model))
            self._models = index
        return self._models.get(name, [])

    def _add(self, fn: FunctionDef) -> None:
        self._models = None
        if fn.id in self._functions:
            raise ConfigurationError(
                f"function id '{fn.id}' is already registered in app '{self.id}'"
            )
        self._functions[fn.id] = fn

    def _build(
        self,
        fn_id: str,
        handler: Handler,
        trigger: Trigger | Sequence[Trigger],
        retries: int,
        cancel_on: CancelOn | Sequence[CancelOn],
        timeouts: Timeouts | None,
        aws: AwsOptions,
    ) -> FunctionDef:
        where = f"function '{fn_id}'"
        _check_id(fn_id, "function")
        if not callable(handler):
            raise ConfigurationError(f"{where}: handler is not callable")
        if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
            raise ConfigurationError(
                f"{where}: the handler is an async function; handlers and steps run "
                "synchronously (one step per invocation, replayed), so define it with 'def' "
                "and run async code inside a step with asyncio.run(...)")
        triggers = [trigger] if isinstance(trigger, TriggerEvent | TriggerCron) else list(trigger)
        if not triggers:
            raise ConfigurationError(f"{where}: needs at least one trigger")
        if len(triggers) > MAX_TRIGGERS:
            raise ConfigurationError(
                f"{where}: {len(triggers)} triggers; the maximum is {MAX_TRIGGERS}"
            )
        events: list[EventFilter] = []
        crons: list[CronSchedule] = []
        for i, t in enumerate(triggers):
            if isinstance(t, TriggerEvent):
                _check_event_name(t.event, f"{where} trigger {i}")
                cond = _compile(t.if_, f"{where} trigger '{t.event}' if") if t.if_ else None
                if t.data is not None and not (isinstance(t.data, type)
                                               and hasattr(t.data, "model_validate")):
                    raise ConfigurationError(
                        f"{where} trigger {i}: data= must be a pydantic model class (a "
                        f"BaseModel subclass), got {t.data!r}")
                events.append(EventFilter(t.event, cond, t.data))
            elif isinstance(t, TriggerCron):
                # Here, not at import: an app without crons keeps cron parsing (and zoneinfo)
                # off a Lambda cold start.
                from runtime.cron import CronSchedule

                try:
                    crons.append(CronSchedule.parse(t.cron))
                except ValueError as exc:
                    raise ConfigurationError(f"{where}: {exc}") from None
            else:
                raise ConfigurationError(
                    f"{where}: trigger {i} is {type(t).__name__}; use TriggerEvent or TriggerCron"
                )
        if (
            isinstance(retries, bool)
            or not isinstance(retries, int)
            or not 0 <= retries <= MAX_RETRIES
        ):
            raise ConfigurationError(
                f"{where}: retries must be an integer 0-{MAX_RETRIES}, got {retries!r}"
            )
        cancels = [cancel_on] if isinstance(cancel_on, CancelOn) else list(cancel_on)
        specs = []
        for i, c in enumerate(cancels):
            if not isinstance(c, CancelOn):
                raise ConfigurationError(
                    f"{where}: cancel_on[{i}] is {type(c).__name__} {c!r}; use "
                    f"CancelOn(event=...) (e.g. CancelOn(event={c!r}) for an event name)")
            cwhere = f"{where} cancel_on '{c.event}'"
            _check_event_name(c.event, f"{where} cancel_on")
            if c.match and c.if_:
                raise ConfigurationError(f"{cwhere}: give match or if_, not both")
            source = ""
            if c.match:
                try:
                    source = match_expression(c.match)
                except ExpressionError as exc:
                    raise ConfigurationError(f"{cwhere}: {exc}") from None
            elif c.if_:
                source = c.if_
            if source:
                _compile(source, cwhere, ("event", "async"))
            specs.append(CancelSpec(c.event, source, _timeout(c.timeout, f"{cwhere} timeout")))
        limits = timeouts or Timeouts()
        return FunctionDef(
            app_id=self.id,
            id=fn_id,
            handler=handler,
            events=tuple(events),
            crons=tuple(crons),
            retries=retries,
            cancel_on=tuple(specs),
            start_timeout=_timeout(limits.start, f"{where} timeouts.start"),
            finish_timeout=_timeout(limits.finish, f"{where} timeouts.finish"),
            aws=aws,
        )

    @property
    def functions(self) -> dict[str, FunctionDef]:
        """Registered functions by id."""
        return dict(self._functions)

    def find(self, function_id: str) -> FunctionDef | None:
        """The function with this id, or ``None``.

        Every message looks its function up: unlike ``functions``, this copies nothing.
        """
        return self._functions.get(function_id)

    def get(self, function_id: str) -> FunctionDef:
        """The function with this id.

        Raises:
            FunctionNotFoundError: None is registered.
        """
        try:
            return self._functions[function_id]
        except KeyError:
            known = ", ".join(sorted(self._functions)) or "none"
            raise FunctionNotFoundError(
                f"no function '{function_id}' in app '{self.id}' (registered: {known})"
            ) from None

    def __iter__(self) -> Iterator[FunctionDef]:
        return iter(self._functions.values())

    def triggered_by(self, event: dict[str, Any]) -> list[FunctionDef]:
        """Functions whose event triggers match ``event``."""
        return [fn for fn in self._functions.values() if fn.triggered_by(event)]


_OPTIONS = ("id", "trigger", "retries", "cancel_on", "timeouts", "on_failure", "aws",
            "idempotency", "throttle", "rate_limit", "concurrency", "singleton", "priority",
            "debounce", "batch_events", "checkpointing", "finished_event")
# Keyword options of earlier versions: reserved concurrency dead-lettered throttled messages.
_RENAMED = {"memory_mb": "memory_mb", "timeout_s": "timeout_s",
            "reserved_concurrency": "max_concurrency", "batch_size": "sqs_batch_size"}


def _unknown_options(fn_id: Any, unknown: Mapping[str, Any]) -> str:
    """The error for keyword options ``App.function`` does not take, with a likely fix."""
    import difflib  # only for this error: off a Lambda cold start

    hints = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, _OPTIONS, n=1)
        near = difflib.get_close_matches(name, list(AwsOptions.model_fields), n=1)
        if name in _RENAMED:
            hints.append(f"'{name}' (now aws=AwsOptions({_RENAMED[name]}=...))")
        elif close:
            hints.append(f"'{name}' (did you mean '{close[0]}'?)")
        elif near:
            hints.append(f"'{name}' (an AWS setting: aws=AwsOptions({near[0]}=...))")
        else:
            hints.append(f"'{name}'")
    return (
        f"function '{fn_id}': unknown option(s) {', '.join(hints)}; "
        f"App.function takes {', '.join(_OPTIONS)}"
    )


def _aws_options(fn_id: Any, aws: AwsOptions | Mapping[str, Any] | None) -> AwsOptions:
    """Validate ``aws=`` into :class:`AwsOptions`, naming the function and the setting."""
    settings = _aws_model(fn_id, aws)
    too_small = settings.memory_too_small()
    if too_small:
        raise ConfigurationError(f"function '{fn_id}': {too_small}")
    return settings


def _aws_model(fn_id: Any, aws: AwsOptions | Mapping[str, Any] | None) -> AwsOptions:
    """``aws=`` as :class:`AwsOptions`, as pydantic validates it (AWS's own ranges)."""
    if aws is None:
        return AwsOptions()
    if isinstance(aws, AwsOptions):
        return aws
    if not isinstance(aws, Mapping):
        raise ConfigurationError(
            f"function '{fn_id}': aws must be AwsOptions(...) or a dict, got {type(aws).__name__}"
        )
    try:
        return AwsOptions.model_validate(dict(aws))
    except ValidationError as exc:
        raise ConfigurationError(f"function '{fn_id}': {_describe(exc)}") from None


def _describe(exc: ValidationError, option: str = "aws") -> str:
    """Pydantic's errors as ``<option>.<field>: <message> (got <value>)``, one per line."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (option, *err["loc"]))
        got = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        msg = msg.removeprefix(f"{err['loc'][-1]}: ") if err["loc"] else msg
        lines.append(f"{where}: {msg} (got {got!r})")
    return "; ".join(lines)


def _model(fn_id: Any, option: str, model: type[Any], value: Any) -> Any:
    """Validate one flow-control option into its model, naming the function and option."""
    if value is None or isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"function '{fn_id}': {option} must be {model.__name__}(...) or a dict, "
            f"got {type(value).__name__}"
        )
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise ConfigurationError(f"function '{fn_id}': {_describe(exc, option)}") from None


def _checkpoint(fn_id: Any, value: Any, aws: AwsOptions) -> timedelta | None:
    """Validate ``checkpointing=`` into how long one invocation may keep going (or None)."""
    if value is None or value is False:
        return None
    option = Checkpointing() if value is True else _model(fn_id, "checkpointing",
                                                           Checkpointing, value)
    timeout = timedelta(seconds=aws.timeout_s)
    runtime = option.max_runtime or timeout / 2
    if runtime >= timeout:
        raise ConfigurationError(
            f"function '{fn_id}': checkpointing max_runtime ({runtime}) must be shorter than "
            f"the Lambda timeout (aws timeout_s={aws.timeout_s}), so the invocation hands the "
            "run back before it is killed")
    return runtime


def _flow_spec(
    fn_id: Any,
    idempotency: Any,
    throttle: Any,
    rate_limit: Any,
    concurrency: Any,
    singleton: Any,
    priority: Any,
    debounce: Any = None,
    batch_events: Any = None,
) -> FlowSpec:
    """Validate the flow-control options of one function (see :mod:`runtime.flow`)."""
    where = f"function '{fn_id}'"
    if idempotency is not None:
        if not isinstance(idempotency, str) or not idempotency.strip():
            raise ConfigurationError(
                f"{where}: idempotency must be a CEL expression over event, e.g. "
                f"'event.data.order_id', got {idempotency!r}"
            )
        _compile(idempotency, f"{where} idempotency")
    items = (
        [] if concurrency is None
        else list(concurrency) if isinstance(concurrency, list | tuple) else [concurrency]
    )
    if len(items) > 2:
        raise ConfigurationError(
            f"{where}: concurrency takes at most 2 constraints, got {len(items)}"
        )
    limits = tuple(  # a bare number is the limit (True is refused by the strict int)
        _model(fn_id, f"concurrency[{i}]" if len(items) > 1 else "concurrency", Concurrency,
               {"limit": c} if isinstance(c, int) else c)
        for i, c in enumerate(items)
    )
    spec = FlowSpec(
        idempotency=idempotency,
        throttle=_model(fn_id, "throttle", Throttle, throttle),
        rate_limit=_model(fn_id, "rate_limit", RateLimit, rate_limit),
        concurrency=limits,
        singleton=_model(fn_id, "singleton", Singleton, singleton),
        priority=_model(fn_id, "priority", Priority, priority),
        debounce=_model(fn_id, "debounce", Debounce, debounce),
        batch=_model(fn_id, "batch_events", BatchEvents, batch_events),
    )
    if spec.window is not None:
        name = "batch_events" if spec.batch is not None else "debounce"
        rules = {"debounce": spec.debounce if spec.batch is not None else None,
                 "idempotency": spec.idempotency, "rate_limit": spec.rate_limit,
                 "singleton": spec.singleton, "throttle": spec.throttle}
        others = [rule for rule, value in rules.items() if value is not None]
        if others:
            raise ConfigurationError(
                f"{where}: {name} cannot be combined with {', '.join(others)} (the run of a "
                "window of events has no single event to apply them to)"
            )
    if spec.priority is not None and not spec.concurrency:
        raise ConfigurationError(
            f"{where}: priority orders runs waiting for a concurrency slot; give concurrency too"
        )
    return spec
