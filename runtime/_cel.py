"""The celpy side of :mod:`runtime.expressions`, imported on the first compile.

celpy pulls in lark, pendulum and builds its CEL grammar (a few hundred milliseconds), so
handlers and apps that use no CEL expression never load it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

from runtime._cel_lint import Problem, problem
from runtime._cel_reads import Budget, Reads, ValueTooLarge, bind, macro_shape, place, reads, unwrap

__all__ = ["CELParseError", "Program", "compile_program", "evaluate", "mistake", "value"]

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


def _short_error(logical: Callable[[Any, Any], Any], symbol: str) -> Callable[[Any, Any], Any]:
    """The ``logical_or``/``logical_and`` of celpy, raising without the operands' text.

    celpy's own put both operands' ``repr`` in their TypeError. In ``exists()``/``all()``
    over elements the body fails on (``items.exists(i, i.sku == 'a')`` with no ``sku``),
    each error holds the one before it, escaped once more, so the text doubles with every
    element: 24 elements took 1 s, 30 ran out of memory.
    """

    def combine(x: Any, y: Any) -> Any:
        if not isinstance(x, _BOOL) and not isinstance(y, _BOOL):
            raise TypeError(f"no such overload: {type(x).__name__} {symbol} {type(y).__name__}")
        return logical(x, y)

    return combine


# The macros and list/map equality look these up in celtypes on every call.
celtypes.logical_or = _short_error(celtypes.logical_or, "||")  # type: ignore[assignment]
celtypes.logical_and = _short_error(celtypes.logical_and, "&&")  # type: ignore[assignment]

# celpy lets a program override its operator implementations by name.
_OPERATORS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le}
_OPERATORS |= {">": operator.gt, ">=": operator.ge}
_FUNCTIONS: dict[str, Any] = {f"_{k}_": _numeric_aware(f"_{k}_", v) for k, v in _OPERATORS.items()}
_FUNCTIONS |= {"_||_": celtypes.logical_or, "_&&_": celtypes.logical_and}
_ENV = celpy.Environment()
# What evaluation may raise; celpy wraps nearly everything in CELEvalError.
#: What an evaluation may raise that means "no match", not a bug: a deeply nested value
#: (within what events allow) can exhaust the recursion of the conversion or the evaluator.
_EVAL_ERRORS = (CELEvalError, ArithmeticError, LookupError, TypeError, ValueError,
                RecursionError)
#: What binding may raise that means "no match": more to convert than a program's limit.
_TOO_BIG = (ValueTooLarge, RecursionError)


#: Values one evaluation may convert whole (a path used as a value, a macro's list, the
#: event itself), about 4.5 µs each.
WHOLE_VALUES = 1000
#: Parse-tree nodes the bodies of an expression's macros may evaluate in all, about 6 µs
#: each: an element's body runs once per element, a nested one once per pair.
MACRO_NODES = 20_000


@dataclass(frozen=True)
class Program:
    """A compiled expression and what it reads of each bound name.

    Attributes:
        runner: celpy's program.
        reads: Per name, the paths the program reads (``None``: bind every name whole).
        limit: Values an evaluation may convert whole (:func:`whole_limit`).
    """

    runner: celpy.Runner
    reads: Mapping[str, Reads] | None
    limit: int


def whole_limit(depth: int, body: int) -> int:
    """How many values a program with macros ``depth`` deep and a ``body``-node body binds.

    :data:`WHOLE_VALUES`, or less when the macros' bodies would then evaluate more than
    :data:`MACRO_NODES` nodes: elements^depth x body stays within it. So one evaluation
    costs at most about 5 ms of conversion plus 0.12 s of macro bodies (bench/cel_cost.py).
    """
    if depth == 0:
        return WHOLE_VALUES
    return max(1, min(WHOLE_VALUES, int((MACRO_NODES / body) ** (1 / depth))))


def compile_program(source: str) -> Program:
    """Parse ``source`` into a program using stepkit's numeric-aware comparisons.

    Raises:
        CELParseError: On a syntax error.
    """
    tree = _ENV.compile(source)
    limit = whole_limit(*macro_shape(tree))
    return Program(_ENV.program(tree, functions=_FUNCTIONS), reads(tree), limit)


def _activation(program: Program, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The CEL values to bind: only what ``program`` reads of each name it uses.

    Raises:
        ValueTooLarge: The program would convert more than its limit whole.
        RecursionError: A value nested too deep to convert.
    """
    budget = Budget(program.limit)
    if program.reads is None:
        return {name: budget.convert(v) for name, v in variables.items()}
    used = program.reads
    return {name: bind(v, used[name], budget) for name, v in variables.items() if name in used}


@lru_cache(maxsize=1024)
def mistake(source: str) -> Problem | None:
    """The first mistake in ``source`` that no event can make right; ``None`` if none is seen.

    A syntax error is not reported here: :func:`compile_program` raises it. Cached: a wait's
    expression text is checked again on every replay while it is pending (where parsers
    load: the dev server and tests; a Lambda leaves the check to ``cdk synth``).
    """
    try:
        return problem(_ENV.compile(source))
    except CELParseError:
        return None


def evaluate(program: Program, variables: Mapping[str, Any]) -> bool:
    """True only if ``program`` yields boolean true with ``variables`` bound.

    A value too large or too deep to bind is no match (a non-JSON value still raises
    TypeError: that is a programming error).
    """
    try:
        activation = _activation(program, variables)
    except _TOO_BIG:
        return False
    try:
        result = program.runner.evaluate(activation)
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


def value(program: Program, variables: Mapping[str, Any]) -> Any:
    """What ``program`` yields with ``variables`` bound, as plain Python.

    Raises:
        LookupError: Evaluation failed (a missing field, a type mismatch, a value too
            large or too deep to bind...).
        TypeError: A value is not JSON-like.
    """
    try:
        activation = _activation(program, variables)
    except _TOO_BIG as exc:
        raise LookupError(str(exc) or type(exc).__name__) from None
    try:
        result = program.runner.evaluate(activation)
    except _EVAL_ERRORS as exc:
        raise LookupError(str(exc)) from None
    if isinstance(result, CELEvalError):
        raise LookupError(str(result))
    return _from_cel(result)


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
        node = unwrap(node)
        kind, kids = getattr(node, "data", None), getattr(node, "children", [])
        if kind == "conditionaland" and len(kids) == 2:
            walk(kids[0])
            walk(kids[1])
        elif kind == "relation" and len(kids) == 2 and getattr(kids[0], "data", None) == (
            "relation_eq"
        ):
            left, right = unwrap(kids[0].children[0]), unwrap(kids[1])
            for side, other in ((left, right), (right, left)):
                at, value = place(side), _scalar_literal(other)
                if at is not None and at[0] == root and at[1] and value is not _NOT_SCALAR:
                    out.append((at[1], value))

    walk(_ENV.compile(source))
    return out
