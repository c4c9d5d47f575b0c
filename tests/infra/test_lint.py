"""What `cdk deploy` would ship, checked without AWS: cfn-lint, cdk-nag, the real Lambda
asset, and a synth through the pinned CDK CLI."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Annotations, Match
from cdk_nag import AwsSolutionsChecks

from infra.bundling import PROJECT_ROOT, LambdaAsset, build_asset
from infra.stack import StackSettings, StepkitStack

#: Acknowledged cdk-nag rules (each with its reason in the code). A new one should be a
#: deliberate decision, so it has to be added here too.
ACKNOWLEDGED = {"AwsSolutions-L1", "AwsSolutions-SQS3"}  # SQS3: the reaper's on-failure queue
#: cfn-lint warnings allowed: W3005 is the DependsOn on its role that CDK itself adds to
#: every Lambda function (redundant with the GetAtt, harmless).
ALLOWED_WARNINGS = {"W3005"}


def nag_synth(stack_factory: Any, outdir: Path) -> tuple[cdk.Stack, Exception | None]:
    app = cdk.App(outdir=str(outdir))
    stack = stack_factory(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    try:
        app.synth()
    except RuntimeError as exc:  # ValidationFailed: unacknowledged findings
        return stack, exc
    return stack, None


@pytest.fixture(scope="module")
def nagged(tmp_path_factory: pytest.TempPathFactory) -> tuple[StepkitStack, Path]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    stack, error = nag_synth(
        lambda app: StepkitStack(app, "stepkit-demo", settings=StackSettings(bundle=False)),
        outdir,
    )
    report = outdir / "validation-report.json"
    assert error is None, report.read_text() if report.exists() else error
    return stack, outdir


def test_cfn_lint_finds_no_errors(nagged: tuple[StepkitStack, Path]) -> None:
    template = nagged[1] / "stepkit-demo.template.json"
    done = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "json",
                           str(template)], capture_output=True, text=True, check=False)
    findings = json.loads(done.stdout or "[]")
    assert done.returncode in (0, 4), done.stderr  # 4: warnings only
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == []
    assert {f["Rule"]["Id"] for f in findings} <= ALLOWED_WARNINGS, findings


def test_cdk_nag_aws_solutions_has_no_unacknowledged_findings(
    nagged: tuple[StepkitStack, Path]
) -> None:
    stack, outdir = nagged  # the fixture's synth would have raised on a finding
    errors = Annotations.from_stack(stack).find_error(
        "*", Match.string_like_regexp("AwsSolutions-.*"))
    assert errors == []
    report = outdir / "validation-report.json"
    if report.exists():
        plugins = json.loads(report.read_text())["pluginReports"]
        assert [v for p in plugins for v in p["violations"]] == []


def test_every_acknowledgment_has_a_reason(nagged: tuple[StepkitStack, Path]) -> None:
    found: set[str] = set()
    for construct in nagged[0].node.find_all():
        for entry in construct.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in entry.data.items():
                    found.add(rule.split("::")[-1])
                    assert isinstance(reason, str) and len(reason.split()) >= 8, (rule, reason)
    assert found == ACKNOWLEDGED


def test_cdk_nag_is_really_checking(tmp_path: Path) -> None:
    """Negative control: a plain queue without SSL enforcement or a DLQ must fail the synth."""

    def bad(app: cdk.App) -> cdk.Stack:
        stack = cdk.Stack(app, "bad")
        sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.UNENCRYPTED)
        return stack

    _, error = nag_synth(bad, tmp_path)
    assert error is not None
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules


# -- the Lambda asset (real bundling, once) -------------------------------------------------

AARCH64 = 183  # ELF e_machine


@pytest.fixture(scope="module")
def asset() -> LambdaAsset:
    return build_asset(dependencies=True)


def _imports(path: Path, package: str) -> set[str]:
    """Dotted names a module imports (``from a import b`` gives a and a.b), outside
    ``if TYPE_CHECKING:`` blocks."""
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    names.update(a.name for a in sub.names)
                elif isinstance(sub, ast.ImportFrom):
                    base = sub.module or ""
                    if sub.level:
                        parent = package.rsplit(".", sub.level - 1)[0] if sub.level > 1 \
                            else package
                        base = f"{parent}.{base}".rstrip(".")
                    names.add(base)
                    names.update(f"{base}.{a.name}" for a in sub.names)

    visit(ast.parse(path.read_text()).body)
    return names


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def test_asset_holds_sources_and_locked_arm64_dependencies(asset: LambdaAsset) -> None:
    root = asset.path
    for rel in ("runtime/handlers/worker.py", "runtime/handlers/router.py",
                "functions/__init__.py", "aws_lambda_powertools", "celpy", "croniter",
                "pydantic", "tzdata", "boto3"):
        assert (root / rel).exists(), rel
    assert not (root / "bin").exists()
    binaries = list(root.rglob("*.so"))
    assert any(b.name.startswith("_pydantic_core.cpython-313-aarch64") for b in binaries)
    for binary in binaries:
        header = binary.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64, \
            binary


def test_handler_imports_are_satisfied_by_the_asset(asset: LambdaAsset) -> None:
    """Follow imports from both handlers and every functions module through the project's
    own modules; every third-party module they reach must be in the asset."""
    root = asset.path
    pending = ["runtime.handlers.worker", "runtime.handlers.router"]
    pending += [f"functions.{p.stem}" for p in (root / "functions").glob("*.py")]
    seen: set[str] = set()
    missing: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        path = _module_file(root, name)
        if path is None:
            continue  # `from pkg import attribute`: the attribute, not a module
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in _imports(path, package):
            top = imported.split(".")[0]
            if top in ("runtime", "functions"):
                pending.append(imported)
            elif top not in sys.stdlib_module_names and not (
                (root / top).is_dir() or (root / f"{top}.py").is_file()
                or any(root.glob(f"{top}.*.so"))
            ):
                missing.add(f"{top} (imported by {name})")
    assert "runtime.handlers.service" in seen and "runtime.backends.aws.store" in seen
    assert missing == set()


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test_asset_is_reproducible_and_cached(asset: LambdaAsset, tmp_path: Path) -> None:
    again = build_asset(dependencies=True)
    assert again == asset  # cached: same directory, same hash
    fresh = build_asset(dependencies=True, cache_dir=tmp_path)  # a rebuild from scratch
    assert fresh.hash == asset.hash
    assert _tree_digest(fresh.path) == _tree_digest(asset.path)


# -- the pinned CLI -------------------------------------------------------------------------


def test_pinned_cli_synthesizes_the_app(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("the CDK CLI needs node + npm: install Node.js (>= 18) with npm", pytrace=False)
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true"}
    out = tmp_path / "cdk.out"
    done = subprocess.run(
        ["scripts/cdk.sh", "synth", "-q", "--no-notices", "-c", "stepkit:bundle=false",
         "-o", str(out)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    version = (PROJECT_ROOT / "infra/node_modules/aws-cdk/package.json").read_text()
    assert json.loads(version)["version"].startswith("2.")
    templates = list(out.glob("*.template.json"))
    assert [t.name for t in templates] == ["stepkit-demo.template.json"]
    assert "AWS::Lambda::Function" in templates[0].read_text()
