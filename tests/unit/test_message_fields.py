"""A queue message stepkit never wrote is refused with what is wrong, never a ``KeyError``.

``Message.from_json`` and the typed payloads (:func:`runtime.messages.checked` reads them
all) raise one error, :class:`MalformedMessageError`, naming the kind, the field and what
it must be; what stepkit writes itself reads back unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime.errors import MalformedMessageError, StepkitError
from runtime.messages import (
    Deferral,
    FlushPayload,
    MatchPayload,
    StartPayload,
    checked,
    deferred,
    with_poll,
)
from runtime.records import Message, MessageKind, ParentRef, RerunOf

EVENT = {"id": "e1", "name": "order/paid", "data": {}, "ts": 1}


def message(kind: str = "start", **fields: Any) -> dict[str, Any]:
    return {"type": "message", "kind": kind, "function_id": "fn", "run_id": "r1", "id": "m1",
            **fields}


def refusal(raw: dict[str, Any]) -> str:
    with pytest.raises(MalformedMessageError) as caught:
        checked(Message.from_json(raw))
    assert not caught.value.is_retriable
    return str(caught.value)


@pytest.mark.parametrize(("raw", "said"), [
    ({"type": "message", "function_id": "fn", "run_id": "r1"},
     "malformed queue message: 'kind' is missing; expected one of start, continue"),
    (message("explode"), "malformed queue message: 'kind' is 'explode' (str); expected one of"),
    (message(kind=["start"]), "'kind' is ['start'] (list); expected one of"),
    ({"type": "message", "kind": "start", "run_id": "r1"},
     "malformed start message: 'function_id' is missing; expected a function id (a string)"),
    (message(run_id=7), "malformed start message: 'run_id' is 7 (int); expected a run id"),
    (message("continue", version="3"), "malformed continue message: 'version' is '3' (str); "
     "expected a run version (an integer)"),
    (message("branch", attempt=True), "'attempt' is True (bool); expected an attempt number"),
    (message("wake", due="soon"), "'due' is 'soon' (str); expected a time in epoch seconds"),
    (message("wake", payload=[1]), "'payload' is [1] (list); expected a JSON object"),
    (message("wake", colour="red"), "malformed wake message: 'colour' is 'red' (str); "
     "expected only function_id, run_id, id"),
    (message(payload={}), "malformed start message: 'payload.events' is missing; expected a "
     "list of event objects"),
    (message(payload={"events": []}), "'payload.events' is [] (list); expected a list of event"),
    (message(payload={"events": ["x"]}), "'payload.events' is ['x'] (list)"),
    (message(payload={"events": [EVENT], "parent": {"run_id": "p"}}),
     "'payload.parent.function_id' is missing; expected a string"),
    (message(payload={"events": [EVENT], "rerun_of": {"step": "a"}}),
     "'payload.rerun_of.run_id' is missing; expected a run id"),
    (message(payload={"events": [EVENT], "fork": {"run_id": 1}}),
     "'payload.fork.run_id' is 1 (int); expected a run id"),
    (message("match", payload={}), "malformed match message: 'payload.ref' is missing; expected "
     "an event reference {name, ts, event_id}"),
    (message("match", payload={"ref": {"name": "a", "ts": "1", "event_id": "e"}}),
     "'payload.ref.ts' is '1' (str); expected a time in epoch ms (an integer)"),
    (message("match", payload={"event": "e1"}), "'payload.event' is 'e1' (str); expected an event"),
    (message("cancel", payload={"reason": {"x": 1}}), "malformed cancel message: "
     "'payload.reason' is {'x': 1} (dict); expected a reason (a string)"),
    (message("resolve", payload={}), "malformed resolve message: 'payload.child_run_id' is "
     "missing; expected a run id"),
    (message("flush", payload={"scope": "debounce", "key": "k", "round": "x"}),
     "malformed flush message: 'payload.round' is 'x' (str); expected a round (an integer)"),
    (message("flush", payload={"scope": "debounce", "round": 1}), "'payload.key' is missing"),
    (message("continue", payload={"poll": "2"}), "'payload.poll' is '2' (str); expected a number"),
    (message("continue", payload={"deferred": 3}),
     "'payload.deferred' is 3 (int); expected counts"),
    (message("continue", payload={"deferred": {"failures": "9"}}),
     "'payload.deferred.failures' is '9' (str); expected a count (an integer)"),
])
def test_a_malformed_message_is_refused_naming_its_kind_the_field_and_what_it_must_be(
        raw: dict[str, Any], said: str) -> None:
    assert said in refusal(raw)


def test_a_long_value_is_cut_in_the_description() -> None:
    said = refusal(message("continue", version="x" * 500))
    assert len(said) < 160 and "...' (str)" not in said and "... (str)" in said


def test_the_error_is_a_stepkit_error_and_a_value_error() -> None:
    # A ValueError: the local queue's reader dead-letters those as it leases them.
    assert issubclass(MalformedMessageError, StepkitError)
    assert issubclass(MalformedMessageError, ValueError)


@pytest.mark.parametrize("msg", [
    StartPayload((EVENT,)).message("fn", "r1"),
    StartPayload((EVENT,), parent=ParentRef("p", "parent-fn", "child"), rerun=True,
                 rerun_of=RerunOf("r0", "b")).message("fn", "r1"),
    Message(MessageKind.MATCH, "fn", "r1", key="w", payload=MatchPayload(event=EVENT).to_json()),
    Message(MessageKind.FLUSH, "fn", "r1", payload=FlushPayload("batch", "k", 2).to_json()),
    with_poll(Message(MessageKind.CONTINUE, "fn", "r1", version=3), 2, 10.5),
    deferred(Message(MessageKind.WAKE, "fn", "r1", key="nap", attempt=1),
             Deferral(2, 1, 1.5), 99.0),
    Message(MessageKind.CANCEL, "fn", "r1"),
], ids=lambda m: m.kind.value)
def test_what_stepkit_writes_reads_back_unchanged(msg: Message) -> None:
    assert checked(Message.from_json(msg.to_json())) == msg


def test_the_payload_readers_give_what_was_written() -> None:
    start = StartPayload((EVENT,), parent=ParentRef("p", "pf", "k"), direct=True,
                         rerun_of=RerunOf("r0"))
    assert StartPayload.of(start.message("fn", "r1")) == start
    old = Message(MessageKind.START, "fn", "r1", payload={"events": [EVENT],
                                                          "fork": {"run_id": "r0", "step": "b"}})
    assert StartPayload.of(old).rerun_of == RerunOf("r0", "b")
