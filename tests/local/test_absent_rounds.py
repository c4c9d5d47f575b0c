"""A START kept for a function the deployed app lacks does not multiply under duplicates.

(On AWS a removed function's queue has no consumer: its messages wait there, so keeping is
the local backend's, where one queue table holds every function's messages.)
"""

from __future__ import annotations

from pathlib import Path

from runtime import App, Context, TriggerEvent
from runtime.testing import Harness
from tests.conftest import START


def _nap() -> App:
    app = App("shop")

    @app.function(id="nap", trigger=TriggerEvent("order/created"))
    def nap(ctx: Context) -> str:
        return str(ctx.event.data["order_id"])

    return app


def test_a_kept_start_under_duplicate_deliveries_stays_one_copy(tmp_path: Path) -> None:
    h = Harness.local(_nap(), path=tmp_path / "db.sqlite3", start=START)
    h.send("order/created", {"order_id": "o1"}, settle=False)  # its START is queued
    h = h.redeploy(App("shop"))  # the function is gone before the START is handled
    h.duplicate_deliveries()
    h.advance("2h")  # twelve rounds, every delivery doubled
    pending = h.pending_timers()
    # One kept copy: its last round's send, which the fault doubles (not 2**12 copies).
    assert pending == [pending[0]] * 2, pending
    h = h.redeploy(_nap())
    h.advance("10m")
    (run,) = h.runs("nap")
    assert run.status == "Completed" and run.output == "o1"
    h.close()


def test_a_deadline_passing_while_the_function_is_removed_still_ends_the_run(
        tmp_path: Path) -> None:
    """A TIMEOUT runs no code of the function: it is applied, not kept (the run is cancelled
    at its deadline instead of staying Blocked until the function is back)."""
    from runtime import Timeouts

    app = App("shop")

    @app.function(id="slow", trigger=TriggerEvent("order/created"),
                  timeouts=Timeouts(finish="1h"))
    def slow(ctx: Context) -> None:
        ctx.step.sleep("nap", "1d")

    h = Harness.local(app, path=tmp_path / "db.sqlite3", start=START)
    h.send("order/created", {"order_id": "o1"})
    h = h.redeploy(App("shop"))
    h.advance("2h")
    (run,) = h.runs()
    assert run.status == "Cancelled", (run.status, run.error)
    assert "not finished within its finish timeout" in (run.error or "")
    h.close()
