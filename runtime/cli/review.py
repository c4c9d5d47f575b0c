"""``stepkit check``: the review a durable function needs, run over ``functions/`` for CI.

Two sources: the app as registered (what ``load_app`` refuses is a critical finding; flow
options are read from the registry) and the source of each module (``ast``: step ids, sleeps,
waits, what a function calls out to), so every finding names its file and line and the fix.

With a deployed step manifest (``--deployed-manifest``, or ``--aws``: the deployed stack's),
it also warns of each recorded step the code renamed, removed, reordered or changed the kind
of, and each function it removed (:mod:`runtime.manifest_diff`): what runs in flight would
redo, block on, or be stranded by.

Severities: ``critical`` and ``error`` fail the check (exit 1); ``warning`` and ``info`` are
advice. The heuristics (what "looks like a payment", what "calls out") are deliberately
simple; a finding can be silenced for one function with a ``# stepkit: ignore[<rule>]``
comment on its ``@app.function`` line.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runtime.cli.base import cli
from runtime.cli.output import say
from runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from runtime.manifest import Manifest

#: The last deployed manifest of an app, given its id (``None``: nothing deployed yet).
DeployedManifest = Callable[[str], "Manifest | None"]

SEVERITIES = ("critical", "error", "warning", "info")
FAILING = frozenset({"critical", "error"})
_KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_GENERIC = re.compile(r"^(step|s|task|t|do|run|fn|f)[-_]?\d*$")
_MONEY = re.compile(r"pay|charge|refund|invoice|billing|checkout|purchase|subscription")
_CALLS_OUT = ("requests", "httpx", "urllib", "aiohttp", "boto3", "openai", "anthropic",
              "stripe", "smtplib")
_STEP_KINDS = {"run", "sleep", "sleep_until", "wait_for_event", "invoke", "send_event"}


@dataclass(frozen=True)
class Finding:
    """One thing to fix (or to know).

    Attributes:
        severity: ``critical``, ``error``, ``warning`` or ``info``.
        rule: A short name, as used in ``# stepkit: ignore[rule]``.
        file: The file, relative to the project.
        line: The line (1-based; 0 when the finding is about the package as a whole).
        function: The function id, when it concerns one.
        message: What is wrong.
        fix: What to do.
    """

    severity: str
    rule: str
    file: str
    line: int
    function: str | None
    message: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def check_project(root: Path, package: str = "functions",
                  deployed: DeployedManifest | None = None) -> list[Finding]:
    """Check the app in ``root/package``; findings sorted by severity, file and line.

    Args:
        root: The project directory.
        package: The package defining the app.
        deployed: Reads the last deployed step manifest, to compare the app's steps with.
    """
    from runtime.discovery import load_app

    base = root / package.replace(".", "/")
    files = sorted(base.rglob("*.py")) if base.is_dir() else []
    try:
        app = load_app(package, root=root)
    except ConfigurationError as exc:
        return [Finding("critical", "loads", _rel(base, root), 0, None, str(exc),
                        "fix the error above: nothing can be deployed until the app loads")]
    registered = {fn.id: fn for fn in app}
    found: list[Finding] = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        lines = path.read_text().splitlines()
        for func, call in _functions(tree):
            found += _check_function(func, call, registered, _rel(path, root), lines,
                                     _imports(tree))
    found += _check_deploy_limits(app, _rel(base, root))
    if deployed is not None:
        found += _check_steps_deployed(app, deployed, root, _rel(base, root))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda f: (order[f.severity], f.file, f.line, f.rule))


def _check_deploy_limits(app: Any, file: str) -> list[Finding]:
    """An error past an AWS limit the deployment must stay within, a warning from 80 %."""
    from runtime.backends.aws.resources import AppResources
    from runtime.deploy_limits import WARN_AT, FunctionShape, usage

    res = AppResources.for_app(app)
    shapes = []
    for fn in app:
        fr = res.function(fn.id)
        shapes.append(FunctionShape(
            id=fn.id, event_triggers=int(fr.trigger_pattern(app.id) is not None),
            cron_triggers=len(fr.schedules), queue_name=fr.queue,
            managed_policies=len(fn.aws.managed_policies) + (fn.aws.vpc is not None)))
    out = []
    for u in usage(shapes):
        if u.share < WARN_AT:
            continue
        over = u.used > u.maximum
        out.append(Finding(
            "error" if over else "warning", "deploy-limit", file, 0, None,
            f"{u.limit}: {u.used} of {u.maximum} ({u.share:.0%}) in {u.where}"
            + ("; the deploy would fail" if over else ""), u.fix))
    return out


def _check_steps_deployed(app: Any, deployed: DeployedManifest, root: Path,
                          file: str) -> list[Finding]:
    """A warning per change to the deployed steps that runs in flight would suffer."""
    from runtime.manifest import build_manifest
    from runtime.manifest_diff import compare

    try:
        old = deployed(app.id)
    except (ConfigurationError, OSError, ValueError) as exc:
        return [Finding("error", "deployed-manifest", file, 0, None,
                        f"cannot read the deployed step manifest: {exc}",
                        "pass the cdk.out/stepkit-manifest.json of the deployed commit, or "
                        "check the AWS credentials and region")]
    if old is None:
        return [Finding("info", "deployed-manifest", file, 0, None,
                        "the deployed stack carries no step manifest: nothing to compare",
                        "deploy once with this version; later deploys are compared")]
    current = build_manifest(app)
    found = [Finding("info", "step-manifest", _rel(Path(steps.file), root) if steps.file
                     else file, steps.line, fn_id,
                     f"function '{fn_id}': its steps cannot be compared with the deployed "
                     f"ones ({steps.skipped})", "define the handler in a module of the package")
             for fn_id, steps in current.functions.items() if steps.skipped]
    for change in compare(old, current):
        severity = "info" if change.rule == "step-changes" else "warning"
        found.append(Finding(severity, change.rule,
                             _rel(Path(change.file), root) if change.file else file,
                             change.line, change.function, change.message, change.fix))
    return found


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


_Func = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(tree: ast.Module) -> list[tuple[_Func, ast.Call]]:
    """Every ``@<app>.function(...)``-decorated function with its decorator call."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == "function"):
                    out.append((node, deco))
    return out


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _ignored(lines: list[str], line: int, rule: str) -> bool:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    match = re.search(r"#\s*stepkit:\s*ignore\[([^\]]*)\]", text)
    return match is not None and rule in [r.strip() for r in match.group(1).split(",")]


def _step_calls(func: _Func) -> list[tuple[str, ast.Call]]:
    """``<x>.step.<kind>(...)`` calls in the function's body."""
    out = []
    for node in ast.walk(func):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _STEP_KINDS
                and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "step"):
            out.append((node.func.attr, node))
    return out


def _check_function(func: _Func, call: ast.Call, registered: dict[str, Any],
                    file: str, lines: list[str], imports: set[str]) -> list[Finding]:
    id_node = _kw(call, "id")
    fn_id = id_node.value if isinstance(id_node, ast.Constant) and isinstance(
        id_node.value, str) else None
    where = call.lineno
    out: list[Finding] = []

    def add(severity: str, rule: str, line: int, message: str, fix: str) -> None:
        if not _ignored(lines, where, rule) and not _ignored(lines, line, rule):
            out.append(Finding(severity, rule, file, line, fn_id, message, fix))

    if not isinstance(fn_id, str):
        add("critical", "function-id", where,
            f"function '{func.name}' has no literal id",
            "give it a stable id: @app.function(id=\"my-function\", ...); runs are keyed by it")
        return out
    fn = registered.get(fn_id)
    steps = _step_calls(func)
    for kind, step in steps:
        first = step.args[0] if step.args else _kw(step, "step_id")
        sid = first.value if isinstance(first, ast.Constant) and isinstance(
            first.value, str) else None
        if sid is not None and (not _KEBAB.match(sid) or _GENERIC.match(sid)):
            add("warning", "step-id", step.lineno,
                f"step id '{sid}' is not a descriptive kebab-case name",
                "name what the step does, e.g. 'charge-card' or 'send-welcome-email': ids "
                "are the keys of recorded results and appear in every timeline")
        if kind == "sleep" and len(step.args) > 1 and isinstance(step.args[1], ast.Constant) \
                and isinstance(step.args[1].value, int | float):
            value = repr(step.args[1].value)
            add("warning", "sleep-number", step.lineno,
                f"sleep '{sid}' is given a bare number ({value}): refused at run time",
                f"write the unit: '{value}s' or '{value}ms', or pass a timedelta")
        if kind == "wait_for_event" and _kw(step, "timeout") is None:
            add("error", "wait-timeout", step.lineno,
                f"wait_for_event '{sid}' has no timeout: a run whose event never comes waits "
                "forever", "add timeout=\"7d\" (or what fits) and handle a None result")
    if fn is not None and fn.flow.idempotency is None and (
            _MONEY.search(fn_id) or any(_MONEY.search(_literal(s)) for _, s in steps)):
        add("error", "idempotency", where,
            f"function '{fn_id}' looks like it moves money but has no idempotency key: a "
            "re-sent event would run it again",
            "add idempotency=\"event.data.order_id\" (the key that makes a payment unique)")
    if fn is not None and not fn.flow.concurrency and imports & set(_CALLS_OUT):
        used = ", ".join(sorted(imports & set(_CALLS_OUT)))
        add("warning", "concurrency", where,
            f"function '{fn_id}' calls out ({used}) with no concurrency limit: a burst of "
            "events runs as many steps at once as there are workers",
            "add concurrency=10 (or a per-key Concurrency) to protect what it calls")
    if _kw(call, "retries") is None:
        add("info", "retries", where,
            f"function '{fn_id}' keeps the default retries (4: five attempts per step)",
            "set retries= to what its steps can bear (0 for steps that must not repeat)")
    return out


def _literal(step: ast.Call) -> str:
    first = step.args[0] if step.args else None
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""


def render(findings: list[Finding]) -> str:
    """Findings as lines for a terminal: ``file:line: severity [rule] message`` then the fix."""
    if not findings:
        return "no findings"
    out = []
    for f in findings:
        out.append(f"{f.file}:{f.line}: {f.severity} [{f.rule}] {f.message}")
        out.append(f"    fix: {f.fix}")
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(out)


@cli.command()
@click.option("--functions", "package", default=None, envvar="STEPKIT_FUNCTIONS",
              help="The package defining the app (env STEPKIT_FUNCTIONS)  [default: functions]")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--deployed-manifest", "manifest_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Compare the steps with this deployed manifest (a deploy's "
              "cdk.out/stepkit-manifest.json).")
@click.option("--aws", "use_aws", is_flag=True,
              help="Compare the steps with the manifest of the deployed stack "
              "(stepkit-<app>, STEPKIT_STAGE for a stage).")
def check(package: str | None, as_json: bool, manifest_path: Path | None,
          use_aws: bool) -> None:
    """Review functions/ for durable-function mistakes; exit 1 on critical or error findings.

    Missing ids, waits without a timeout, payments without an idempotency key, an app past
    an AWS deploy limit (errors); calls out with no concurrency limit, vague step ids,
    bare-number sleeps, an app within 80 % of a deploy limit (warnings); default retries
    (info). With a deployed manifest: recorded steps renamed, removed, reordered or of
    another kind, and removed functions (warnings). Each finding names the file, line and fix.
    """
    findings = check_project(Path.cwd(), package or "functions",
                             _deployed_source(manifest_path, use_aws))
    if as_json:
        click.echo(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        for line in render(findings).split("\n"):  # escaped line by line
            say(line)
    if any(f.severity in FAILING for f in findings):
        raise SystemExit(1)


def _deployed_source(path: Path | None, use_aws: bool) -> DeployedManifest | None:
    """Where the deployed manifest comes from: the file given, else the deployed stack."""
    from runtime.manifest import Manifest

    if path is not None:
        return lambda _app_id: Manifest.from_json(json.loads(path.read_text()))
    if not use_aws:
        return None

    def from_stack(app_id: str) -> Manifest | None:
        import os

        from runtime.backends.aws.manifest import deployed_manifest
        from runtime.backends.aws.resources import ENV_STAGE
        from runtime.manifest import stack_name

        return deployed_manifest(stack_name(app_id, os.environ.get(ENV_STAGE) or None))

    return from_stack
