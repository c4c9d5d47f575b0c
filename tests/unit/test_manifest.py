"""The step manifest: what the source says of each function's steps, and what a deploy changes.

Each comparison case is two versions of one function, as deployed and as changed, registered
in two apps with the same id (as a redeploy does).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from runtime import App, Context, TriggerEvent
from runtime.backends.aws.manifest import deployed_manifest
from runtime.manifest import (
    METADATA_BUDGET_BYTES,
    METADATA_KEY,
    FunctionSteps,
    Manifest,
    build_manifest,
    from_template,
    stack_name,
)
from runtime.manifest_diff import compare

T = TriggerEvent("shop/order.placed")


def _noop() -> None:
    return None


def _id() -> str:
    return "computed"


def agent(ctx: Context) -> None:
    plan = ctx.step.run("plan", _noop)
    for i in range(3):
        ctx.step.run(f"think-{i}", _noop)
    if plan:
        ctx.step.sleep("cool-down", "1m")
    ctx.step.parallel([
        lambda: ctx.step.run("left", _noop),
        lambda: ctx.step.invoke("right", function="child", timeout="1h"),
    ])
    ctx.step.run(_id(), _noop)
    ctx.step.sleep_until("until-monday", "2030-01-07T00:00:00Z")
    ctx.step.wait_for_event("approval", event="shop/approved", timeout="1d")
    ctx.step.send_event("announce", {"name": "shop/done"})


def _steps(handler: Any, fn_id: str = "agent") -> list[dict[str, Any]]:
    app = App("shop")
    app.function(id=fn_id, trigger=T)(handler)
    return build_manifest(app).to_json()["functions"][fn_id]["steps"]  # type: ignore[no-any-return]


def test_steps_are_listed_in_source_order_with_kind_pattern_nesting_and_branch() -> None:
    assert _steps(agent) == [
        {"id": "plan", "kind": "run", "order": 0},
        {"id": "think-{}", "kind": "run", "order": 1, "pattern": True, "within": ["loop"]},
        {"id": "cool-down", "kind": "sleep", "order": 2, "within": ["if"]},
        {"id": "left", "kind": "run", "order": 3, "within": ["parallel"], "branch": "0"},
        {"id": "right", "kind": "invoke", "order": 4, "within": ["parallel"], "branch": "1"},
        {"id": None, "kind": "run", "order": 5, "dynamic": True},
        {"id": "until-monday", "kind": "sleep_until", "order": 6},
        {"id": "approval", "kind": "wait_for_event", "order": 7},
        {"id": "announce", "kind": "send_event", "order": 8},
    ]


def nested(ctx: Context) -> None:
    branches = [lambda: ctx.step.run("any", _noop)]
    ctx.step.parallel([
        lambda: ctx.step.parallel([lambda: ctx.step.run("inner", _noop)]),
        lambda: ctx.step.run("outer", _noop),
    ])
    ctx.step.parallel(branches)

    def helper() -> None:
        ctx.step.run("in-helper", _noop)

    helper()


def test_nested_parallel_branches_and_nested_functions_are_marked() -> None:
    assert _steps(nested) == [
        {"id": "any", "kind": "run", "order": 0, "within": ["function"]},
        {"id": "inner", "kind": "run", "order": 1, "within": ["parallel", "parallel"],
         "branch": "0.0"},
        {"id": "outer", "kind": "run", "order": 2, "within": ["parallel"], "branch": "1"},
        {"id": "in-helper", "kind": "run", "order": 3, "within": ["function"]},
    ]


def patched(ctx: Context) -> None:
    if ctx.patched("charge-with-fee"):
        ctx.step.run("charge-with-fee", _noop)


def test_a_patched_call_is_listed_as_the_run_step_that_records_it() -> None:
    assert _steps(patched) == [
        {"id": "patched:charge-with-fee", "kind": "run", "order": 0},
        {"id": "charge-with-fee", "kind": "run", "order": 1, "within": ["if"]},
    ]


def test_a_handler_without_source_is_skipped_with_a_note() -> None:
    app = App("shop")
    app.function(id="built-in", trigger=T)(print)  # type: ignore[arg-type]
    assert build_manifest(app).functions["built-in"] == FunctionSteps(
        skipped="the handler's source is not available")


def test_the_manifest_is_deterministic_json_and_reads_back() -> None:
    app = App("shop")
    app.function(id="b-agent", trigger=T)(agent)
    app.function(id="a-nested", trigger=T)(nested)
    manifest = build_manifest(app)
    text = manifest.dumps()
    assert text == build_manifest(app).dumps()
    data = json.loads(text)
    assert data["version"] == 1 and data["app"] == "shop"
    assert list(data["functions"]) == ["a-nested", "b-agent"]
    assert Manifest.from_json(data) == manifest


def test_past_its_budget_the_template_carries_a_digest_per_function() -> None:
    app = App("shop")
    app.function(id="agent", trigger=T)(agent)
    small = build_manifest(app)
    assert small.template_form() == small.to_json()
    big = Manifest(app="shop", functions={
        f"fn-{i:04d}": small.functions["agent"] for i in range(1000)})
    form = big.template_form()
    assert len(json.dumps(form)) < METADATA_BUDGET_BYTES < len(big.dumps(indent=None))
    assert form["digests"]["fn-0000"] == small.functions["agent"].digest()
    assert "functions" not in form


# The deployed version and each change, as a deploy would bring it.
def deployed(ctx: Context) -> None:
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep("cool-down", "1h")
    ctx.step.run("charge-card", _noop)
    ctx.step.run("send-receipt", _noop)


def renamed(ctx: Context) -> None:
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep("cool-down", "1h")
    ctx.step.run("charge-customer", _noop)
    ctx.step.run("send-receipt", _noop)


def removed(ctx: Context) -> None:
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep("cool-down", "1h")
    ctx.step.run("send-receipt", _noop)


def reordered(ctx: Context) -> None:
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep("cool-down", "1h")
    ctx.step.run("send-receipt", _noop)
    ctx.step.run("charge-card", _noop)


def moved_first(ctx: Context) -> None:
    ctx.step.run("send-receipt", _noop)
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep("cool-down", "1h")
    ctx.step.run("charge-card", _noop)


def kind_changed(ctx: Context) -> None:
    ctx.step.run("reserve-stock", _noop)
    ctx.step.run("cool-down", _noop)
    ctx.step.run("charge-card", _noop)
    ctx.step.run("send-receipt", _noop)


def added(ctx: Context) -> None:
    ctx.step.run("check-fraud", _noop)
    ctx.step.run("reserve-stock", _noop)
    ctx.step.sleep_until("cool-down", "2030-01-01T00:00:00Z")  # recorded as a sleep too
    ctx.step.run("charge-card", _noop)
    ctx.step.run("send-receipt", _noop)
    ctx.step.run(_id(), _noop)


def _changes(old: Any, new: Any) -> list[tuple[str, str, str | None, str]]:
    apps = [App("shop"), App("shop")]
    for app, handler in zip(apps, (old, new), strict=True):
        app.function(id="checkout", trigger=T)(handler)
    before, after = (build_manifest(a) for a in apps)
    return [(c.rule, c.function, c.step, c.message)
            for c in compare(Manifest.from_json(json.loads(before.dumps())), after)]


def test_a_renamed_step_is_named_with_its_likely_new_id() -> None:
    [(rule, fn, step, message)] = _changes(deployed, renamed)
    assert (rule, fn, step) == ("step-renamed", "checkout", "charge-card")
    assert "'charge-card' renamed to 'charge-customer'?" in message
    assert "will run 'charge-customer' again" in message


def test_a_removed_step_is_named() -> None:
    [(rule, fn, step, message)] = _changes(deployed, removed)
    assert (rule, fn, step) == ("step-removed", "checkout", "charge-card")
    assert "step 'charge-card' (run) was removed" in message


def test_reordered_steps_name_the_step_that_moved_and_the_one_it_passed() -> None:
    [(rule, fn, step, message)] = _changes(deployed, reordered)
    assert (rule, fn, step) == ("step-order", "checkout", "send-receipt")
    assert "step 'send-receipt' now comes before 'charge-card'" in message
    [(rule, _, step, message)] = _changes(deployed, moved_first)  # one step moved, one change
    assert "step 'send-receipt' now comes before 'reserve-stock'" in message


def test_a_step_of_another_kind_under_the_same_id_would_hold_runs_in_flight() -> None:
    [(rule, fn, step, message)] = _changes(deployed, kind_changed)
    assert (rule, fn, step) == ("step-kind", "checkout", "cool-down")
    assert "from sleep to run" in message and "held on nondeterminism" in message


def test_added_steps_dynamic_ids_and_sleep_until_for_sleep_are_no_change() -> None:
    assert _changes(deployed, added) == []
    assert _changes(deployed, deployed) == []


def loop_v1(ctx: Context) -> None:
    for _ in range(2):
        ctx.step.run("poll", _noop)
        ctx.step.sleep("wait-a-bit", "1m")
    ctx.step.parallel([lambda: ctx.step.run("a", _noop), lambda: ctx.step.run("b", _noop)])


def loop_v2(ctx: Context) -> None:
    for _ in range(2):
        ctx.step.sleep("wait-a-bit", "1m")
        ctx.step.run("poll", _noop)
    ctx.step.parallel([lambda: ctx.step.run("b", _noop), lambda: ctx.step.run("a", _noop)])


def test_steps_in_loops_are_not_ordered_but_a_branch_is_part_of_the_key() -> None:
    found = [(rule, step, message) for rule, _, step, message in _changes(loop_v1, loop_v2)]
    assert [(rule, step) for rule, step, _ in found] == [
        ("step-renamed", "a"), ("step-renamed", "b")]
    assert "'a' in parallel branch 0 renamed to 'b' in parallel branch 0?" in found[0][2]


def test_a_removed_function_is_named() -> None:
    app = App("shop")
    app.function(id="checkout", trigger=T)(deployed)
    app.function(id="refund", trigger=T)(removed)
    old = build_manifest(app)
    now = App("shop")
    now.function(id="checkout", trigger=T)(deployed)
    [change] = compare(old, build_manifest(now))
    assert (change.rule, change.function, change.step) == ("function-removed", "refund", None)
    assert "runs in flight would be stranded" in change.message


def test_against_digests_a_changed_function_is_named_without_its_steps() -> None:
    old, new = App("shop"), App("shop")
    old.function(id="checkout", trigger=T)(deployed)
    old.function(id="refund", trigger=T)(deployed)
    new.function(id="checkout", trigger=T)(renamed)
    new.function(id="refund", trigger=T)(deployed)
    digests = build_manifest(old)
    digests = Manifest(app="shop", functions={}, digests={
        k: v.digest() for k, v in digests.functions.items()})
    changes = compare(Manifest.from_json(digests.to_json()), build_manifest(new))
    assert [(c.rule, c.function) for c in changes] == [("step-changes", "checkout")]


def _template(manifest: Manifest) -> dict[str, Any]:
    return {"Metadata": {METADATA_KEY: manifest.template_form()},
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}


def test_the_deployed_stacks_manifest_is_read_from_its_template() -> None:
    app = App("shop")
    app.function(id="checkout", trigger=T)(deployed)
    manifest = build_manifest(app)
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        assert deployed_manifest(stack_name("shop"), cfn) is None  # nothing deployed yet
        cfn.create_stack(StackName="stepkit-shop", TemplateBody=json.dumps(_template(manifest)))
        assert deployed_manifest("stepkit-shop", cfn) == manifest


def test_a_template_without_a_manifest_has_none_and_a_foreign_one_is_refused() -> None:
    assert from_template(json.dumps({"Resources": {}})) is None
    with pytest.raises(ValueError, match="version 1"):
        from_template({"Metadata": {METADATA_KEY: {"version": 99}}})
    assert stack_name("my_shop", "prod") == "stepkit-my-shop-prod"
