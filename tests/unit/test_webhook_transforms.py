"""What a verified webhook request becomes: the default event, a function's, a field mapping's."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from runtime import ConfigurationError
from runtime.ingress.webhooks import (
    TransformError,
    WebhookBodyError,
    WebhookSource,
    events_of,
    mapped,
    webhook_source,
)
from runtime.webhooks import GitHub, Verified, WebhookRequest

PUSH = {"ref": "refs/heads/main", "commits": [{"id": "c1", "n": 2}], "repository":
        {"full_name": "acme/shop", "private": False, "stars": 7}, "pusher": None}


def source(transform: Any = None, name: str = "github") -> WebhookSource:
    return webhook_source(name, GitHub(secret="GH"), transform, {"GH": "ssm:/gh"})


def request(body: Any = PUSH, headers: dict[str, str] | None = None,
            query: dict[str, str] | None = None, name: str = "github") -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return WebhookRequest(name, headers or {"x-github-event": "push"}, raw, query or {})


NO_ID = Verified()


# The default: one event, the body as its data ----------------------------------------------


def test_default_is_one_event_with_the_body_as_data() -> None:
    assert events_of(source(), request(), NO_ID) == [{"name": "github/webhook", "data": PUSH}]


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe", "the body is not JSON (UTF-8)"),
    (b"ref=main", "the body is not JSON (UTF-8)"),
    ([1, 2], "the body is a JSON list; without transform= it must be a JSON object"),
    ("text", "the body is a JSON string"),
])
def test_default_refuses_a_body_that_is_not_an_object(body: Any, reason: str) -> None:
    with pytest.raises(WebhookBodyError) as info:
        events_of(source(), request(body), NO_ID)
    assert str(info.value).startswith("webhook 'github': ") and reason in str(info.value)
    assert info.value.source == "github" and isinstance(info.value, ValueError)


# A function ----------------------------------------------------------------------------------


def test_a_function_sees_the_request_and_what_the_signature_said() -> None:
    seen: list[Any] = []

    def transform(req: WebhookRequest, verified: Verified) -> dict[str, Any]:
        seen.append((req.headers["x-github-event"], verified.delivery_id))
        return {"name": "gh/push", "data": {"ref": req.json()["ref"]}}

    out = events_of(source(transform), request(), Verified(delivery_id="d1"))
    assert out == [{"name": "gh/push", "data": {"ref": "refs/heads/main"}, "id": "github-d1"}]
    assert seen == [("push", "d1")]


def test_a_function_may_return_several_events_or_none() -> None:
    def several(req: WebhookRequest, verified: Verified) -> list[dict[str, Any]]:
        return [{"name": "gh/commit", "data": c} for c in req.json()["commits"] * 2]

    assert [e["data"] for e in events_of(source(several), request(), NO_ID)] == [
        {"id": "c1", "n": 2}, {"id": "c1", "n": 2}]
    assert events_of(source(lambda r, v: None), request(), NO_ID) == []
    assert events_of(source(lambda r, v: []), request(), NO_ID) == []


def test_the_function_s_events_are_copied_before_ids_are_set() -> None:
    event = {"name": "gh/push", "data": {}}
    events_of(source(lambda r, v: event), request(), Verified(delivery_id="d1"))
    assert event == {"name": "gh/push", "data": {}}


@pytest.mark.parametrize(("returned", "reason"), [
    ("gh/push", "the transform returned a str; expected an event (a dict), a list of events"),
    (7, "the transform returned a int"),
    ([{"name": "a/b"}, "x"], "a list whose item 1 is a str, not an event"),
])
def test_a_function_returning_no_events_is_a_transform_error(returned: Any, reason: str) -> None:
    with pytest.raises(TransformError) as info:
        events_of(source(lambda r, v: returned), request(), NO_ID)
    assert str(info.value).startswith("webhook 'github': ") and reason in str(info.value)
    assert info.value.is_retriable  # a 500: the provider retries after the fix


def test_a_function_that_raises_is_a_transform_error_naming_the_cause() -> None:
    def broken(req: WebhookRequest, verified: Verified) -> Any:
        return req.json()["missing"]

    with pytest.raises(TransformError) as info:
        events_of(source(broken), request(), NO_ID)
    assert "the transform raised KeyError: 'missing'" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)


def test_a_function_may_refuse_the_body_itself() -> None:
    def strict(req: WebhookRequest, verified: Verified) -> Any:
        raise WebhookBodyError(req.source, "not a push")

    with pytest.raises(WebhookBodyError, match="webhook 'github': not a push"):
        events_of(source(strict), request(), NO_ID)


# A mapping of templates ----------------------------------------------------------------------


def test_the_documented_mapping_names_the_event_after_a_header() -> None:
    fields = {"name": "github/{headers.x-github-event}", "data": "{body}"}
    assert events_of(source(fields), request(), NO_ID) == [{"name": "github/push", "data": PUSH}]


def test_a_placeholder_alone_keeps_the_value_s_json_type() -> None:
    fields = {"name": "gh/push", "data": {
        "repo": "{body.repository}", "private": "{body.repository.private}",
        "stars": "{body.repository.stars}", "first": "{body.commits.0.id}",
        "pusher": "{body.pusher}", "kept": 3, "list": ["{body.commits.0.n}", "x"]}}
    assert mapped(fields, request())["data"] == {
        "repo": PUSH["repository"], "private": False, "stars": 7, "first": "c1",
        "pusher": None, "kept": 3, "list": [2, "x"]}


def test_inside_text_a_value_is_written_as_text_or_compact_json() -> None:
    fields = {"name": "gh/push", "data": {
        "text": "{body.repository.full_name}@{body.ref} by {body.pusher}",
        "json": "commits={body.commits} private={body.repository.private}",
        "braces": "{{literal}} {query.kind}"}}
    assert mapped(fields, request(query={"kind": "ci"}))["data"] == {
        "text": "acme/shop@refs/heads/main by null",
        "json": 'commits=[{"id":"c1","n":2}] private=false',
        "braces": "{literal} ci"}


def test_a_mapping_reads_the_body_only_when_it_names_it() -> None:
    fields = {"name": "form/{query.kind}", "data": {"event": "{headers.x-github-event}"}}
    got = mapped(fields, request(b"a=1&b=2", query={"kind": "post"}))
    assert got == {"name": "form/post", "data": {"event": "push"}}


@pytest.mark.parametrize(("fields", "req", "reason"), [
    ({"data": "{body.repository.owner}"}, request(),
     "{body.repository.owner}: body.repository is a JSON object with no 'owner'"),
    ({"data": "{body.commits.3.id}"}, request(), "body.commits is a JSON list with no '3'"),
    ({"data": "{body.ref.x}"}, request(), "body.ref is a JSON string with no 'x'"),
    ({"name": "gh/{headers.x-event}"}, request(), "{headers.x-event}: the header x-event is "
                                                  "absent"),
    ({"name": "gh/{query.kind}"}, request(), "{query.kind}: the query has no 'kind'"),
    ({"data": "{body}"}, request(b"<xml/>"), "the body is not JSON"),
])
def test_a_mapping_names_what_the_body_lacks(fields: dict[str, Any], req: WebhookRequest,
                                             reason: str) -> None:
    with pytest.raises(WebhookBodyError) as info:
        events_of(source(fields), req, NO_ID)
    assert str(info.value).startswith("webhook 'github': ") and reason in str(info.value)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"name": "{event}"}, "{event} names neither body, headers nor query"),
    ({"name": "a/{body.}"}, "{body.} has an empty step"),
    ({"name": "a/{headers}"}, "{headers} names no header"),
    ({"data": {"q": ["{query}"]}}, "transform['data']['q'][0]: '{query}': {query} names no query"),
    ({"name": "a/{b"}, "a lone '{'; write '{{' for a literal brace"),
    ({"name": "a/}"}, "a lone '}'"),
    ({1: "x"}, "has the int key 1"),
])
def test_a_mapping_that_could_never_render_is_refused_at_declaration(
        fields: dict[Any, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        source(fields)
    assert str(info.value).startswith("webhook 'github': transform") and reason in str(info.value)


# Ids from the delivery id --------------------------------------------------------------------


def several(req: WebhookRequest, verified: Verified) -> list[dict[str, Any]]:
    return [{"name": "a/b"}, {"name": "a/b", "id": "mine"}, {"name": "a/b", "id": ""}]


def test_the_only_event_s_id_is_the_source_and_delivery_id() -> None:
    [event] = events_of(source(), request(), Verified(delivery_id="72d3162e"))
    assert event["id"] == "github-72d3162e"


def test_several_events_are_numbered_by_position_and_keep_their_own_ids() -> None:
    out = events_of(source(several), request(), Verified(delivery_id="d9"))
    assert [e["id"] for e in out] == ["github-d9-0", "mine", "github-d9-2"]


def test_a_long_id_is_the_source_and_a_digest() -> None:
    delivery = "x" * 130
    [event] = events_of(source(), request(), Verified(delivery_id=delivery))
    digest = hashlib.sha256(f"github-{delivery}".encode()).hexdigest()
    assert event["id"] == f"github-{digest}"
    name = "s" * 64  # the longest source name still fits 128 characters
    [event] = events_of(source(name=name), request(name=name), Verified(delivery_id=delivery))
    assert len(event["id"]) == 128 and event["id"].startswith(f"{name}-")


def test_an_id_at_the_limit_is_kept_as_it_is() -> None:
    delivery = "y" * (128 - len("github-"))
    [event] = events_of(source(), request(), Verified(delivery_id=delivery))
    assert event["id"] == f"github-{delivery}"


def test_without_a_delivery_id_the_endpoint_generates_ids() -> None:
    out = events_of(source(several), request(), NO_ID)
    assert [e.get("id", "absent") for e in out] == ["absent", "mine", ""]
    assert "id" not in events_of(source(), request(), NO_ID)[0]
