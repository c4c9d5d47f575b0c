"""Bulk actions by filter: cancel every matching run, or replay failed and cancelled ones.

Written once over the :class:`~runtime.control.ControlPlane`, so the same operation runs in
process (the dev server's API, the test harness), over a dev server's HTTP API and against
a deployed app (the CLI's ``--aws``). An operation:

- lists its runs first, newest first, a page at a time through the listing index (never a
  scan), as far back as ``since`` and no later than the moment it began (``until``): runs
  it starts itself, or that start while it works, are never its targets;
- with ``dry_run``, stops there and says how many runs match and which (the first few);
- otherwise acts on each run at most ``rate`` times a second, calling ``progress`` after
  each, and reports what it did.

A replay is resumable. The operation has an id, a ULID whose time is the moment it began;
each replay's run id is derived from that id and the original's, so running the operation
again with the same id (``resume``) finds the replays it already started and starts none of
them twice (a START whose run exists creates nothing, even one still queued). Its ``since``
and ``until`` are fixed by that moment too. A cancel needs no id: cancelling a finished run
does nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ulid import ULID

from runtime.control import (
    CONTROL_ERRORS,
    ControlPlane,
    Json,
    NotFoundError,
    RunNotFoundError,
)
from runtime.durations import parse_instant
from runtime.expressions import Expression
from runtime.orchestration.protocols import RunQuery
from runtime.orchestration.pushback import is_pushback
from runtime.records import RunStatus

#: How many runs one listing call asks for (the dev API answers up to 1000).
PAGE = 200
#: Actions a second unless told otherwise: well under a function's default concurrency and
#: a few write units a second on the table (ARCHITECTURE.md, "Bulk actions").
DEFAULT_RATE = 20.0
#: How many run ids a report lists (a dry run's sample, the new runs, the errors).
SAMPLE = 20
#: What a replay may replay.
REPLAYABLE = (RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class RunFilter:
    """Which runs a bulk action touches.

    Attributes:
        function_id: Only this function's runs.
        status: Only runs in this status.
        since: Only runs created at or after this time (epoch seconds).
        until: Only runs created before this time; the operation's start if not given.
        condition: A CEL expression over the triggering event (``event``, the first of
            them, and ``events``), as a trigger's ``if``: a run matches if it is true.
    """

    function_id: str | None = None
    status: RunStatus | None = None
    since: float | None = None
    until: float | None = None
    condition: str | None = None

    def query(self, until: float, limit: int) -> RunQuery:
        """The listing query for a page of runs created before ``until``."""
        return RunQuery(function_id=self.function_id, status=self.status, limit=limit,
                        since=self.since, until=until)

    def expression(self) -> Expression | None:
        """The compiled ``condition``.

        Raises:
            ExpressionError: It is not valid CEL.
        """
        if self.condition is None:
            return None
        return Expression.compile(self.condition, where="bulk filter --if")


@dataclass(frozen=True)
class Operation:
    """One bulk operation: its id, whose ULID time is the moment it began.

    Attributes:
        id: A ULID.
        resumed: Made by :meth:`resume`: its replays may exist already, so each is looked
            up first (``already_replayed``); a new operation's cannot, and skips the read.
    """

    id: str
    resumed: bool = False

    @classmethod
    def begin(cls, now: float | None = None) -> Operation:
        """A new operation beginning now."""
        return cls(str(ULID.from_timestamp(time.time() if now is None else now)))

    @classmethod
    def resume(cls, operation_id: str) -> Operation:
        """The operation ``operation_id`` again (it began when its id says).

        Raises:
            ValueError: ``operation_id`` is not a ULID.
        """
        try:
            return cls(str(ULID.from_str(operation_id)), resumed=True)
        except ValueError:
            raise ValueError(f"operation id: expected a ULID (26 characters) as printed "
                             f"when the operation began, got {operation_id!r}") from None

    @property
    def began_at(self) -> float:
        """When it began (epoch seconds, whole milliseconds)."""
        return ULID.from_str(self.id).milliseconds / 1000

    def replay_id(self, original_run_id: str) -> str:
        """The run id of this operation's replay of ``original_run_id``: the same each time.

        Time-ordered at the operation's start, so replays list beside each other.
        """
        digest = hashlib.sha256(f"{self.id}\x00{original_run_id}".encode()).digest()
        ms = ULID.from_str(self.id).milliseconds
        return str(ULID.from_bytes(ms.to_bytes(6, "big") + digest[:10]))


@dataclass(frozen=True)
class Progress:
    """How far an operation is, after one run.

    Attributes:
        done: Runs handled so far.
        total: Runs to handle.
        run_id: The run just handled.
        outcome: What happened to it (a key of :attr:`Report.counts`).
    """

    done: int
    total: int
    run_id: str
    outcome: str


@dataclass
class Report:
    """What an operation did (or, dry, would do).

    Attributes:
        action: ``"cancel"`` or ``"replay"``.
        operation: The operation's id (give it to ``resume`` a replay).
        dry_run: Nothing was done; ``matched`` and ``sample`` say what would be.
        matched: How many runs matched the filter.
        sample: The first matching run ids (newest first).
        counts: Runs by outcome: ``cancelled``, ``queued`` (a cancel sent to a deployed
            run's worker), ``already_finished``, ``replayed``, ``already_replayed`` (by this
            operation, before), ``no_such_step`` (``from_step`` is not in the run), ``gone``
            (no longer kept), ``failed`` (the control plane refused; see ``errors``).
        new_runs: ``{original run id: replay run id}`` for the first replays.
        errors: ``{run id: message}`` for the first failures.
    """

    action: str
    operation: str
    dry_run: bool
    matched: int = 0
    sample: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    new_runs: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        """Count one run's outcome."""
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def to_json(self) -> Json:
        """The API's shape (``POST /api/runs/bulk/...``)."""
        return {"action": self.action, "operation": self.operation, "dry_run": self.dry_run,
                "matched": self.matched, "sample": self.sample, "counts": self.counts,
                "new_runs": self.new_runs, "errors": self.errors}


class Pacer:
    """At most ``rate`` actions a second: :meth:`wait` before each one.

    Args:
        rate: Actions a second (> 0).
        clock: Monotonic seconds.
        sleep: Sleeps so many seconds.

    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate: expected a positive number of actions a second, got {rate}")
        self.interval = 1 / rate
        self.clock = clock
        self.sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Sleep until the next action is due, then book the one after."""
        now = self.clock()
        if self._next is not None and self._next > now:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


#: Called after each run an operation handles.
OnProgress = Callable[[Progress], None]


def matching(control: ControlPlane, where: RunFilter, until: float, *,
             page: int = PAGE) -> Iterator[Json]:
    """The runs matching ``where`` created before ``until``, newest first, page by page.

    Each page asks for the runs created before the oldest millisecond of the last one
    (plus that millisecond: listings show times to the millisecond, and runs created in it
    may not all have fitted), leaving out those already given.
    """
    condition = where.expression()
    seen: set[str] = set()
    while True:
        rows = control.list_runs(where.query(until, page))
        for row in rows:
            if row["run_id"] not in seen:
                seen.add(row["run_id"])
                if condition is None or _holds(control, condition, row["run_id"]):
                    yield row
        if len(rows) < page:
            return
        oldest_ms = int(parse_instant(rows[-1]["created_at"], where="created_at")
                        .timestamp() * 1000 + 0.5)
        next_until = (oldest_ms + 1) / 1000
        if next_until >= until:  # a whole page in one millisecond: ask for more at once
            page *= 2
        until = min(until, next_until)


def _holds(control: ControlPlane, condition: Expression, run_id: str) -> bool:
    """Whether ``condition`` holds for the run's triggering events (one read of the run)."""
    try:
        events = list(control.run(run_id).get("events") or [])
    except NotFoundError:  # no longer kept
        return False
    return condition.matches_vars({"event": events[0] if events else {}, "events": events})


def cancel_matching(
    control: ControlPlane, where: RunFilter, *, operation: Operation | None = None,
    dry_run: bool = False, pacer: Pacer | None = None, progress: OnProgress | None = None,
    limit: int | None = None,
) -> Report:
    """Cancel every unfinished run matching ``where``.

    Args:
        control: The control plane to act through.
        where: Which runs.
        operation: The operation (one beginning now if not given).
        dry_run: Only count and list them.
        pacer: The rate (:data:`DEFAULT_RATE` if not given).
        progress: Called after each run.
        limit: Handle at most this many (the newest); ``None``: all.

    """
    op = operation or Operation.begin()
    runs = _targets(control, where, op, limit, _IN_FLIGHT)
    report = Report("cancel", op.id, dry_run, len(runs), [r["run_id"] for r in runs[:SAMPLE]])
    if not dry_run:
        _each(runs, lambda run_id: _cancel_one(control, run_id),
              report, pacer or Pacer(DEFAULT_RATE), progress)
    return report


def replay_matching(
    control: ControlPlane, where: RunFilter, *, from_step: str | None = None,
    operation: Operation | None = None, dry_run: bool = False, pacer: Pacer | None = None,
    progress: OnProgress | None = None, limit: int | None = None,
) -> Report:
    """Replay every failed or cancelled run matching ``where`` as a new run linked to it.

    Each replay is a rerun (a fork from ``from_step`` if given) under the run id
    :meth:`Operation.replay_id` derives, so a resumed operation replays no run twice.

    Args:
        control: The control plane to act through.
        where: Which runs (its ``status``, if given, must be Failed or Cancelled).
        from_step: Replay from this step (the results recorded before it are kept).
        operation: The operation to resume (one beginning now if not given).
        dry_run: Only count and list them.
        pacer: The rate (:data:`DEFAULT_RATE` if not given).
        progress: Called after each run.
        limit: Handle at most this many (the newest); ``None``: all.

    Raises:
        ValueError: ``where.status`` is not Failed or Cancelled.
    """
    if where.status is not None and where.status not in REPLAYABLE:
        raise ValueError(f"only Failed or Cancelled runs can be replayed, not "
                         f"{where.status.value} ones")
    op = operation or Operation.begin()
    runs = _targets(control, where, op, limit, tuple(REPLAYABLE))
    report = Report("replay", op.id, dry_run, len(runs), [r["run_id"] for r in runs[:SAMPLE]])
    if not dry_run:
        def replay(run_id: str) -> str:
            return _replay_one(control, op, run_id, from_step, report)

        _each(runs, replay, report, pacer or Pacer(DEFAULT_RATE), progress)
    return report


#: The statuses a cancel acts on.
_IN_FLIGHT = tuple(s for s in RunStatus if not s.finished)


def _targets(control: ControlPlane, where: RunFilter, op: Operation, limit: int | None,
             statuses: tuple[RunStatus, ...]) -> list[Json]:
    """The matching runs in ``statuses`` an operation handles, newest first.

    Only ids and statuses are kept. Listed one status at a time through the status index
    (``where.status`` if it is one of them), so a cancel reads the runs in flight, not every
    run the table keeps: the cost follows what is acted on, not the history (and ``--if``
    reads only those runs).
    """
    until = op.began_at if where.until is None else min(where.until, op.began_at)
    wanted = [where.status] if where.status is not None else list(statuses)
    found: list[Json] = []
    for status in wanted:
        if status not in statuses:
            continue
        for n, row in enumerate(matching(control, replace(where, status=status), until)):
            if limit is not None and n >= limit:
                break
            found.append({"run_id": row["run_id"], "status": row["status"],
                          "created_at": row["created_at"]})
    found.sort(key=lambda row: row["created_at"], reverse=True)
    return [{"run_id": r["run_id"], "status": r["status"]} for r in found[:limit]]


def _each(runs: list[Json], act: Callable[[str], str], report: Report, pacer: Pacer,
          progress: OnProgress | None) -> None:
    """Act on each run at the pacer's rate, counting outcomes and telling progress."""
    for done, run in enumerate(runs, start=1):
        pacer.wait()
        try:
            outcome = _patiently(act, run["run_id"], pacer.sleep)
        except NotFoundError:  # over HTTP, a 404 does not say what was not found
            outcome = "gone"
        except CONTROL_ERRORS as exc:  # one run refused (its function removed...): go on
            outcome = "failed"
            if len(report.errors) < SAMPLE:
                report.errors[run["run_id"]] = str(exc)
        report.count(outcome)
        if progress is not None:
            progress(Progress(done, len(runs), run["run_id"], outcome))


#: How long one run's action is tried again while AWS pushes back (throttling past the
#: SDK's retries), before it counts as failed: a throttled table delays a bulk operation.
PUSHBACK_PATIENCE_S = 300.0


def _patiently(act: Callable[[str], str], run_id: str,
               sleep: Callable[[float], None]) -> str:
    """``act(run_id)``, again after a growing pause (0.5 s to 20 s) while it is pushed back."""
    waited, pause = 0.0, 0.5
    while True:
        try:
            return act(run_id)
        except CONTROL_ERRORS as exc:
            if not is_pushback(exc) or waited >= PUSHBACK_PATIENCE_S:
                raise
        sleep(pause)
        waited, pause = waited + pause, min(pause * 2, 20.0)


def _cancel_one(control: ControlPlane, run_id: str) -> str:
    done = control.cancel(run_id)
    if done.queued:
        return "queued"
    return "cancelled" if done.cancelled else "already_finished"


def _replay_one(control: ControlPlane, op: Operation, run_id: str, from_step: str | None,
                report: Report) -> str:
    new_id = op.replay_id(run_id)
    if op.resumed and _exists(control, new_id):
        return "already_replayed"
    try:
        control.rerun(run_id, from_step, new_id=new_id)
    except NotFoundError as exc:
        # The run was just listed: unless it says so, it is the step that is not there.
        if from_step is None or isinstance(exc, RunNotFoundError):
            raise
        return "no_such_step"
    if len(report.new_runs) < SAMPLE:
        report.new_runs[run_id] = new_id
    return "replayed"


def _exists(control: ControlPlane, run_id: str) -> bool:
    try:
        control.run(run_id)
    except NotFoundError:
        return False
    return True


def parse_status(raw: str | None) -> RunStatus | None:
    """A status given by name, in any case (``failed``, ``Failed``), or none.

    Raises:
        ValueError: No such status.
    """
    if raw is None:
        return None
    by_name = {s.value.lower(): s for s in RunStatus}
    found = by_name.get(raw.lower())
    if found is None:
        raise ValueError(f"status: expected one of {', '.join(s.value for s in RunStatus)}, "
                         f"got {raw!r}")
    return found


def filter_from_json(body: Any) -> RunFilter:
    """A :class:`RunFilter` from the API's JSON.

    Its fields: ``function_id``, ``status``, ``since`` and ``until`` (ISO instants), ``if``.

    Raises:
        ValueError: A field is of the wrong type or value.
    """
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object with the filter")
    text = {k: body.get(k) for k in ("function_id", "status", "since", "until", "if")}
    for name, value in text.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
    return RunFilter(
        function_id=text["function_id"] or None, status=parse_status(text["status"] or None),
        since=_instant(text["since"], "since"), until=_instant(text["until"], "until"),
        condition=text["if"] or None)


def _instant(raw: str | None, where: str) -> float | None:
    return None if not raw else parse_instant(raw, where=where).timestamp()
