"""What system events carry: ``function.finished`` ids and status by default, more on request."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import App, Context, TriggerEvent
from runtime.errors import ConfigurationError


def _app(heard: list[dict[str, Any]], **options: Any) -> App:
    app = App("shop")

    @app.function(id="quote", trigger=TriggerEvent("order/created"), **options)
    def quote(ctx: Context) -> dict[str, Any]:
        return {"total": ctx.event.data["amount"] * 2, "note": "x" * 500}

    @app.function(id="ledger", trigger=TriggerEvent("stepkit/function.finished"))
    def ledger(ctx: Context) -> None:
        heard.append(dict(ctx.event.data))

    return app


def _heard_once(heard: list[dict[str, Any]]) -> dict[str, Any]:
    """The one ``function.finished`` of ``quote`` (heard at least once: chaos repeats it)."""
    about = [d for d in heard if d["function_id"] == "quote"]
    assert about and all(d == about[0] for d in about)
    return about[0]


def test_function_finished_carries_ids_and_status_not_the_output(make_harness: Any) -> None:
    heard: list[dict[str, Any]] = []
    h = make_harness(_app(heard))
    [event_id] = h.send("order/created", {"amount": 21})
    h.settle()
    run = h.only_run("quote")
    data = _heard_once(heard)
    assert data == {"function_id": "quote", "run_id": run.id, "status": "Completed",
                    "event": {"id": event_id, "name": "order/created"}}
    assert run.output["total"] == 42  # the output is the run's, read by its id
    # Nothing in this module waits on or cancels by system events: none is in the timeline,
    # while the user's event is (a wait's name is a string known only at run time).
    store = h.backend.store
    assert store.events_since("stepkit/function.finished", 0, now=h.clock.now()) == []
    [kept] = store.events_since("order/created", 0, now=h.clock.now())
    assert kept["id"] == event_id


def test_finished_event_full_copies_the_trigger_and_output(make_harness: Any) -> None:
    heard: list[dict[str, Any]] = []
    h = make_harness(_app(heard, finished_event="full"))
    [event_id] = h.send("order/created", {"amount": 21})
    h.settle()
    data = _heard_once(heard)
    assert data["event"]["id"] == event_id and data["event"]["data"] == {"amount": 21}
    assert data["output"] == {"total": 42, "note": "x" * 500}
    assert data["status"] == "Completed"


def test_finished_event_takes_ids_or_full_only() -> None:
    with pytest.raises(ConfigurationError, match="finished_event is 'all'; use 'ids' or 'full'"):
        _app([], finished_event="all")
