"""AWS settings declared with a function: validated at registration, named when wrong."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import App, AwsOptions, ConfigurationError, TriggerEvent, secret
from runtime.deploy import MIN_MEMORY_MB


def noop(ctx: Any) -> None:
    return None


def register(**options: Any) -> Any:
    app = App("shop")
    return app.function(id="mailer", trigger=TriggerEvent("a/b"), **options)(noop)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memmory_mb": 512}, "unknown option(s) 'memmory_mb' (an AWS setting: "
                              "aws=AwsOptions(memory_mb=...))"),
        ({"retires": 3}, "'retires' (did you mean 'retries'?)"),
        ({"reserved_concurrency": 5}, "'reserved_concurrency' (now aws=AwsOptions("
                                      "max_concurrency=...))"),
        ({"aws": {"memory_mb": 20000}}, "aws.memory_mb: Input should be less than or equal "
                                        "to 10240 (got 20000)"),
        ({"aws": {"memory_mb": 256}}, "aws.memory_mb: 256 MB cannot replay a run at the 32 MiB "
                                      "output limit"),
        ({"aws": AwsOptions(memory_mb=128)}, "measured by bench/run_memory.py); use at least "
                                             "512"),
        ({"aws": {"max_concurrency": 1}}, "aws.max_concurrency: Input should be greater than "
                                          "or equal to 2"),
        ({"aws": {"timeout_s": "60"}}, "aws.timeout_s: Input should be a valid integer"),
        ({"aws": {"memory": 512}}, "aws.memory: Extra inputs are not permitted"),
        ({"aws": {"environment": {"AWS_REGION": "x"}}}, "'AWS_REGION' is reserved"),
        ({"aws": {"environment": {"1BAD": "x"}}}, "'1BAD' is not an environment variable"),
        ({"aws": {"secrets": {"KEY": "vault:x"}}}, "must be 'secretsmanager:<name or ARN>'"),
        ({"aws": {"policies": [{"actions": ["s3 GetObject"], "resources": ["*"]}]}},
         "aws.policies.0.actions: not IAM actions"),
        ({"aws": {"policies": [{"actions": ["s3:GetObject"], "resources": ["my-bucket"]}]}},
         "not ARNs"),
        ({"aws": {"vpc": {"subnet_ids": ["subnet-1"], "security_group_ids": ["sg-0123abcd"]}}},
         "aws.vpc.subnet_ids.0"),
        ({"aws": {"layers": ["tools:3"]}}, "not layer version ARNs"),
        ({"aws": "big"}, "aws must be AwsOptions(...) or a dict, got str"),
    ],
)
def test_bad_settings_are_refused_naming_the_function_and_setting(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        register(**options)
    assert str(info.value).startswith("function 'mailer': "), str(info.value)
    assert message in str(info.value), str(info.value)


def test_settings_are_kept_and_shared_with_the_failure_handler() -> None:
    app = App("shop")
    fn = app.function(id="mailer", trigger=TriggerEvent("a/b"), on_failure=noop,
                      aws={"memory_mb": 512, "environment": {"FROM": "x"}})(noop)
    assert fn.aws == AwsOptions(memory_mb=512, environment={"FROM": "x"})
    assert app.get("mailer-failure").aws == fn.aws
    assert App("x").function(id="f", trigger=TriggerEvent("a/b"))(noop).aws == AwsOptions()


def test_the_default_memory_is_the_least_a_run_at_the_limits_replays_in() -> None:
    assert AwsOptions().memory_mb == MIN_MEMORY_MB == 512
    assert register(aws={"memory_mb": MIN_MEMORY_MB}).aws.memory_mb == MIN_MEMORY_MB


def test_a_secret_locally_is_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEPKIT_SECRETS", raising=False)
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2")
    assert secret("SMTP_PASSWORD") == "hunter2"
    assert secret("NOT_SET_ANYWHERE", default=None) is None
    with pytest.raises(ConfigurationError, match=r"export NOT_SET_ANYWHERE=\.\.\."):
        secret("NOT_SET_ANYWHERE")


def test_an_undeclared_secret_on_aws_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPKIT_SECRETS", '{"SMTP_PASSWORD": "secretsmanager:prod/smtp"}')
    monkeypatch.setenv("OTHER", "not read on AWS")
    with pytest.raises(ConfigurationError, match=r"'OTHER' is not declared .* SMTP_PASSWORD"):
        secret("OTHER")
