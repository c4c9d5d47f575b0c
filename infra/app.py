"""CDK entry point (``cdk.json``: ``.venv/bin/python -m infra.app``): composes the stack.

Settings come from CDK context (defaults in ``cdk.json``); the functions from ``functions/``.
Every synth is checked with cdk-nag's AWS Solutions rules, writes the step manifest to
``cdk.out/stepkit-manifest.json`` and, given ``-c stepkit:deployedManifest=<file or "aws">``,
warns of each recorded step the deploy would rename, remove, reorder or change the kind of.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.bundling import PROJECT_ROOT
from infra.stack import StackSettings, StepkitStack
from runtime.discovery import load_app
from runtime.manifest import MANIFEST_FILE, Manifest
from runtime.manifest_diff import compare

#: CDK context: the last deployed step manifest to compare with, a file or ``aws``.
DEPLOYED_MANIFEST = "stepkit:deployedManifest"


def main() -> None:
    """Synthesize the stepkit stack into ``cdk.out``."""
    app = cdk.App()
    settings = StackSettings.from_context(app.node)
    functions = load_app(root=PROJECT_ROOT)
    stack = StepkitStack(app, settings.stack_name(functions.id), settings=settings,
                         app=functions)
    warn_of_step_changes(stack, app.node.try_get_context(DEPLOYED_MANIFEST))
    # cdk-nag 3 is a policy-validation plugin: a finding without an acknowledgment (each
    # carries its reason) fails the synth and is written to cdk.out/validation-report.json.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    assembly = app.synth()
    write_manifest(stack, Path(assembly.directory))


def write_manifest(stack: StepkitStack, out: Path) -> Path:
    """Write the stack's step manifest next to its template; return the file."""
    path = out / MANIFEST_FILE
    path.write_text(stack.manifest.dumps() + "\n")
    return path


def warn_of_step_changes(stack: StepkitStack, deployed: str | None) -> None:
    """A synth warning per change to the deployed steps (``stepkit check`` says the same)."""
    if not deployed:
        return
    if deployed == "aws":
        from runtime.backends.aws.manifest import deployed_manifest

        old = deployed_manifest(stack.stack_name)
    else:
        old = Manifest.from_json(json.loads(Path(deployed).read_text()))
    for change in compare(old, stack.manifest) if old else ():
        cdk.Annotations.of(stack).add_warning_v2(f"stepkit:{change.rule}", change.message)


if __name__ == "__main__":
    main()
