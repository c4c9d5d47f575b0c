"""Reading and re-sending dead-letter bodies: stepkit messages, routed ones, events, junk."""

from __future__ import annotations

import json

from runtime.dlq import describe_body, dlq_notice, redrive_body
from runtime.records import Message, MessageKind

MSG = Message(MessageKind.WAKE, "fn", "r1", id="m1", key="nap", payload={"x": 1})
ROUTED = {"detail-type": "stepkit/message", "source": "shop", "detail": MSG.to_json()}
EVENT = {"detail-type": "user/signup", "source": "shop", "detail": {"data": {}}}
CRON = {"type": "cron", "function_id": "digest", "cron": "0 9 * * *", "scheduled_time": "x"}


def test_describe_reads_each_kind_of_body_and_never_raises() -> None:
    assert describe_body(json.dumps(MSG.to_json())) == ("wake", "fn", "r1", "nap")
    assert describe_body(json.dumps(ROUTED)) == ("wake", "fn", "r1", "nap")
    assert describe_body(json.dumps(EVENT)) == ("event user/signup", None, None, None)
    assert describe_body(json.dumps(CRON)) == ("cron", "digest", None, None)
    for junk in ("not json", "[1]", "{}", '{"type": "message"}'):
        assert describe_body(junk)[0] in ("unreadable", "message"), junk


def test_redrive_marks_stepkit_messages_as_re_sent_and_leaves_the_rest_alone() -> None:
    again = Message.from_json(json.loads(redrive_body(json.dumps(MSG.to_json()))))
    assert again.payload == {"x": 1, "resend": True}
    assert (again.id, again.kind, again.key) == ("m1", MessageKind.WAKE, "nap")
    routed = json.loads(redrive_body(json.dumps(ROUTED)))
    assert routed["detail"]["payload"] == {"x": 1, "resend": True}
    assert routed["detail-type"] == "stepkit/message"
    for body in (json.dumps(EVENT), json.dumps(CRON), "not json", "[1]"):
        assert redrive_body(body) == body
    twice = redrive_body(redrive_body(json.dumps(MSG.to_json())))
    assert json.loads(twice)["payload"] == {"x": 1, "resend": True}


def test_notice() -> None:
    assert dlq_notice(0) is None
    assert dlq_notice(1) == "1 message in dead-letter queues: stepkit dlq list"
    assert dlq_notice(3) == "3 messages in dead-letter queues: stepkit dlq list"
