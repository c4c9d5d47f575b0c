"""What `cdk deploy` would ship, checked without AWS: cfn-lint, cdk-nag, the real Lambda
asset, and a synth through the pinned CDK CLI."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from infra import import_graph, nag
from infra.bundling import (
    LAMBDA_RUNTIME,
    PROJECT_ROOT,
    PYTHON_VERSION,
    SOURCES,
    LambdaAsset,
    Target,
    build_asset,
    lambda_entries,
)
from infra.stack import StackSettings, StepkitStack

# One worker synthesizes every stack (scripts/test.sh: --dist loadgroup): aws-cdk-lib and
# its jsii Node process load once per run, not once per worker.
pytestmark = pytest.mark.xdist_group("cdk")

#: Acknowledged cdk-nag rules, each with its reason in infra/nag.py. A new one should be a
#: deliberate decision, so it has to be added here too.
ACKNOWLEDGED = {
    "AwsSolutions-SQS3",  # the delivery DLQ and the reaper's failure queue are DLQs
    "Serverless-LambdaDLQ",  # SQS event source mappings invoke synchronously
    "Serverless-LambdaEventSourceMappingDestination",  # not for SQS: the redrive policy is
    "Serverless-SQSRedrivePolicy",  # on the dead-letter queues themselves
    "Serverless-LambdaTracing",  # only while tracing is off (opt-in)
    # the one wildcard resource, and only it: timer schedules are named at run time
    f"AwsSolutions-IAM5[{nag.TIMER_SCHEDULES.format(group='demo-schedules')}]",
    "AwsSolutions-S1",  # no access log bucket for the payload bucket, only the app reaches it
    # the schedule census: retried by the next hour's run, its silence notified by its alarm
    "Serverless-LambdaAsyncFailureDestination",
    "AwsSolutions-IAM5[Resource::*]",  # the census's ListSchedules: no resource type in IAM
}


def payload_objects(stack: StepkitStack) -> str:
    """The other wildcard resource: payload objects are named at run time (run, digest)."""
    bucket = stack.payloads.bucket.node.default_child
    assert isinstance(bucket, cdk.CfnElement)
    return f"AwsSolutions-IAM5[{nag.PAYLOAD_OBJECTS.format(bucket=stack.get_logical_id(bucket))}]"
#: Findings still open: none (every rule and schedule target has the delivery DLQ).
UNFIXED: set[str] = set()
#: cfn-lint warnings allowed: W3005 is the DependsOn on its role that CDK itself adds to
#: every Lambda function (redundant with the GetAtt, harmless).
ALLOWED_WARNINGS = {"W3005"}


def nag_synth(stack_factory: Any, outdir: Path) -> tuple[cdk.Stack, Exception | None]:
    app = cdk.App(outdir=str(outdir))
    stack = stack_factory(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
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
    assert set(_violations(outdir)) == UNFIXED, _violations(outdir) or error
    return stack, outdir


def _violations(outdir: Path) -> dict[str, list[str]]:
    report = outdir / "validation-report.json"
    if not report.exists():
        return {}
    found: dict[str, list[str]] = {}
    for plugin in json.loads(report.read_text())["pluginReports"]:
        for violation in plugin["violations"]:
            found.setdefault(violation["ruleName"], []).append(violation["description"])
    return found


def test_cfn_lint_finds_no_errors(nagged: tuple[StepkitStack, Path]) -> None:
    # The root template and each nested stack's (the functions' groups).
    templates = sorted(nagged[1].glob("*.template.json"))
    assert len(templates) == 1 + len(nagged[0].groups)
    done = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "json",
                           *map(str, templates)], capture_output=True, text=True, check=False)
    findings = json.loads(done.stdout or "[]")
    assert done.returncode in (0, 4), done.stderr  # 4: warnings only
    errors = [f for f in findings if f["Level"] == "Error"]
    assert errors == []
    assert {f["Rule"]["Id"] for f in findings} <= ALLOWED_WARNINGS, findings


def test_cdk_nag_packs_have_no_unacknowledged_findings(
    nagged: tuple[StepkitStack, Path]
) -> None:
    assert set(_violations(nagged[1])) == UNFIXED


def _acknowledged(construct: Any) -> dict[str, str]:
    return {rule.split("::", 1)[-1]: reason for node in construct.node.find_all()
            for entry in node.node.metadata
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
            for rule, reason in entry.data.items()}


@pytest.mark.parametrize("tracing", ["Active", "PassThrough", None])
def test_tracing_is_acknowledged_only_when_off(tmp_path: Path, tracing: str | None) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "traced")
    function = lambda_.Function(stack, "Fn", runtime=LAMBDA_RUNTIME, handler="x.handler",
                                code=lambda_.Code.from_inline("x"))
    nag.acknowledge_untraced(function)
    if tracing is not None:  # set after the call, as a stack setting may be
        cfn = function.node.default_child
        assert isinstance(cfn, lambda_.CfnFunction)
        cfn.tracing_config = lambda_.CfnFunction.TracingConfigProperty(mode=tracing)
    app.synth()
    assert ("Serverless-LambdaTracing" in _acknowledged(stack)) == (tracing != "Active")


def test_lambda_runtime_is_the_newest_python(nagged: tuple[StepkitStack, Path]) -> None:
    """AwsSolutions-L1 and Serverless-LambdaLatestVersion pass without acknowledgement, and
    the asset's wheels are built for that same Python."""
    newest = max((r for r in dir(lambda_.Runtime) if r.startswith("PYTHON_3_")),
                 key=lambda r: int(r.rsplit("_", 1)[1]))
    assert LAMBDA_RUNTIME.name == getattr(lambda_.Runtime, newest).name
    assert LAMBDA_RUNTIME.name == f"python{PYTHON_VERSION}"


def test_every_acknowledgment_has_a_reason(nagged: tuple[StepkitStack, Path]) -> None:
    found = _acknowledged(nagged[0])
    for rule, reason in found.items():
        assert isinstance(reason, str) and len(reason.split()) >= 8, (rule, reason)
    assert set(found) == ACKNOWLEDGED | {payload_objects(nagged[0])}


def test_the_event_api_passes_cfn_lint_and_cdk_nag(tmp_path: Path) -> None:
    """With ``-c stepkit:eventApi=true``: one more acknowledged rule, authorization, which
    the endpoint's Lambda does itself (event key or webhook signature)."""
    stack, error = nag_synth(lambda app: StepkitStack(
        app, "stepkit-demo", settings=StackSettings(bundle=False, event_api=True)), tmp_path)
    assert isinstance(stack, StepkitStack) and stack.event_api is not None
    assert _violations(tmp_path) == {}, error
    found = _acknowledged(stack)
    assert set(found) == ACKNOWLEDGED | {payload_objects(stack), "AwsSolutions-APIG4"}
    assert all(len(reason.split()) >= 8 for reason in found.values())
    root = tmp_path / "stepkit-demo.template.json"
    done = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "json",
                           str(root)], capture_output=True, text=True, check=False)
    assert done.returncode in (0, 4), done.stderr
    assert {f["Rule"]["Id"] for f in json.loads(done.stdout or "[]")} <= ALLOWED_WARNINGS


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


#: What only runs on a developer's machine: none of it may reach a Lambda.
LOCAL_ONLY_SOURCES = ("runtime/cli", "runtime/control", "runtime/devserver",
                      "runtime/testing", "runtime/backends/local", "stepkit_emulators")
LOCAL_ONLY_PACKAGES = ("click", "httpx", "starlette", "uvicorn", "anyio", "h11", "moto",
                       "pytest", "aws_cdk", "cdk_nag", "cfnlint")


def test_asset_holds_sources_and_locked_arm64_dependencies(asset: LambdaAsset) -> None:
    root = asset.path
    for rel in ("runtime/handlers/worker.py", "runtime/handlers/router.py",
                "functions/__init__.py", "aws_lambda_powertools", "celpy", "croniter",
                "pydantic", "tzdata", "boto3"):
        assert (root / rel).exists(), rel
    assert not (root / "bin").exists()
    binaries = list(root.rglob("*.so"))
    abi = PYTHON_VERSION.replace(".", "")
    assert any(b.name.startswith(f"_pydantic_core.cpython-{abi}-aarch64") for b in binaries)
    assert any(b.name.startswith(f"_re2.cpython-{abi}-aarch64") for b in binaries)
    for binary in binaries:
        header = binary.read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64, \
            binary


def test_asset_leaves_out_what_only_runs_locally(asset: LambdaAsset) -> None:
    root = asset.path
    assert (PROJECT_ROOT / "runtime/devserver").is_dir()  # they exist, and are left out
    shipped = [rel for rel in LOCAL_ONLY_SOURCES if (root / rel).exists()]
    shipped += [name for name in LOCAL_ONLY_PACKAGES
                if (root / name).exists() or any(root.glob(f"{name}-*.dist-info"))]
    assert shipped == []


def test_asset_runtime_modules_are_exactly_those_the_handlers_import(asset: LambdaAsset) -> None:
    """Read from the asset itself: every module of runtime/ in it is reached from a handler
    or the app, and every module they reach is in it; so is every third-party import."""
    root = asset.path
    graph = import_graph.walk(root, lambda_entries(root), first_party=SOURCES)
    assert "runtime.handlers.service" in graph.modules
    assert "runtime.backends.aws.store" in graph.modules
    in_asset = {p.relative_to(root) for p in (root / "runtime").rglob("*.py")}
    assert in_asset == {p.relative_to(root) for n, p in graph.modules.items()
                        if n.partition(".")[0] == "runtime"}
    missing = {f"{top} (imported by {by})" for top, by in graph.external.items()
               if top not in sys.stdlib_module_names and not (
                   (root / top).is_dir() or (root / f"{top}.py").is_file()
                   or any(root.glob(f"{top}.*.so")))}
    assert missing == set()


_IMPORT_HANDLERS = """
import json, sys
from runtime.discovery import load_app
for name in {entries!r}:
    __import__(name)
load_app()
print(json.dumps(sorted(sys.modules)))
"""


def test_handlers_import_with_only_the_asset_on_the_path(tmp_path: Path) -> None:
    """The same asset built for this machine (its wheels are arm64): a bare interpreter
    (no site-packages) imports every handler and loads the app from it alone."""
    machine_target = Target(python_version=f"{sys.version_info[0]}.{sys.version_info[1]}",
                            platform=f"{platform.machine()}-manylinux_"
                                     + platform.libc_ver()[1].replace(".", "_"))
    local = build_asset(dependencies=True, cache_dir=tmp_path, target=machine_target)
    entries = lambda_entries(local.path)
    assert {"runtime.handlers.worker", "runtime.handlers.router"} <= set(entries)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(local.path),
           "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-S", "-c", _IMPORT_HANDLERS.format(entries=entries)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.partition(".")[0] in LOCAL_ONLY_PACKAGES]
    assert "runtime.devserver" not in loaded and "runtime.cli" not in loaded


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
    templates = [t for t in out.glob("*.template.json")
                 if not t.name.endswith(".nested.template.json")]  # the functions' groups
    assert [t.name for t in templates] == ["stepkit-demo.template.json"]
    assert "AWS::Lambda::Function" in templates[0].read_text()
    nested = list(out.glob("*.nested.template.json"))
    assert nested and all("AWS::Lambda::Function" in t.read_text() for t in nested)
    # The step manifest beside the templates, the one the root template carries.
    manifest = json.loads((out / "stepkit-manifest.json").read_text())
    assert json.loads(templates[0].read_text())["Metadata"]["Stepkit::StepManifest"] == manifest
    assert manifest["app"] == "demo" and manifest["functions"]


def test_the_cdk_tests_share_one_worker(request: pytest.FixtureRequest) -> None:
    """Under `--dist loadgroup` (scripts/test.sh) the `xdist_group("cdk")` mark takes effect.

    Those tests share module fixtures that synthesize whole apps (12 s for the 200-function
    one); split across workers, each worker synthesizes them again. pytest 9.2 with
    pytest-xdist 3.8 dropped the mark silently, which this names.
    """
    if getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        assert request.node.nodeid.endswith("@cdk"), (
            f"{request.node.nodeid}: xdist ignores the group mark; see pyproject's pytest pin")
