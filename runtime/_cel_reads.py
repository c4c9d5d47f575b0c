"""Which parts of its bound values a CEL program reads, and binding only those parts.

Converting a bound value to CEL costs about 4.5 µs per JSON value, so converting a 4 MB
event whole took seconds on every evaluation. A program instead gets, per bound name, only
the member paths it reads (``event.data.id``), found once when it is compiled:

* A path the program uses as a value (compared, returned, indexed, a method's receiver, a
  macro's list) is converted whole, within a budget (:class:`Budget`).
* A path only tested with ``has()`` keeps its key, with a stand-in value.
* A path only measured with ``size()`` keeps its size: a list of nulls, a map of its keys.
* Map keys on the way to a path are kept only if the event has them, so a missing field is
  still an error (hence no match) and ``has()`` still answers false.

Everything else is left out: the program never reads it, so its result cannot change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel

from runtime.expressions import _plain

__all__ = ["Budget", "Reads", "ValueTooLarge", "bind", "call_args", "macro_shape", "reads"]

#: Methods that run an expression once per element of their receiver.
MACROS = frozenset({"all", "exists", "exists_one", "filter", "map", "reduce", "min"})
# Parse-tree nodes that only wrap their one child (a literal, a member, a conjunction).
_WRAPPERS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                       "multiplication", "unary", "member", "primary", "paren_expr"})
_NULL = json_to_cel(None)


class ValueTooLarge(ValueError):
    """A program would convert more of its bound values whole than its budget allows."""


class _Opaque(Exception):
    """The program names something this analysis cannot follow (``.name`` from the root)."""


@dataclass
class Reads:
    """What a program reads at one point of a bound value.

    Attributes:
        whole: The value itself is used, so all of it is converted.
        iterated: A macro runs over it: a string then costs one per character (celpy runs
            the body once per character).
        size: Only its size is used.
        fields: Map keys selected below it; a key with an empty ``Reads`` is only tested
            for presence (``has()``).
    """

    whole: bool = False
    iterated: bool = False
    size: bool = False
    fields: dict[str, Reads] = field(default_factory=dict)


def unwrap(node: Any) -> Any:
    """The node a chain of one-child wrappers stands for."""
    while getattr(node, "data", None) in _WRAPPERS and len(node.children) == 1:
        node = node.children[0]
    return node


def place(node: Any) -> tuple[str, tuple[str, ...]] | None:
    """``name.a.b`` as ``("name", ("a", "b"))``; ``None`` for anything but a name's fields."""
    names: list[str] = []
    while getattr(node, "data", None) == "member_dot":
        names.append(str(node.children[1]))
        node = unwrap(node.children[0])
    if getattr(node, "data", None) == "ident":
        return str(node.children[0]), tuple(reversed(names))
    return None


def reads(tree: Any) -> dict[str, Reads] | None:
    """What ``tree`` reads of each name it uses; ``None`` when that cannot be told."""
    found: dict[str, Reads] = {}
    try:
        _visit(tree, found)
    except _Opaque:
        return None
    return found


def _mark(found: dict[str, Reads], at: tuple[str, tuple[str, ...]]) -> Reads:
    node = found.setdefault(at[0], Reads())
    for name in at[1]:
        node = node.fields.setdefault(name, Reads())
    return node


def call_args(node: Any) -> list[Any]:
    """The argument expressions of a call node (its ``exprlist`` child, if any)."""
    lists = [c for c in node.children if getattr(c, "data", None) == "exprlist"]
    return [unwrap(e) for e in lists[0].children] if lists else []


def _visit(node: Any, found: dict[str, Reads]) -> None:
    kind = getattr(node, "data", None)
    if kind is None:
        return  # a token
    if kind in {"dot_ident", "dot_ident_arg"}:
        raise _Opaque
    at = place(node) if kind in {"ident", "member_dot"} else None
    if at is not None:
        _mark(found, at).whole = True
    elif kind == "ident_arg":
        _visit_call(str(node.children[0]), None, call_args(node), found)
    elif kind == "member_dot_arg":
        _visit_call(str(node.children[1]), unwrap(node.children[0]), call_args(node), found)
    elif kind == "member_index":
        _visit_used(unwrap(node.children[0]), found, iterated=False)
        _visit(node.children[1], found)
    else:
        for child in node.children:
            _visit(child, found)


def _visit_used(node: Any, found: dict[str, Reads], *, iterated: bool) -> None:
    """A value used whole: a name's fields are marked so, anything else is walked."""
    at = place(node)
    if at is not None:
        marked = _mark(found, at)
        marked.whole = True
        marked.iterated = marked.iterated or iterated
    else:
        _visit(node, found)


def _measured(name: str, receiver: Any, args: list[Any]) -> tuple[str, tuple[str, ...]] | None:
    """The name's field that a ``has()`` only tests or a ``size()`` only measures, if any."""
    if name in {"has", "size"} and receiver is None and len(args) == 1:
        return place(args[0])
    if name == "size" and receiver is not None and not args:
        return place(receiver)
    return None


def _visit_call(name: str, receiver: Any, args: list[Any], found: dict[str, Reads]) -> None:
    at = _measured(name, receiver, args)
    if at is not None:
        node = _mark(found, at)  # has() needs the key only
        node.size = node.size or name == "size"
        return
    if receiver is not None:
        _visit_used(receiver, found, iterated=name in MACROS)
    for arg in args:
        _visit(arg, found)


def macro_shape(tree: Any) -> tuple[int, int]:
    """How deep macros (``exists``, ``map``...) nest in ``tree``, and their largest body.

    The body (in parse-tree nodes) runs once per element, nested bodies once per pair.
    """
    kids = [c for c in getattr(tree, "children", []) if hasattr(c, "data")]
    shapes = [macro_shape(c) for c in kids]
    depth = max((d for d, _ in shapes), default=0)
    body = max((b for _, b in shapes), default=0)
    if tree.data == "member_dot_arg" and str(tree.children[1]) in MACROS:
        return depth + 1, max(body, sum(_count(c) for c in kids[1:]))
    return depth, body


def _count(tree: Any) -> int:
    return 1 + sum(_count(c) for c in tree.children if hasattr(c, "data"))


class Budget:
    """How many JSON values one evaluation may still convert whole.

    Raises :class:`ValueTooLarge` once spent, so no evaluation converts more than it.
    """

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        """Allow ``limit`` values (every scalar, list and map counts one)."""
        self.limit = limit
        self.left = limit

    def spend(self, count: int) -> None:
        """Take ``count`` from what is left.

        Raises:
            ValueTooLarge: Nothing is left.
        """
        self.left -= count
        if self.left < 0:
            raise ValueTooLarge(
                f"the expression reads more than {self.limit} values whole in one evaluation"
            )

    def convert(self, value: Any) -> Any:
        """Convert a JSON-like Python value to CEL, spending one per value.

        Raises:
            ValueTooLarge: The budget is spent.
            TypeError: ``value`` is not JSON-like.
        """
        self.spend(1)
        value = _plain(value)
        if isinstance(value, Mapping):
            return celtypes.MapType({_key(k): self.convert(v) for k, v in value.items()})
        if isinstance(value, list | tuple):
            return celtypes.ListType([self.convert(v) for v in value])
        return _scalar(value)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return json_to_cel(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    raise TypeError(f"cannot bind a {type(value).__name__} in a CEL expression; use JSON values")


def _key(key: Any) -> Any:
    return _scalar(_plain(key))


def bind(value: Any, what: Reads, budget: Budget) -> Any:
    """``value`` as CEL, holding only what ``what`` reads of it.

    Raises:
        ValueTooLarge: The parts used whole exceed ``budget``.
    """
    value = _plain(value)
    if what.whole:
        if what.iterated and isinstance(value, str):
            budget.spend(len(value))
        return budget.convert(value)
    if isinstance(value, Mapping):
        shell = dict.fromkeys(value, _NULL) if what.size else {}
        kept = {k: bind(value[k], below, budget) for k, below in what.fields.items() if k in value}
        return celtypes.MapType(shell | {celtypes.StringType(k): v for k, v in kept.items()})
    if isinstance(value, list | tuple):
        # A field of a list is an error whatever the list holds; only its size can be read.
        return celtypes.ListType([_NULL] * len(value) if what.size else [])
    return _scalar(value)
