"""Direct tests of the pure engine: decisions and the commits that record them.

Each case of :mod:`tests.engine.histories` is replayed with ``execute()`` and its decision
committed with ``commit_for()``; both outcomes, as plain JSON, must equal the golden file
``golden/<case>.json``. They pin what the engine decides and writes, not how its code is
laid out, so a refactoring that moves code must leave every golden file as it is.

Regenerate the golden files (after a change that is *meant* to change an outcome; review the
diff before committing it)::

    STEPKIT_REGEN_GOLDEN=1 .venv/bin/pytest -q tests/engine
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from runtime.engine import Limits, execute

# The engine's entry points: named here and used only by engine() below.
from runtime.orchestration.commits import commit_for
from runtime.records import (
    Commit,
    EventOut,
    Message,
    MessageKind,
    RunState,
    StepStatus,
    Waiter,
    WaiterKind,
    applied,
)
from tests.engine.histories import CALLS, CASES, NOW, RUN_ID, Case, app

# -- the adapter: the one place that names the engine's entry points -----------------------


def engine(case: Case, state: RunState, msg: Message, now: float) -> tuple[Any, Commit | None]:
    """The engine's decision for ``state`` at ``now``, and the commit recording it for ``msg``."""
    fn = app.get(case.fn_id)
    decision = execute(fn, state, now=now, target=case.target, limits=Limits(**case.limits))
    return decision, commit_for(app, fn, state, msg, decision, now)


# -- outcomes as plain JSON ----------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("STEPKIT_REGEN_GOLDEN") == "1"
# Message ids default to uuid4: the only random values in an outcome.
_UUID4 = re.compile(r"^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$")
# Pydantic's validation messages link to its docs of the installed version.
_PYDANTIC_DOCS = re.compile(r"https://errors\.pydantic\.dev/[0-9.]+/")


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dataclasses by field, enums by value.

    An error's ``stack`` is dropped: it is traceback text (file paths, line numbers) that
    moving code changes; its name, message and retriability are kept.
    """
    if is_dataclass(value) and not isinstance(value, type):
        out = {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if type(value).__name__ == "ErrorInfo":
            out.pop("stack")
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"no plain form for {type(value).__name__}: {value!r}")


def tagged(value: Any) -> dict[str, Any]:
    """A dataclass as ``{"type": its class name, **its fields}``."""
    return {"type": type(value).__name__, **plain(value)}


def outcome(decision: Any, commit: Commit | None) -> dict[str, Any]:
    """One invocation's decision and commit (outbox entries tagged Message or EventOut)."""
    written = None
    if commit is not None:
        written = {**plain(commit), "outbox": [tagged(o) for o in commit.outbox]}
    return {"decision": tagged(decision), "commit": written}


def normalised(data: Any, seen: dict[str, str]) -> Any:
    """``data`` with each random id replaced by ``<random-id-N>``, N by first appearance.

    The same id gets the same placeholder, so which message a later commit was made for
    stays visible. The pydantic version in a validation message's link goes too.
    """
    if isinstance(data, dict):
        return {k: normalised(v, seen) for k, v in data.items()}
    if isinstance(data, list):
        return [normalised(v, seen) for v in data]
    if isinstance(data, str) and _UUID4.match(data):
        return seen.setdefault(data, f"<random-id-{len(seen) + 1}>")
    if isinstance(data, str):
        return _PYDANTIC_DOCS.sub("https://errors.pydantic.dev/<version>/", data)
    return data


def replay(name: str, case: Case) -> list[dict[str, Any]]:
    """The case's outcomes: one invocation, or the main line driven for ``case.chain``."""
    state, msg, now = case.state, case.message(name), case.now
    found: list[dict[str, Any]] = []
    for _ in range(max(case.chain, 1)):
        decision, commit = engine(case, state, msg, now)
        found.append({"now": now, "msg": tagged(msg), **outcome(decision, commit)})
        if not case.chain or commit is None:
            break
        nxt = [o for o in commit.outbox if isinstance(o, Message)]
        if len(commit.outbox) != 1 or len(nxt) != 1 or nxt[0].kind is not MessageKind.CONTINUE:
            break
        state, msg = applied(state, commit), nxt[0]
        now = max(now + 1.0, msg.due or 0.0)
    return found


def _text(data: Any) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


# -- the golden tests ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_outcome_matches_golden(name: str) -> None:
    got = _text(normalised(replay(name, CASES[name]), {}))
    path = GOLDEN / f"{name}.json"
    if REGEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got)
        return
    assert path.exists(), (
        f"no golden file {path.name}: generate it with STEPKIT_REGEN_GOLDEN=1 and review it"
    )
    want = path.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(
            want.splitlines(keepends=True), got.splitlines(keepends=True),
            f"golden/{name}.json", "today's outcome"))
        pytest.fail(f"case {name!r} changed outcome:\n{diff}", pytrace=False)


def test_every_golden_file_is_a_case() -> None:
    stale = sorted(p.stem for p in GOLDEN.glob("*.json")) if not REGEN else []
    assert [s for s in stale if s not in CASES] == []


def test_an_outcome_is_the_same_on_every_replay() -> None:
    for name in ("parallel-nested-schedules", "send-many", "checkpoint-chain"):
        assert normalised(replay(name, CASES[name]), {}) == normalised(
            replay(name, CASES[name]), {})


# -- direct assertions on the properties that matter most --------------------------------


def _once(name: str) -> tuple[Any, Commit | None]:
    case = CASES[name]
    return engine(case, case.state, case.message(name), case.now)


def test_a_memoized_step_never_runs_its_function_again() -> None:
    CALLS.clear()
    decision, _ = _once("run-all-memoized-completes")
    assert type(decision).__name__ == "RunCompleted"
    assert decision.output == 6
    assert CALLS == {}
    decision, _ = _once("run-memoized-then-next")
    assert CALLS == {"b": 1}  # only the new step ran, once
    assert (type(decision).__name__, decision.step.key, decision.output) == ("StepSucceeded",
                                                                             "b", 2)


def test_nondeterminism_blocks_the_run_naming_the_step() -> None:
    decision, commit = _once("nondeterminism-sleep-where-run")
    assert type(decision).__name__ == "RunBlocked"
    assert decision.error.name == "NondeterminismError"
    assert "step 'a'" in decision.error.message
    assert commit is not None and commit.run is not None
    assert commit.run.status is not None and commit.run.status.value == "Blocked"
    assert commit.run.attempt is None and commit.run.ended_at is None  # nothing burned
    # No system event, no on_failure: only the CONTINUE that tries it again later.
    (retry,) = commit.outbox
    assert isinstance(retry, Message) and retry.kind is MessageKind.CONTINUE
    assert retry.version == commit.expect_version + 1 and retry.due is not None


def test_a_wide_group_is_scheduled_fifty_at_a_time() -> None:
    decision, commit = _once("parallel-wide-first-slice")
    assert type(decision).__name__ == "ScheduleBranches"
    assert len(decision.steps) == 50 and decision.more
    assert [s.key for s in decision.steps] == [f"w{i}@{i}" for i in range(50)]
    assert commit is not None
    assert all(w.record.status is StepStatus.SCHEDULED and w.expect_status is None
               for w in commit.steps)
    branches, last = commit.outbox[:-1], commit.outbox[-1]
    assert [(m.kind, m.key) for m in branches if isinstance(m, Message)] == [
        (MessageKind.BRANCH, f"w{i}@{i}") for i in range(50)]
    assert isinstance(last, Message) and last.kind is MessageKind.CONTINUE
    assert last.payload == {"slice": True}
    decision, _ = _once("parallel-wide-second-slice")
    assert (len(decision.steps), decision.more) == (10, False)


def test_a_wait_adds_its_waiter_and_a_wake_at_its_timeout() -> None:
    decision, commit = _once("wait-match-new")
    until = NOW + 86400
    assert type(decision).__name__ == "WaitForEvent" and decision.until == until
    assert commit is not None
    assert commit.add_waiters == (Waiter("golden/approved", RUN_ID, "wait-match", "approval",
                                         WaiterKind.STEP, '"A-1" == async.data.id', until),)
    (wake,) = commit.outbox
    assert isinstance(wake, Message)
    assert (wake.kind, wake.key, wake.due) == (MessageKind.WAKE, "approval", until)
    assert commit.steps[0].record.status is StepStatus.WAITING


def test_a_send_commits_its_events_then_the_continue() -> None:
    decision, commit = _once("send-many")
    assert type(decision).__name__ == "SendEvents" and len(decision.events) == 3
    assert commit is not None
    *events, last = commit.outbox
    assert [type(e) for e in events] == [EventOut] * 3
    assert [e.event["data"] for e in events if isinstance(e, EventOut)] == [
        {"n": 1}, {"n": 2}, {"n": 3}]
    assert isinstance(last, Message) and last.kind is MessageKind.CONTINUE
    assert last.version == CASES["send-many"].state.run.version + 1
    assert commit.steps[0].record.output == [e.event["id"] for e in events
                                             if isinstance(e, EventOut)]


def test_work_in_flight_is_a_noop_with_no_commit() -> None:
    for name in ("sleep-in-flight-noop", "wait-in-flight-noop", "parallel-all-in-flight-noop"):
        decision, commit = _once(name)
        assert type(decision).__name__ == "Noop", name
        assert commit is None, name
