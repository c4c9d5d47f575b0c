"""``runtime`` imports no emulator code: moto nowhere, ``stepkit_emulators`` only when asked.

Read from the source (no import), so the check is cheap and names the offending line. The
wheel test (``test_wheel.py``) proves the same by installing without moto.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import App
from runtime.testing import Harness

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
EMULATORS = "stepkit_emulators"


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _at_import_time(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements a module runs when imported: its top level, not functions or type checks."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from _at_import_time(node.orelse)
            continue
        yield node
        for block in _blocks(node):
            yield from _at_import_time(block)


def _blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists nested in a compound statement (class, if, try, with, for)."""
    blocks = [getattr(node, f, None) for f in ("body", "orelse", "finalbody")]
    return [b for b in blocks if isinstance(b, list)] + [
        h.body for h in getattr(node, "handlers", [])]


def _modules() -> list[tuple[str, ast.Module]]:
    return [(str(p.relative_to(RUNTIME.parent)), ast.parse(p.read_text(), str(p)))
            for p in sorted(RUNTIME.rglob("*.py"))]


def _root(name: str) -> str:
    return name.partition(".")[0]


def test_runtime_never_imports_moto() -> None:
    found = [f"{path}:{node.lineno} {name}" for path, tree in _modules()
             for node in ast.walk(tree) for name in _imported(node) if _root(name) == "moto"]
    assert found == []


def test_runtime_imports_the_emulators_only_inside_functions() -> None:
    found = [f"{path}:{node.lineno} {name}" for path, tree in _modules()
             for node in _at_import_time(tree.body) for name in _imported(node)
             if _root(name) == EMULATORS]
    assert found == []


def test_runtime_does_not_point_into_the_repository() -> None:
    found = [p for p in RUNTIME.rglob("*.py") if "node_modules" in p.read_text()]
    assert found == []


def test_harness_aws_without_the_emulators_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, f"{EMULATORS}.aws", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'stepkit\[emulators\]'"):
        Harness.aws(App("shop"), None)  # type: ignore[arg-type]
