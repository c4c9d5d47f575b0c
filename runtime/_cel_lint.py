"""CEL mistakes that can be known from the text alone, found when an expression is registered.

Without this, ``event.data.x.y.z()``, ``size(event) > 'a'`` or a misspelt function is
accepted and then never matches: every evaluation is an error, hence "no match". Only what
holds for every event is refused: calls of functions or methods that neither CEL, celpy nor
stepkit defines, known functions called with the wrong number of arguments, and operators
whose operands are of types that can never go together, where both types are plain from
literals or from what a known function returns. A field's type is never guessed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from celpy.evaluation import base_functions

from runtime._cel_reads import MACROS, call_args, unwrap

__all__ = ["Problem", "problem"]

# Functions celpy evaluates, called as f(x) or x.f(); the operators' names are not callable.
_FUNCTIONS = frozenset(name for name in base_functions if name.isidentifier())
# How many arguments each function takes, a method's receiver counting as the first.
_ARITY: dict[str, frozenset[int]] = {
    name: frozenset({1})
    for name in ("size", "int", "uint", "double", "string", "bytes", "bool", "dyn", "type",
                 "has", "duration", "timestamp")
} | {
    name: frozenset({2}) for name in ("matches", "contains", "startsWith", "endsWith")
} | {
    name: frozenset({1, 2}) for name in _FUNCTIONS if name.startswith("get")
}
_MACRO_ARGS: dict[str, set[int]] = {
    "all": {2}, "exists": {2}, "exists_one": {2}, "filter": {2}, "map": {2, 3},
}
_LITERALS = {"INT_LIT": "number", "UINT_LIT": "number", "FLOAT_LIT": "number",
             "STRING_LIT": "string", "MLSTRING_LIT": "string", "BYTES_LIT": "bytes",
             "BOOL_LIT": "bool", "NULL_LIT": "null"}
# What known functions return. Numbers are one kind: stepkit compares ints and doubles.
_RETURNS = {"size": "number", "int": "number", "uint": "number", "double": "number",
            "string": "string", "bytes": "bytes", "bool": "bool", "has": "bool", "matches": "bool",
            "contains": "bool", "startsWith": "bool", "endsWith": "bool", "all": "bool",
            "exists": "bool", "exists_one": "bool", "filter": "list", "map": "list"}
_RETURNS |= {name: "number" for name in _FUNCTIONS if name.startswith("get")}
_SHOWN = {"number": "a number", "string": "a string", "bytes": "bytes", "bool": "a bool",
          "null": "null", "list": "a list", "map": "a map"}
_ORDERED = {"relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">="}
_ARITHMETIC = {"addition_sub": "-", "multiplication_mul": "*", "multiplication_div": "/",
               "multiplication_mod": "%"}


class Problem(NamedTuple):
    """A mistake and where it starts (1-based line and column)."""

    text: str
    line: int
    column: int


def problem(tree: Any) -> Problem | None:
    """The first mistake in a parsed expression that no event can make right, if any."""
    return next(_problems(tree), None)


def _at(node: Any, text: str) -> Problem:
    meta = getattr(node, "meta", None)
    line = getattr(meta, "line", None) or getattr(node, "line", None) or 1
    column = getattr(meta, "column", None) or getattr(node, "column", None) or 1
    return Problem(text, line, column)


def _nodes(tree: Any) -> Iterator[Any]:
    yield tree
    for child in tree.children:
        if hasattr(child, "data"):
            yield from _nodes(child)


def _problems(tree: Any) -> Iterator[Problem]:
    for node in _nodes(tree):
        found = _call_problem(node) if node.data in {"ident_arg", "member_dot_arg"} else (
            _operator_problem(node))
        if found is not None:
            yield found


def _call_problem(node: Any) -> Problem | None:
    method = node.data == "member_dot_arg"
    token = node.children[1] if method else node.children[0]
    name, args = str(token), call_args(node)
    if method and name in _MACRO_ARGS:
        if len(args) not in _MACRO_ARGS[name]:
            return _at(token, f".{name}() takes {_counts(_MACRO_ARGS[name])}, got {len(args)}")
        return None
    known = _FUNCTIONS | (MACROS if method else {"has", "dyn"})
    if name not in known:
        kind = "method" if method else "function"
        return _at(token, f"unknown {kind} '{name}'")
    if name in _ARITY and len(args) + method not in _ARITY[name]:
        takes = _counts({n - method for n in _ARITY[name]})
        shown = f".{name}()" if method else f"{name}()"
        return _at(token, f"{shown} takes {takes}, got {len(args)}")
    if name == "has" and getattr(args[0], "data", None) != "member_dot":
        return _at(token, "has() takes a field selection, e.g. has(event.data.x)")
    return None


def _counts(counts: set[int]) -> str:
    """``{1}`` as "1 argument", ``{1, 2}`` as "1 or 2 arguments"."""
    noun = "argument" if counts == {1} else "arguments"
    return " or ".join(str(n) for n in sorted(counts)) + f" {noun}"


def _kind(node: Any) -> str | None:
    """What ``node`` yields when that holds for every event; ``None`` when unknown."""
    node = unwrap(node)
    data = getattr(node, "data", None)
    if data == "literal":
        return _LITERALS.get(str(node.children[0].type))
    if data in {"list_lit", "map_lit"}:
        return str(data)[: -len("_lit")]
    if data in {"ident_arg", "member_dot_arg"}:
        name = str(node.children[1 if data == "member_dot_arg" else 0])
        return _RETURNS.get(name)
    if data in {"relation", "conditionaland", "conditionalor"} and len(node.children) == 2:
        return "bool"
    if data == "unary" and getattr(node.children[0], "data", None) == "unary_not":
        return "bool"
    return None


def _operator_problem(node: Any) -> Problem | None:
    kids = node.children
    if node.data in {"conditionaland", "conditionalor"} and len(kids) == 2:
        return _needs(kids, {"bool"}, "&&" if node.data == "conditionaland" else "||", node)
    if node.data == "unary" and len(kids) == 2:
        op = kids[0].data
        return _needs([kids[1]], {"bool"} if op == "unary_not" else {"number"},
                      "!" if op == "unary_not" else "-", node)
    if node.data not in {"relation", "addition", "multiplication"} or len(kids) != 2:
        return None
    op = kids[0].data
    left, right = _kind(kids[0].children[0]), _kind(kids[1])
    if left is None or right is None:
        return None
    if op == "relation_in":
        return None if right in {"list", "map"} else _at(
            node, f"'in' needs a list or a map on its right, not {_SHOWN[right]}")
    if "null" in {left, right} and op in {"relation_eq", "relation_ne"}:
        return None
    if left != right:
        return _at(node, f"{_SHOWN[left]} and {_SHOWN[right]} never go together "
                         f"with {_symbol(op)}")
    return _same_kind_problem(op, left, node)


def _symbol(op: str) -> str:
    symbols = _ORDERED | _ARITHMETIC | {"relation_eq": "==", "relation_ne": "!=",
                                        "addition_add": "+"}
    return symbols.get(op, op)


def _same_kind_problem(op: str, kind: str, node: Any) -> Problem | None:
    ordered = {"number", "string", "bytes", "bool"}
    if (op in _ORDERED and kind not in ordered) or (
        op in _ARITHMETIC and kind != "number") or (
            op == "addition_add" and kind not in {"number", "string", "bytes", "list"}):
        return _at(node, f"{_symbol(op)} does not apply to {_SHOWN[kind]}")
    return None


def _needs(operands: list[Any], kinds: set[str], op: str, node: Any) -> Problem | None:
    for operand in operands:
        kind = _kind(operand)
        if kind is not None and kind not in kinds:
            return _at(node, f"{op} does not apply to {_SHOWN[kind]}")
    return None
