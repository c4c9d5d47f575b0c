"""The first-party modules a set of entry modules imports, read from the source (no import).

The Lambda asset ships the modules of ``runtime/`` that the Lambda handlers reach, and nothing
else: not the CLI, the dev server, the local SQLite backend or the test harness, which only
run on a developer's machine. This module finds them by following ``import`` statements
through the project's own packages, the way Python would resolve them, without running any
code (the asset is built for arm64 on any machine).

An import counts wherever it is written (also inside a function: a lazy import still runs on
Lambda), except under ``if TYPE_CHECKING:``, which never runs. Names built at run time
(``importlib.import_module(name)``) are invisible here; the one the runtime uses loads the
app's ``functions/`` package, which the asset ships whole.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImportGraph:
    """What a walk from the entry modules found.

    Attributes:
        modules: Dotted names of the first-party modules reached, with their files.
        external: Top-level names of the other (third-party or standard library) modules
            they import, each with one module that imports it.
    """

    modules: dict[str, Path]
    external: dict[str, str]


def module_file(root: Path, name: str) -> Path | None:
    """The source file of module ``name`` under ``root``, or None (not a module)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, package: str) -> set[str]:
    """Dotted names a module imports: ``from a import b`` gives ``a`` and ``a.b`` (``b``
    may be a submodule or an attribute); relative imports are resolved against ``package``.
    """
    names: set[str] = set()

    def visit(nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0]
                    base = f"{parent}.{base}".rstrip(".")
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
            else:
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text(), filename=str(path)).body)
    return names


def walk(root: Path, entries: Iterable[str], *, first_party: Iterable[str]) -> ImportGraph:
    """Follow imports from ``entries`` through the ``first_party`` packages under ``root``.

    Args:
        root: The directory the packages live in (the project root or an asset).
        entries: Dotted names of the modules to start from.
        first_party: Top-level package names to follow; imports of anything else are
            recorded in :attr:`ImportGraph.external` and not followed.

    Returns:
        The modules reached (with every parent package, which Python imports first) and the
        external modules they import.
    """
    own = set(first_party)
    pending = list(entries)
    modules: dict[str, Path] = {}
    external: dict[str, str] = {}
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = module_file(root, name)
        if path is None:
            continue  # `from package import attribute`: an attribute, not a module
        modules[name] = path
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in sorted(imported_names(path, package)):
            top = imported.partition(".")[0]
            if top in own:
                pending.append(imported)
            else:
                external.setdefault(top, name)
    return ImportGraph(modules, external)
