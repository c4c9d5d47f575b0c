"""The celpy side of :mod:`runtime.expressions`, imported on the first compile.

celpy pulls in lark, pendulum and builds its CEL grammar (a few hundred milliseconds), so
handlers and apps that use no CEL expression never load it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

from runtime.expressions import _plain

__all__ = ["CELParseError", "compile_program", "evaluate", "value"]

_BOOL = celtypes.BoolType


def _is_number(value: Any) -> bool:
    return isinstance(value, celtypes.IntType | celtypes.UintType | celtypes.DoubleType)


def _numeric_aware(name: str, compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    strict = base_functions[name]

    def relation(left: Any, right: Any) -> Any:
        if name in {"_==_", "_!=_"} and isinstance(left, _BOOL) != isinstance(right, _BOOL):
            return celtypes.BoolType(name == "_!=_")  # celpy says true == 1
        if _is_number(left) and _is_number(right) and type(left) is not type(right):
            plain = [float(v) if isinstance(v, float) else int(v) for v in (left, right)]
            return celtypes.BoolType(compare(plain[0], plain[1]))
        return strict(left, right)

    return relation


# celpy lets a program override its operator implementations by name.
_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le}
_OPERATORS |= {">": operator.gt, ">=": operator.ge}
_FUNCTIONS: dict[str, Any] = {f"_{k}_": _numeric_aware(f"_{k}_", v) for k, v in _OPERATORS.items()}
_ENV = celpy.Environment()
# What evaluation may raise; celpy wraps nearly everything in CELEvalError.
#: What an evaluation may raise that means "no match", not a bug: a deeply nested value
#: (within what events allow) can exhaust the recursion of the conversion or the evaluator.
_EVAL_ERRORS = (CELEvalError, ArithmeticError, LookupError, TypeError, ValueError,
                RecursionError)


def _to_cel(value: Any) -> Any:
    """Convert a JSON-like Python value to CEL."""
    value = _plain(value)
    if value is None or isinstance(value, bool | str):
        return json_to_cel(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, Mapping):
        return celtypes.MapType({_to_cel(k): _to_cel(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return celtypes.ListType([_to_cel(v) for v in value])
    raise TypeError(f"cannot bind a {type(value).__name__} in a CEL expression; use JSON values")


def compile_program(source: str) -> celpy.Runner:
    """Parse ``source`` into a program using stepkit's numeric-aware comparisons.

    Raises:
        CELParseError: On a syntax error.
    """
    return _ENV.program(_ENV.compile(source), functions=_FUNCTIONS)


def evaluate(program: celpy.Runner, variables: Mapping[str, Any]) -> bool:
    """True only if ``program`` yields boolean true with ``variables`` bound."""
    try:
        activation = {name: _to_cel(value) for name, value in variables.items()}
    except RecursionError:  # a value nested too deep to convert: no match (a non-JSON value
        return False  # still raises TypeError: that is a programming error)
    try:
        result = program.evaluate(activation)
    except _EVAL_ERRORS:
        return False
    return isinstance(result, celtypes.BoolType) and bool(result)


def _from_cel(result: Any) -> Any:
    """A CEL value as plain JSON-like Python."""
    if result is None or isinstance(result, celtypes.NullType):
        return None
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    if isinstance(result, celtypes.IntType | celtypes.UintType):
        return int(result)
    if isinstance(result, celtypes.DoubleType):
        return float(result)
    if isinstance(result, celtypes.StringType):
        return str(result)
    if isinstance(result, celtypes.MapType):
        return {str(_from_cel(k)): _from_cel(v) for k, v in result.items()}
    if isinstance(result, celtypes.ListType):
        return [_from_cel(v) for v in result]
    return str(result)


def value(program: celpy.Runner, variables: Mapping[str, Any]) -> Any:
    """What ``program`` yields with ``variables`` bound, as plain Python.

    Raises:
        LookupError: Evaluation failed (a missing field, a type mismatch...).
    """
    activation = {name: _to_cel(v) for name, v in variables.items()}
    try:
        result = program.evaluate(activation)
    except _EVAL_ERRORS as exc:
        raise LookupError(str(exc)) from None
    if isinstance(result, CELEvalError):
        raise LookupError(str(result))
    return _from_cel(result)


# Parse-tree nodes that only wrap their one child (a literal, a member, a conjunction).
_WRAPPERS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                       "multiplication", "unary", "member", "primary", "paren_expr"})


def _unwrap(node: Any) -> Any:
    while getattr(node, "data", None) in _WRAPPERS and len(node.children) == 1:
        node = node.children[0]
    return node


def _member_path(node: Any, root: str) -> tuple[str, ...] | None:
    """``root.a.b`` as ``("a", "b")``; ``None`` for anything else (indexing, calls)."""
    names: list[str] = []
    while getattr(node, "data", None) == "member_dot":
        names.append(str(node.children[1]))
        node = _unwrap(node.children[0])
    if getattr(node, "data", None) == "ident" and str(node.children[0]) == root and names:
        return tuple(reversed(names))
    return None


_NOT_SCALAR = object()


def _scalar_literal(node: Any) -> Any:
    """The value of a string, int, double or bool literal; ``_NOT_SCALAR`` otherwise."""
    if getattr(node, "data", None) != "literal":
        return _NOT_SCALAR
    value = _ENV.program(_ENV.compile(str(node.children[0]))).evaluate({})
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if type(value) is celtypes.IntType:
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    return _NOT_SCALAR  # uint, bytes, null


def equality_terms(source: str, root: str) -> list[tuple[tuple[str, ...], Any]]:
    """The conjuncts of ``source`` that say ``root.<path> == <scalar literal>`` (either side).

    Only conjuncts of the whole expression count (``a && b``, parenthesised or not): under
    ``||``, ``!``, a ternary or a call, an equality is not something every match satisfies.

    Raises:
        CELParseError: On a syntax error.
    """
    out: list[tuple[tuple[str, ...], Any]] = []

    def walk(node: Any) -> None:
        node = _unwrap(node)
        kind, kids = getattr(node, "data", None), getattr(node, "children", [])
        if kind == "conditionaland" and len(kids) == 2:
            walk(kids[0])
            walk(kids[1])
        elif kind == "relation" and len(kids) == 2 and getattr(kids[0], "data", None) == (
            "relation_eq"
        ):
            left, right = _unwrap(kids[0].children[0]), _unwrap(kids[1])
            for side, other in ((left, right), (right, left)):
                path, value = _member_path(side, root), _scalar_literal(other)
                if path is not None and value is not _NOT_SCALAR:
                    out.append((path, value))

    walk(_ENV.compile(source))
    return out
