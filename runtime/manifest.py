"""The step manifest: each function's step ids and kinds, as far as the source says them.

A run in flight is replayed by step key (the id, a counter for its repeats, its parallel
branch), so a deploy that renames, removes or changes the kind of a recorded step makes such
runs redo work or block on nondeterminism. Synth records the manifest with the deployed stack
(``cdk.out/stepkit-manifest.json`` and the template's ``Stepkit::StepManifest`` metadata);
``stepkit check`` compares the app's manifest with the last deployed one
(:mod:`runtime.manifest_diff`).

Extraction is static: the handler's source is parsed (one ``ast`` parse per module) and its
``<x>.step.<kind>(<id>, ...)`` calls listed in source order. An id that is an f-string is
recorded as its pattern (``think-{}``); any other non-literal id as dynamic, never compared.
Steps in helper functions the handler calls are not seen.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from runtime.engine.context import PATCH_PREFIX

if TYPE_CHECKING:
    from runtime.app import App, FunctionDef

MANIFEST_VERSION = 1
#: Where synth writes the manifest, in the cloud assembly directory (``cdk.out``).
MANIFEST_FILE = "stepkit-manifest.json"
#: The key of the root template's ``Metadata`` that carries it.
METADATA_KEY = "Stepkit::StepManifest"
#: The most bytes the manifest may take in the root template (whose limit is 1,000,000,
#: ``runtime.deploy_limits.MAX_TEMPLATE_BYTES``); past it the template carries a digest per
#: function and the full manifest stays in ``cdk.out``.
METADATA_BUDGET_BYTES = 200_000
#: The step methods, and the kind their record holds (what replay compares).
RECORDED_KIND = {"run": "run", "sleep": "sleep", "sleep_until": "sleep",
                 "wait_for_event": "wait_for_event", "invoke": "invoke",
                 "send_event": "send_event"}
#: How a step is nested: in a loop, under a condition, in a parallel branch, in a function
#: defined inside the handler (called when, the source does not say).
LOOP, CONDITION, PARALLEL, NESTED = "loop", "if", "parallel", "function"

_Func = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp,
          ast.GeneratorExp)
_CONDITIONS = (ast.If, ast.IfExp, ast.Match, ast.BoolOp, ast.ExceptHandler)


@dataclass(frozen=True)
class StepEntry:
    """One ``ctx.step`` call of a handler.

    Attributes:
        id: The id as written; an f-string's pattern (``think-{}``); ``None`` when dynamic.
        kind: The step method (``run``, ``sleep``, ``sleep_until``, ...).
        order: Its place among the function's steps, in source order (0-based).
        pattern: The id is an f-string, recorded as its pattern (``think-{}``).
        dynamic: The id is an expression the source does not tell (``id`` is ``None``).
        within: How it is nested (``loop``, ``if``, ``parallel``, ``function``), outermost
            first.
        branch: Its parallel branch (``"1"``, ``"1.0"`` nested), ``"*"`` when the branches
            are not a literal list; ``None`` outside ``parallel``.
        line: Its line in the source (not recorded: any edit would change the manifest).
    """

    id: str | None
    kind: str
    order: int
    pattern: bool = False
    dynamic: bool = False
    within: tuple[str, ...] = ()
    branch: str | None = None
    line: int = field(default=0, compare=False)

    @property
    def compared(self) -> bool:
        """Whether a deploy's comparison looks at it: its id (or id pattern) is known."""
        return self.id is not None

    def to_json(self) -> dict[str, Any]:
        """The manifest's form: only what is set, so the file stays small."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "order": self.order}
        if self.pattern:
            out["pattern"] = True
        if self.dynamic:
            out["dynamic"] = True
        if self.within:
            out["within"] = list(self.within)
        if self.branch is not None:
            out["branch"] = self.branch
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepEntry:
        """Read one entry of a manifest."""
        return cls(id=data.get("id"), kind=str(data["kind"]), order=int(data["order"]),
                   pattern=bool(data.get("pattern", False)),
                   dynamic=bool(data.get("dynamic", False)),
                   within=tuple(data.get("within", ())), branch=data.get("branch"))


@dataclass(frozen=True)
class FunctionSteps:
    """A function's steps, or why they could not be read.

    Attributes:
        steps: Its steps in source order.
        skipped: Why the source could not be read (then ``steps`` is empty).
        file: The handler's source file (not recorded).
        line: The handler's first line, decorators included (not recorded).
    """

    steps: tuple[StepEntry, ...] = ()
    skipped: str | None = None
    file: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The manifest's form."""
        out: dict[str, Any] = {"steps": [s.to_json() for s in self.steps]}
        if self.skipped:
            out["skipped"] = self.skipped
        return out

    def digest(self) -> str:
        """A short hash of the recorded form: equal when the steps are."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """Every function's steps in one app.

    Attributes:
        app: The app id.
        functions: Each function's steps, by function id.
        digests: Only a digest per function (a deployed manifest that outgrew the
            template's budget); then ``functions`` is empty.
    """

    app: str
    functions: dict[str, FunctionSteps]
    digests: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form (keys sorted when dumped)."""
        out: dict[str, Any] = {"version": MANIFEST_VERSION, "app": self.app}
        if self.digests is not None:
            out["digests"] = dict(sorted(self.digests.items()))
        else:
            out["functions"] = {k: v.to_json() for k, v in sorted(self.functions.items())}
        return out

    def dumps(self, *, indent: int | None = 2) -> str:
        """Deterministic JSON: the same app gives the same bytes."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_json(), sort_keys=True, indent=indent, separators=separators)

    def template_form(self) -> dict[str, Any]:
        """What the root template carries: the manifest, or its digests past the budget."""
        if len(self.dumps(indent=None).encode()) <= METADATA_BUDGET_BYTES:
            return self.to_json()
        return replace(self, functions={}, digests={
            k: v.digest() for k, v in self.functions.items()}).to_json()

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Read a manifest (a file's or a template's).

        Raises:
            ValueError: Not a manifest of a version this code reads.
        """
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"not a stepkit step manifest of version {MANIFEST_VERSION}")
        if "digests" in data:
            return cls(app=str(data["app"]), functions={}, digests=dict(data["digests"]))
        functions = {
            fn_id: FunctionSteps(
                steps=tuple(StepEntry.from_json(s) for s in body.get("steps", ())),
                skipped=body.get("skipped"))
            for fn_id, body in data["functions"].items()
        }
        return cls(app=str(data["app"]), functions=functions)


def build_manifest(app: App) -> Manifest:
    """The manifest of every function of ``app``, each handler's module parsed once."""
    trees: dict[str, ast.Module | None] = {}
    return Manifest(app=app.id, functions={fn.id: function_steps(fn, trees) for fn in app})


def function_steps(fn: FunctionDef, trees: dict[str, ast.Module | None]) -> FunctionSteps:
    """One function's steps; ``trees`` caches each parsed module by file."""
    handler = inspect.unwrap(fn.handler)
    code = getattr(handler, "__code__", None)
    try:
        file = inspect.getsourcefile(handler)
    except TypeError:
        file = None
    if code is None or file is None:
        return FunctionSteps(skipped="the handler's source is not available")
    if file not in trees:
        trees[file] = _parse(file)
    tree = trees[file]
    node = _handler_node(tree, code.co_name, code.co_firstlineno) if tree else None
    if node is None:
        return FunctionSteps(skipped="the handler's source is not available", file=file)
    steps = [replace(s, order=i) for i, s in enumerate(_Walker().steps(node))]
    return FunctionSteps(steps=tuple(steps), file=file, line=code.co_firstlineno)


def _parse(file: str) -> ast.Module | None:
    try:
        with open(file, encoding="utf-8") as source:
            return ast.parse(source.read(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return None


def _first_line(node: _Func) -> int:
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _handler_node(tree: ast.Module, name: str, line: int) -> _Func | None:
    """The definition the code object was compiled from (its name and first line)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Lambda) and name == "<lambda>" and node.lineno == line:
            return node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name \
                and _first_line(node) == line:
            return node
    return None


def _step_call(node: ast.AST) -> str | None:
    """The step method of a ``<x>.step.<method>(...)`` call, else ``None``."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "step"):
        method = node.func.attr
        return method if method in RECORDED_KIND or method == "parallel" else None
    return None


def _patch_id(node: ast.AST) -> str | None:
    """The step id a ``<x>.patched("<change>")`` call records (``ctx.patched``), else ``None``."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "patched" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return f"{PATCH_PREFIX}{node.args[0].value}"
    return None


def _step_id(call: ast.Call) -> tuple[str | None, bool]:
    """The id as recorded, and whether it is an f-string's pattern (``None``: dynamic)."""
    first = call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.arg == "step_id"), None)
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value, False
    if isinstance(first, ast.JoinedStr):
        parts = [p.value if isinstance(p, ast.Constant) else "{}" for p in first.values]
        return "".join(str(p) for p in parts), True
    return None, False


def _evaluated_first(node: ast.AST) -> ast.AST | None:
    """The part of a branch or loop that runs once, before it: ``if <test>``, ``for in <iter>``."""
    if isinstance(node, ast.If | ast.IfExp):
        return node.test
    if isinstance(node, ast.For | ast.AsyncFor):
        return node.iter
    if isinstance(node, ast.Match):
        return node.subject
    if isinstance(node, ast.BoolOp):
        return node.values[0]
    return None


@dataclass
class _Walker:
    """Lists step calls in evaluation order, with how each is nested."""

    found: list[StepEntry] = field(default_factory=list)

    def steps(self, handler: _Func) -> list[StepEntry]:
        body: Iterable[ast.AST] = [handler.body] if isinstance(handler, ast.Lambda) \
            else handler.body
        for node in body:
            self._visit(node, (), None)
        return self.found

    def _visit(self, node: ast.AST, within: tuple[str, ...], branch: str | None) -> None:
        method = _step_call(node)
        if method == "parallel":
            self._parallel(node, within, branch)  # type: ignore[arg-type]
            return
        inner = within + self._nesting(node)
        first = _evaluated_first(node)
        for child in ast.iter_child_nodes(node):
            self._visit(child, within if child is first else inner, branch)
        line = getattr(node, "lineno", 0)
        if method is not None:  # after its arguments: they are evaluated first
            sid, pattern = _step_id(node)  # type: ignore[arg-type]
            self.found.append(StepEntry(id=sid, kind=method, order=0, pattern=pattern,
                                        dynamic=sid is None, within=within, branch=branch,
                                        line=line))
        elif (patch := _patch_id(node)) is not None:  # its marker is a run step
            self.found.append(StepEntry(id=patch, kind="run", order=0, within=within,
                                        branch=branch, line=line))

    @staticmethod
    def _nesting(node: ast.AST) -> tuple[str, ...]:
        if isinstance(node, _LOOPS):
            return (LOOP,)
        if isinstance(node, _CONDITIONS):
            return (CONDITION,)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return (NESTED,)
        return ()

    def _parallel(self, call: ast.Call, within: tuple[str, ...], branch: str | None) -> None:
        """Each branch of a literal list keeps its index (it is part of its steps' keys)."""
        inner = (*within, PARALLEL)
        arg = call.args[0] if call.args else next(
            (k.value for k in call.keywords if k.arg == "branches"), None)
        if isinstance(arg, ast.List | ast.Tuple):
            for i, element in enumerate(arg.elts):
                index = f"{branch}.{i}" if branch not in (None, "*") else (
                    "*" if branch == "*" else str(i))
                self._branch(element, inner, index)
        elif arg is not None:
            self._visit(arg, inner, "*")

    def _branch(self, node: ast.AST, within: tuple[str, ...], index: str) -> None:
        """A branch's lambda body runs as the branch, not as a nested function."""
        if isinstance(node, ast.Lambda):
            self._visit(node.body, within, index)
        else:
            self._visit(node, within, index)


def iter_compared(steps: Iterable[StepEntry]) -> Iterator[StepEntry]:
    """The steps a comparison looks at (those whose id is known)."""
    return (s for s in steps if s.compared)


def stack_name(app_id: str, stage: str | None = None) -> str:
    """The deployed stack's name, as the CDK app names it.

    ``stepkit-<app>[-<stage>]``, in the characters stack names allow.
    """
    name = f"stepkit-{app_id}" + (f"-{stage}" if stage else "")
    return name.replace("_", "-")


def from_template(template: Any) -> Manifest | None:
    """The manifest a deployed root template carries.

    ``None`` if it has none (deployed before synth recorded one).

    Raises:
        ValueError: The template is not JSON, or its manifest is not one this code reads.
    """
    if isinstance(template, str):
        template = json.loads(template)  # the CDK's templates are JSON
    if not isinstance(template, dict):
        raise ValueError("not a CloudFormation template")
    data = (template.get("Metadata") or {}).get(METADATA_KEY)
    return None if data is None else Manifest.from_json(data)
