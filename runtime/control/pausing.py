"""Pause and resume in the control plane's shape: the API's JSON over the pause gates.

Every implementation of :class:`~runtime.control.ControlPlane` that reaches a store (the
dev server's, ``--aws``) pauses through these, so the three answer alike; the rules of a
pause are :mod:`runtime.orchestration.pausing`.
"""

from __future__ import annotations

from runtime.control import Json
from runtime.control.views import iso
from runtime.orchestration.pausing import PAUSE_SCOPE, Paused, pause, resume
from runtime.orchestration.protocols import Clock, GateStore

#: The most pause gates a listing reads (one Query on AWS): more than an app has functions.
MAX_PAUSES = 10_000


def paused_json(found: Paused | None) -> Json | None:
    """A pause as the API shows it: ``{reason, since}`` (``since`` ISO 8601), or ``None``."""
    if found is None:
        return None
    return {"reason": found.reason, "since": iso(found.since)}


def pause_answer(function_id: str, found: Paused | None) -> Json:
    """The answer to a pause or a resume: ``{function_id, paused}``."""
    return {"function_id": function_id, "paused": paused_json(found)}


def paused_functions(store: GateStore) -> dict[str, Paused]:
    """Every paused function's pause, by function id: one read of the pause scope."""
    found = {}
    for function_id, gate in store.list_gates(PAUSE_SCOPE, MAX_PAUSES):
        one = Paused.of(gate)
        if one is not None:
            found[function_id] = one
    return found


def with_pauses(listing: Json, store: GateStore) -> Json:
    """``listing`` (``functions()``'s) with each function's ``paused`` (``None``: runs)."""
    pauses = paused_functions(store)
    return {**listing, "functions": [
        {**fn, "paused": paused_json(pauses.get(fn["id"]))} for fn in listing["functions"]]}


def pause_function(store: GateStore, clock: Clock, function_id: str,
                   reason: str | None) -> Json:
    """Pause ``function_id`` (it must exist: the caller checks); the answer."""
    return pause_answer(function_id, pause(store, clock, function_id, reason))


def resume_function(store: GateStore, clock: Clock, function_id: str) -> Json:
    """Resume ``function_id``; the answer (``resumed``: whether it was paused)."""
    was = resume(store, clock, function_id)
    return {**pause_answer(function_id, None), "resumed": was}
