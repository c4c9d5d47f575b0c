"""A malformed queue message goes to the dead-letter queue at once, with what is wrong.

A message stepkit never wrote (a field missing or of the wrong type: someone with
``sqs:SendMessage``, or a bug) can never succeed: it is neither pushback nor a failure
another delivery gets past. The worker refuses it on its first delivery, with a description
naming the kind, the field and what it must be, and the work beside it carries on. Each case
runs on both backends, in normal and chaos mode.
"""

from __future__ import annotations

from typing import Any

from runtime import App, Context, TriggerEvent
from runtime.records import Message, MessageKind

app = App("shop")


@app.function(id="order", trigger=TriggerEvent("order/placed"), retries=0)
def order(ctx: Context) -> str:
    return str(ctx.step.run("reserve", lambda: ctx.event.data["id"]))


def inject(h: Any, messages: list[Message]) -> None:
    """Send ``messages`` to their function's queue, as a worker's queue would."""
    orchestrator = getattr(h.backend, "router", h.backend).orchestrator
    orchestrator.queue.send(messages)


def dead_letters(h: Any) -> dict[str, str]:
    """The dead-lettered messages' errors, by the run they name."""
    if hasattr(h.backend, "dead_letter_rows"):
        rows = h.backend.dead_letter_rows()
    else:
        from runtime.backends.aws.dlq import DeadLetterQueues

        rows = DeadLetterQueues(h.backend.resources, h.backend.clients["sqs"]).messages()
    return {str(d.run_id): str(d.error) for d in rows}


def test_a_malformed_message_is_dead_lettered_on_its_first_delivery_with_a_description(
        make_harness: Any) -> None:
    h = make_harness(app)
    inject(h, [
        Message(MessageKind.START, "order", "no-events", payload={"direct": True}),
        Message(MessageKind.FLUSH, "order", "bad-round",
                payload={"scope": "debounce", "key": "k", "round": "x"}),
        Message(MessageKind.RESOLVE, "order", "no-child", payload={}),
    ])
    h.send("order/placed", {"id": "o-1"})
    h.settle()  # no time passes: a failure would come back only after its backoff
    (run,) = h.runs()
    assert (run.status, run.output) == ("Completed", "o-1")
    dead = dead_letters(h)
    assert set(dead) == {"no-events", "bad-round", "no-child"}
    assert "malformed start message: 'payload.events' is missing; expected a list of event " \
        "objects" in dead["no-events"]
    assert "malformed flush message: 'payload.round' is 'x' (str); expected a round (an " \
        "integer)" in dead["bad-round"]
    assert "malformed resolve message: 'payload.child_run_id' is missing" in dead["no-child"]
    assert "KeyError" not in " ".join(dead.values())
