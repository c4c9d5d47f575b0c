"""What a deploy changes in recorded steps: the app's manifest against the last deployed one.

A step is replayed by its key: its id, how many times the id came before (``id:2``) and its
parallel branch (``id@1``). A deployed step whose key the new code no longer reaches is
redone under its new id, or its result left unused; a key reached by another kind of step
holds the run on nondeterminism; reordered steps run out of the new order in runs that
recorded one and not the other; a removed function strands its runs. Added steps are fine:
runs reach them when they get there. Steps with dynamic ids are never compared, steps in
loops or in functions nested in the handler never for their order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from runtime.manifest import (
    LOOP,
    NESTED,
    RECORDED_KIND,
    FunctionSteps,
    Manifest,
    StepEntry,
    iter_compared,
)

_Key = tuple[str, str | None, int]  # (id, branch, how many times the id came before)


@dataclass(frozen=True)
class StepChange:
    """One change a deploy would make to the steps of runs in flight.

    Attributes:
        rule: ``step-renamed``, ``step-removed``, ``step-kind``, ``step-order`` or
            ``function-removed``.
        function: The function id.
        step: The step id concerned (``None`` for a removed function).
        message: What changes, and what it does to runs in flight.
        fix: What to do about it.
        line: The line of the code concerned (the new step's, else the function's; 0 if
            the function is gone).
        file: Its source file ("" if the function is gone).
    """

    rule: str
    function: str
    step: str | None
    message: str
    fix: str
    line: int = 0
    file: str = ""


def compare(deployed: Manifest, current: Manifest) -> list[StepChange]:
    """Every change from ``deployed`` to ``current``, function by function, in step order."""
    out: list[StepChange] = []
    known = deployed.digests if deployed.digests is not None else deployed.functions
    for fn_id in sorted(known):
        new = current.functions.get(fn_id)
        if new is None:
            out.append(_function_removed(fn_id))
        elif deployed.digests is not None:
            out += _digest_changed(fn_id, deployed.digests[fn_id], new)
        else:
            out += compare_function(fn_id, deployed.functions[fn_id], new)
    return out


def _function_removed(fn_id: str) -> StepChange:
    return StepChange(
        "function-removed", fn_id, None,
        f"function '{fn_id}' is deployed but no longer in the app: its runs in flight "
        "would be stranded",
        "keep it deployed until its runs finish (`stepkit runs`), or cancel them first")


def _digest_changed(fn_id: str, digest: str, new: FunctionSteps) -> list[StepChange]:
    if new.skipped or new.digest() == digest:
        return []
    return [StepChange(
        "step-changes", fn_id, None,
        f"the steps of function '{fn_id}' changed since the deploy (the stack holds only a "
        "digest of each function's steps)",
        "compare step by step with `stepkit check --deployed-manifest cdk.out/"
        "stepkit-manifest.json` from the deployed commit", new.line, new.file)]


def _keyed(steps: tuple[StepEntry, ...]) -> dict[_Key, StepEntry]:
    """The compared steps by their replay key, in order."""
    seen: defaultdict[tuple[str, str | None], int] = defaultdict(int)
    out: dict[_Key, StepEntry] = {}
    for step in iter_compared(steps):
        assert step.id is not None
        n = seen[(step.id, step.branch)]
        seen[(step.id, step.branch)] = n + 1
        out[(step.id, step.branch, n)] = step
    return out


def compare_function(fn_id: str, old: FunctionSteps, new: FunctionSteps) -> list[StepChange]:
    """The changes to one function's steps (none when either side could not be read)."""
    if old.skipped or new.skipped:
        return []
    before, after = _keyed(old.steps), _keyed(new.steps)
    added = {s.order: s for k, s in after.items() if k not in before}
    out: list[StepChange] = []
    for key, step in before.items():
        if key not in after:
            out.append(_gone(fn_id, step, added.get(step.order), new))
        elif RECORDED_KIND[after[key].kind] != RECORDED_KIND[step.kind]:
            out.append(_kind_changed(fn_id, step, after[key], new))
    out += _reordered(fn_id, before, after, new)
    return out


def _label(step: StepEntry) -> str:
    where = f" in parallel branch {step.branch}" if step.branch is not None else ""
    return f"'{step.id}'{where}"


def _gone(fn_id: str, step: StepEntry, same_place: StepEntry | None,
          new: FunctionSteps) -> StepChange:
    """A deployed step the code no longer reaches.

    Renamed, if a new step of its kind took its place.
    """
    if same_place is not None and RECORDED_KIND[same_place.kind] == RECORDED_KIND[step.kind]:
        return StepChange(
            "step-renamed", fn_id, step.id,
            f"function '{fn_id}': step {_label(step)} renamed to {_label(same_place)}? Runs "
            f"in flight that recorded {_label(step)} will run {_label(same_place)} again",
            f"keep the id '{step.id}' (ids are the keys of recorded results), or let the "
            "runs in flight finish first", same_place.line, new.file)
    return StepChange(
        "step-removed", fn_id, step.id,
        f"function '{fn_id}': step {_label(step)} ({step.kind}) was removed, renamed or "
        "moved: runs in flight that recorded it leave its result unused, and run it again "
        "under a new id or place",
        f"keep the step as '{step.id}' where it was, or let the runs in flight finish first",
        new.line, new.file)


def _kind_changed(fn_id: str, old: StepEntry, step: StepEntry,
                  new: FunctionSteps) -> StepChange:
    return StepChange(
        "step-kind", fn_id, step.id,
        f"function '{fn_id}': step {_label(step)} changed kind from {old.kind} to "
        f"{step.kind}: runs in flight that recorded it will be held on nondeterminism",
        "give the new step a new id (the old runs skip it, new runs take it)",
        step.line, new.file)


def _reordered(fn_id: str, before: dict[_Key, StepEntry], after: dict[_Key, StepEntry],
               new: FunctionSteps) -> list[StepChange]:
    """The steps that moved against the others of their branch (outside loops)."""
    out: list[StepChange] = []
    by_branch: defaultdict[str | None, list[_Key]] = defaultdict(list)
    for key, step in before.items():  # in the deployed order
        if key in after and not {LOOP, NESTED} & set(step.within + after[key].within):
            by_branch[step.branch].append(key)
    for keys in by_branch.values():
        positions = [after[k].order for k in keys]
        kept = set(_increasing(positions))
        for i, key in enumerate(keys):
            if i in kept:
                continue
            other = next(keys[j] for j in sorted(kept) if (j < i) != (positions[j] < positions[i]))
            step, pivot = after[key], after[other]
            now = "before" if step.order < pivot.order else "after"
            out.append(StepChange(
                "step-order", fn_id, step.id,
                f"function '{fn_id}': step {_label(step)} now comes {now} {_label(pivot)}: "
                "runs in flight that recorded one and not the other run them out of the "
                "new order",
                "keep the deployed order, or give the moved step a new id",
                step.line, new.file))
    return out


def _increasing(values: list[int]) -> list[int]:
    """The indexes of a longest strictly increasing subsequence of ``values``."""
    best: list[list[int]] = []  # best[i]: the longest ending at index i
    for i, value in enumerate(values):
        prior = [best[j] for j in range(i) if values[j] < value]
        best.append([*max(prior, key=len, default=[]), i])
    return max(best, key=len, default=[])
