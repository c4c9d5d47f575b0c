"""Declaring webhook sources with ``app.webhook``: checked at registration, named when wrong."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import App, ConfigurationError
from runtime.ingress.webhooks import secret_refs
from runtime.webhooks import GitHub, Hmac, Stripe

STRIPE_REFS = {"STRIPE_WEBHOOK_SECRET": "secretsmanager:stripe/webhook"}


def test_a_declared_source_is_found_by_name() -> None:
    app = App("shop")
    stripe = app.webhook("stripe", verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"),
                         secrets=STRIPE_REFS)
    github = app.webhook("git_hub-2", verify=GitHub(secret="GH"),
                         transform={"name": "github/{headers.x-github-event}", "data": "{body}"},
                         secrets={"GH": "ssm:/github/secret"})
    assert app.find_webhook("stripe") is stripe and app.find_webhook("nope") is None
    assert app.webhooks == {"stripe": stripe, "git_hub-2": github}
    assert stripe.secrets == STRIPE_REFS and stripe.transform is None
    assert secret_refs(list(app.webhooks.values())) == {**STRIPE_REFS, "GH": "ssm:/github/secret"}


@pytest.mark.parametrize("name", ["Stripe", "", "-stripe", "a/b", "s" * 65, "stripe hooks"])
def test_a_source_name_is_a_lower_case_path_segment(name: str) -> None:
    with pytest.raises(ConfigurationError, match="a source name is 1-64 lower-case letters"):
        App("shop").webhook(name, verify=Stripe(secret="S"), secrets={"S": "ssm:s"})


@pytest.mark.parametrize("verify", ["STRIPE_WEBHOOK_SECRET", Stripe, object()])
def test_verify_must_be_a_signature_scheme(verify: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        App("shop").webhook("stripe", verify=verify, secrets=STRIPE_REFS)
    assert "webhook 'stripe': verify= must be a signature scheme (Stripe(...), GitHub(...) or " \
           "Hmac(...) from runtime.webhooks)" in str(info.value)


def test_a_transform_is_a_function_or_a_mapping() -> None:
    with pytest.raises(ConfigurationError, match="transform= must be a function or a mapping, "
                                                 "got str"):
        App("shop").webhook("stripe", verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"),
                            transform="{body}", secrets=STRIPE_REFS)


@pytest.mark.parametrize("secrets", [None, {}, {"OTHER": "ssm:/other"}])
def test_the_verifier_s_secret_must_say_where_it_lives(secrets: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        App("shop").webhook("hooks", verify=Hmac(secret="HOOK_SECRET"), secrets=secrets)
    assert ("webhook 'hooks': its secret 'HOOK_SECRET' is not in secrets=; say where it lives "
            "on AWS, e.g. secrets={'HOOK_SECRET': 'secretsmanager:<name>'}") in str(info.value)


def test_a_secret_reference_must_be_secrets_manager_or_ssm() -> None:
    with pytest.raises(ConfigurationError) as info:
        App("shop").webhook("stripe", verify=Stripe(secret="S"), secrets={"S": "vault:x"})
    assert str(info.value).startswith("webhook 'stripe': secrets: ")
    assert "must be 'secretsmanager:<name or ARN>' or" in str(info.value)


def test_one_secret_name_is_one_secret_across_sources() -> None:
    app = App("shop")
    app.webhook("a", verify=GitHub(secret="SHARED"), secrets={"SHARED": "ssm:/one"})
    app.webhook("b", verify=GitHub(secret="SHARED"), secrets={"SHARED": "ssm:/one"})
    with pytest.raises(ConfigurationError) as info:
        app.webhook("c", verify=GitHub(secret="SHARED"), secrets={"SHARED": "ssm:/two"})
    assert "webhook 'c': secret 'SHARED' is 'ssm:/two' here and 'ssm:/one' in another source" \
        in str(info.value)
    assert sorted(app.webhooks) == ["a", "b"]  # the refused source is not kept


def test_a_name_is_declared_once() -> None:
    app = App("shop")
    app.webhook("stripe", verify=Stripe(secret="STRIPE_WEBHOOK_SECRET"), secrets=STRIPE_REFS)
    with pytest.raises(ConfigurationError, match="webhook 'stripe' is already declared in app "
                                                 "'shop'"):
        app.webhook("stripe", verify=GitHub(secret="GH"), secrets={"GH": "ssm:/gh"})


def test_the_webhooks_view_is_a_copy() -> None:
    app = App("shop")
    app.webhooks["x"] = None  # type: ignore[assignment]
    assert app.webhooks == {}


def test_the_module_docstring_s_declaration_runs() -> None:
    import textwrap

    import runtime.webhooks

    doc = runtime.webhooks.__doc__ or ""
    snippet = textwrap.dedent(doc.split("::\n", 1)[1].split("\nA request", 1)[0])
    scope: dict[str, Any] = {}
    exec(compile(snippet, "runtime/webhooks.py docstring", "exec"), scope)
    assert sorted(scope["app"].webhooks) == ["github", "stripe"]
