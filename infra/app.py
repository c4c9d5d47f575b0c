"""CDK entry point (``cdk.json``: ``.venv/bin/python -m infra.app``): composes the stack.

Settings come from CDK context (defaults in ``cdk.json``); the functions from ``functions/``.
Every synth is checked with cdk-nag's AWS Solutions rules.
"""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.bundling import PROJECT_ROOT
from infra.stack import StackSettings, StepkitStack
from runtime.discovery import load_app


def main() -> None:
    """Synthesize the stepkit stack into ``cdk.out``."""
    app = cdk.App()
    settings = StackSettings.from_context(app.node)
    functions = load_app(root=PROJECT_ROOT)
    StepkitStack(app, settings.stack_name(functions.id), settings=settings, app=functions)
    # cdk-nag 3 is a policy-validation plugin: a finding without an acknowledgment (each
    # carries its reason) fails the synth and is written to cdk.out/validation-report.json.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    app.synth()


if __name__ == "__main__":
    main()
