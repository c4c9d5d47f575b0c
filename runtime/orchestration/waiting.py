"""Why a run is not executing, for people: skipped, throttled, or queued for a slot."""

from __future__ import annotations

from typing import Any

from runtime.app import FunctionDef
from runtime.concurrency import line_shards, live
from runtime.durations import format_instant
from runtime.orchestration.protocols import Store
from runtime.orchestration.slots import concurrency_gate
from runtime.records import RunRecord, RunStatus

#: How many places of a line a listing reads (one bounded query per key): a run further
#: back is not reported as queued.
LINE_LOOK = 100


def why_waiting(
    fn: FunctionDef | None,
    run: RunRecord,
    store: Store,
    now: float,
    lines: dict[tuple[str, str], list[str]] | None = None,
) -> dict[str, Any] | None:
    """Why flow control holds ``run`` back now, for people: ``{kind, message, until}``.

    A run further back than :data:`LINE_LOOK` places in every shard of its line is not
    reported as queued (the read stays bounded however long the line).

    ``skipped`` (the rule that skipped it), ``throttled`` (until its turn), ``queued``
    (waiting for a concurrency slot, with how many are ahead); ``None`` when nothing holds
    it. Reads the head of the line (:data:`LINE_LOOK` places) of each concurrency
    constraint of a running run, once per listing when the caller passes one ``lines`` dict
    for all its runs.
    """
    if run.status is RunStatus.SKIPPED:
        reason = run.error.message if run.error else "skipped by flow control"
        return {"kind": "skipped", "message": reason, "until": None}
    if run.status.finished:
        return None
    if run.held(now) and run.held_until is not None:
        when = format_instant(run.held_until, timespec="seconds")
        return {"kind": "throttled", "message": f"throttled until {when}",
                "until": run.held_until}
    if fn is None or not fn.flow.concurrency:
        return None
    event = run.events[0] if run.events else {}
    for c in fn.flow.concurrency:
        gate = concurrency_gate(fn, c, event)
        cache = lines if lines is not None else {}
        if gate not in cache:
            heads = [p for shard in range(line_shards(c.limit))
                     for p in store.line(*gate, shard, LINE_LOOK)]
            cache[gate] = [p.work for p in live(heads, now)]
        line, key = cache[gate], gate[1]
        mine = [i for i, work in enumerate(line) if work.startswith(f"{run.run_id}/")]
        if mine:
            where = f" key {key!r}" if c.key else ""
            return {"kind": "queued", "until": None,
                    "message": f"queued behind concurrency limit {c.limit}{where} "
                               f"({mine[0]} ahead)"}
    return None


