"""When a checkpoint chain stops taking new steps: its max_runtime, and the batch's deadline."""

from __future__ import annotations

from runtime import App, AwsOptions, Checkpointing, Context, TriggerEvent
from runtime.orchestration.replaying import chain_stop


def fn(max_runtime: str | None, timeout_s: int) -> object:
    app = App("chains")

    @app.function(id="chain", trigger=TriggerEvent("c/go"),
                  checkpointing=Checkpointing(max_runtime=max_runtime) if max_runtime else True,
                  aws=AwsOptions(timeout_s=timeout_s))
    def chain(ctx: Context) -> None:
        return None

    return app.get("chain")


def test_a_chain_without_a_deadline_stops_after_its_max_runtime() -> None:
    assert chain_stop(fn("20s", 60), 100.0, None) == 120.0  # type: ignore[arg-type]
    assert chain_stop(fn(None, 60), 100.0, None) == 130.0  # type: ignore[arg-type]  # half


def test_a_later_record_of_a_batch_stops_in_time_for_the_longest_step_allowed() -> None:
    # timeout 60 s, max_runtime 20 s: a step may take up to 40 s. A record begun with 70 s
    # of the invocation left chains its full 20 s; one begun with 45 s left must stop at
    # once after 5 s (45 - 40), or a 40 s step would be killed with the invocation.
    f = fn("20s", 60)
    assert chain_stop(f, 100.0, 170.0) == 120.0  # type: ignore[arg-type]
    assert chain_stop(f, 100.0, 145.0) == 105.0  # type: ignore[arg-type]
    assert chain_stop(f, 100.0, 130.0) == 90.0  # type: ignore[arg-type]  # no new step at all
