"""CEL expressions for trigger filters, ``cancel_on`` and ``wait_for_event`` matching.

Common Expression Language (https://cel.dev), evaluated by ``celpy`` over JSON-like
values bound to names such as ``event`` (the run's trigger) and ``async`` (the incoming
event). Semantics:

* An expression *matches* only if it evaluates to the boolean ``true``. A result of any
  other type, or an evaluation error (missing field, type mismatch, division by zero, bad
  regex), is "no match": a filter that cannot be evaluated does not fire.
* CEL is strictly typed, but JSON has one number type, so the six comparison operators
  compare ints and doubles by numeric value (``1 == 1.0``, ``event.data.amount > 100`` for
  ``amount`` 99.5 or 150), as the current CEL spec and cel-go do. ``in`` and list/map
  equality stay strict (``3 in [3.0]`` is an error, hence no match). A bool never equals
  a number (celpy alone says ``true == 1``).
* ``has(event.data.x)`` tests that the key exists; a missing key in a comparison is an
  error, hence no match.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from runtime.checks import parser_checks

if TYPE_CHECKING:
    from runtime._cel import Program

__all__ = [
    "Expression",
    "ExpressionError",
    "event_index_keys",
    "index_key",
    "index_term",
    "interpolate",
    "match_expression",
]

_INT64 = range(-(2**63), 2**63)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*$")
_DOTTED = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
# interpolate()'s tokens; comments and strings are matched only to skip them. Names after
# '.' or a word character are members (``async.event``) or in numbers (``1e3``).
_TOKENS = re.compile(
    rf"""
      (?P<comment>//[^\n]*)
    | (?P<string>[rRbB]{{0,2}}(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"
                             |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    | (?<![\w.])has\s*\(\s*(?P<has>{_DOTTED})\s*\)
    | (?<![\w.])(?P<path>{_DOTTED})(?P<call>\s*\()?
    """,
    re.VERBOSE,
)


class ExpressionError(ValueError):
    """An expression that does not compile, or a malformed ``match`` field."""


def _plain(value: Any) -> Any:
    """Map ``Decimal`` (from DynamoDB) to int or float, and ints past int64 to float."""
    if isinstance(value, Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        value = float(value)
    return value


_STRINGS = re.compile(r"""(?:[rR]?'(?:\\.|[^'\\])*'|[rR]?"(?:\\.|[^"\\])*")""")
# A name at the start of a path: not after '.', not a function call.
_ROOT_NAME = re.compile(r"(?<![.\w])([A-Za-z_]\w*)\b(?!\s*\()")
_MACRO_VARS = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
_CEL_WORDS = frozenset({"true", "false", "null", "in"})


class Expression:
    """A compiled CEL expression.

    Attributes:
        source: The CEL text.
        where: What the expression belongs to, used in error messages.

    """

    __slots__ = ("_program", "source", "where")

    def __init__(self, source: str, *, where: str) -> None:
        """Compile ``source``; see :meth:`compile`."""
        self.source = source
        self.where = where
        self._program: Program | None = None
        if parser_checks():
            self._program = self._parse()

    def _parse(self) -> Program:
        from runtime import _cel  # celpy and its grammar load on first use, not at import

        try:
            return _cel.compile_program(self.source)
        except _cel.CELParseError as exc:
            caret = str(exc).rstrip("\n")
            line, column = getattr(exc, "line", None), getattr(exc, "column", None)
            at = f" at line {line}, column {column}" if line is not None else ""
            raise ExpressionError(
                f"{self.where}: invalid CEL expression {self.source!r}: syntax error{at}:\n{caret}"
            ) from None

    def _runner(self) -> Program:
        """The parsed program; parsed here in a Lambda (:mod:`runtime.checks`)."""
        if self._program is None:
            self._program = self._parse()
        return self._program

    @classmethod
    def check_names(cls, source: str, allowed: Sequence[str], *, where: str) -> None:
        """Refuse what registration can tell will never match, for every event.

        Names the expression will never have bound (``evnt.data.x``) and, where parsers
        load (:mod:`runtime.checks`), calls of unknown functions or methods
        (``event.data.x.y.z()``), wrong arities and operand types that never go together
        (``size(event) > 'a'``). A syntax error is left to :meth:`compile`.

        Raises:
            ExpressionError: Naming ``where``, the expression and the mistake: the unknown
                name and the names available, or the position (line and column).
        """
        text = _STRINGS.sub('""', source)
        bound = set(allowed) | set(_MACRO_VARS.findall(text)) | _CEL_WORDS
        for m in _ROOT_NAME.finditer(text):
            name = m.group(1)
            if name not in bound:
                raise ExpressionError(
                    f"{where}: unknown name '{name}' in {source!r}; "
                    f"use {' or '.join(repr(a) for a in allowed)}"
                )
        if parser_checks():
            cls._check_calls_and_types(source, where=where)

    @classmethod
    def _check_calls_and_types(cls, source: str, *, where: str) -> None:
        """Refuse unknown functions and methods, wrong arities and operand types no event fixes.

        Run on the text as written, never on a waiter's interpolated one: there the run's
        own values are literals, and a type that one event makes wrong is no mistake.
        """
        from runtime import _cel

        found = _cel.mistake(source)
        if found is not None:
            shown = source.splitlines()[found.line - 1] if source else ""
            raise ExpressionError(
                f"{where}: invalid CEL expression {source!r}: {found.text}"
                f" at line {found.line}, column {found.column}:\n{shown}\n"
                f"{' ' * (found.column - 1)}^"
            )

    @classmethod
    def compile(cls, source: str, *, where: str) -> Expression:
        """Parse ``source`` once, for many evaluations.

        Args:
            source: CEL text, e.g. ``"event.data.plan == 'pro'"``.
            where: Names the expression's owner for errors, e.g.
                ``"function 'x' trigger 'user/signup' if-expression"``.

        Returns:
            The compiled expression.

        Raises:
            ExpressionError: On a syntax error; the message names ``where`` and shows
                celpy's caret under the failing position. Unknown names and type errors
                are only found when evaluating (and then mean "no match"). In a Lambda
                handler, whose app ``cdk synth`` already checked, parsing waits for the
                first evaluation (:mod:`runtime.checks`).

        """
        return cls(source, where=where)

    def matches(self, **variables: Any) -> bool:
        """Evaluate with keyword bindings; ``async_=`` binds the keyword ``async``.

        A trailing underscore is dropped from names that are Python keywords. See
        :meth:`matches_vars`.
        """
        names = {
            k[:-1] if k.endswith("_") and keyword.iskeyword(k[:-1]) else k: v
            for k, v in variables.items()
        }
        return self.matches_vars(names)

    def matches_vars(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate with JSON-like values bound to names.

        Args:
            variables: E.g. ``{"event": {...}, "async": {...}}``; values are dicts, lists,
                str, int, float, ``Decimal``, bool or None.

        Returns:
            True only if the expression yields boolean true. An evaluation error (missing
            field, unknown name, type mismatch) or a non-boolean result gives False.

        Raises:
            TypeError: If a value is not JSON-like (a programming error, not a non-match).

        """
        from runtime import _cel

        return _cel.evaluate(self._runner(), variables)

    def value(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate to a JSON-like value (a key, a number) with ``variables`` bound.

        Raises:
            LookupError: Evaluation failed (a missing field, a type mismatch...).
        """
        from runtime import _cel

        return _cel.value(self._runner(), variables)

    def __repr__(self) -> str:
        return f"Expression({self.source!r}, where={self.where!r})"


def _literal(value: Any) -> str:
    """Write a JSON-like value as a CEL literal."""
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        special = "NaN" if math.isnan(value) else "-Infinity" if value < 0 else "Infinity"
        return f'double("{special}")'
    if isinstance(value, int | float):
        text = repr(value) if isinstance(value, float) else str(value)
        return f"({text})" if value < 0 else text
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} as a CEL literal; use JSON values")


_MISSING = object()


def _lookup(bindings: Mapping[str, Any], segments: list[str]) -> Any:
    """Return the value at a path of names, or ``_MISSING``."""
    value: Any = bindings[segments[0]]
    for name in segments[1:]:
        if not isinstance(value, Mapping) or name not in value:
            return _MISSING
        value = value[name]
    return value


#: Bounds of a value frozen into a waiter (:func:`interpolate`). The waiter is kept for as
#: long as the run waits and compared with every event of its name that reaches it, so the
#: value is checked once, here: nested so deep that CEL's recursive evaluator fails (about 50
#: levels), or so large that the waiter item passes DynamoDB's 400 KB, it would otherwise be a
#: waiter that breaks when an event arrives.
MAX_FROZEN_DEPTH = 8
MAX_FROZEN_BYTES = 4096


def _frozen(value: Any, path: str) -> str:
    """``value`` as a CEL literal, within the bounds of a value frozen into a waiter."""
    level = [value]
    for _ in range(MAX_FROZEN_DEPTH):  # down to what lies inside MAX_FROZEN_DEPTH containers
        level = [child for item in level if isinstance(item, Mapping | list | tuple)
                 for child in (item.values() if isinstance(item, Mapping) else item)]
    if any(isinstance(item, Mapping | list | tuple) for item in level):
        raise ExpressionError(
            f"{path} is nested deeper than {MAX_FROZEN_DEPTH} levels, more than a waiter "
            "may compare; compare a scalar field of it instead")
    text = _literal(value)
    if len(text.encode()) > MAX_FROZEN_BYTES:
        raise ExpressionError(
            f"{path} is {len(text.encode())} bytes as a literal, over the {MAX_FROZEN_BYTES} "
            "a waiter may compare; compare a smaller field (an id) instead")
    return text


def interpolate(source: str, bindings: Mapping[str, Any]) -> str:
    """Replace dotted references to ``bindings`` with CEL literals of their values.

    Used to freeze the run's triggering ``event`` into a ``wait_for_event`` /
    ``cancel_on`` expression when the waiter is registered, leaving only ``async``.
    ``event.data.user_id`` becomes e.g. ``"u_1"``; a path that does not exist becomes
    ``null``; ``has(event.data.x)`` becomes ``true`` or ``false``; in
    ``event.data.name.startsWith("a")`` the method call stays. Text inside string
    literals and comments, and names of other bindings, are left alone. Indexing
    (``event.data["x"]``) works on the substituted literal.

    Args:
        source: CEL text.
        bindings: Name to JSON-like value, e.g. ``{"event": {...}}``.

    Returns:
        The CEL text with the references replaced.

    Raises:
        TypeError: If a referenced value is not JSON-like.
        ExpressionError: A referenced value is nested deeper than :data:`MAX_FROZEN_DEPTH`
            or its literal is over :data:`MAX_FROZEN_BYTES` (naming the path).

    """

    def replace(m: re.Match[str]) -> str:
        path = m["has"] or m["path"]
        segments = [s.strip() for s in (path or "").split(".")]
        # Leave comments, strings, other names, and calls of a function named like a binding.
        if not path or segments[0] not in bindings or (m["call"] and len(segments) == 1):
            return m[0]
        if m["has"]:
            return "false" if _lookup(bindings, segments) is _MISSING else "true"
        method = f".{segments.pop()}{m['call']}" if m["call"] else ""
        value = _lookup(bindings, segments)
        return ("null" if value is _MISSING else _frozen(value, ".".join(segments))) + method

    return _TOKENS.sub(replace, source)


def match_expression(field: str) -> str:
    """Build the CEL for an Inngest-style ``match``: the field is equal in both events.

    Args:
        field: A dotted path relative to the event, e.g. ``"data.user_id"``.

    Returns:
        E.g. ``"event.data.user_id == async.data.user_id"``.

    Raises:
        ExpressionError: If ``field`` is not a dotted path of identifiers.

    """
    if not isinstance(field, str) or not _PATH.match(field):
        raise ExpressionError(
            f"match field {field!r} must be a dotted path of identifiers, e.g. 'data.user_id'"
        )
    source = f"event.{field} == async.{field}"
    Expression.compile(source, where=f"match field {field!r}")  # rejects reserved words
    return source


# -- the value index of waiters ------------------------------------------------------------

_INDEX_KEY_BYTES = 200  # longer values are indexed by their digest, to keep keys small


def index_key(value: Any) -> str | None:
    """The key under which a scalar JSON value is indexed, or ``None`` for other values.

    Values that compare equal under stepkit's CEL (``1 == 1.0``) get the same key; values
    that do not (``1`` and ``"1"``, ``true`` and ``1``) get different keys.
    """
    value = _plain(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            value = int(value)
    if not isinstance(value, str | int | float):  # bool is an int
        return None
    text = json.dumps(value, ensure_ascii=False)
    if len(text.encode()) > _INDEX_KEY_BYTES:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


@lru_cache(maxsize=4096)
def index_term(source: str) -> tuple[str, str] | None:
    """An equality every event matching ``source`` satisfies, as ``(path, index key)``.

    ``source`` is a waiter's expression over ``async`` (the run's own values already
    interpolated). A conjunct of the whole expression of the form ``async.<path> ==
    <string, number or bool>`` (either way round) qualifies; the first one is used. So an
    ``order/paid`` event need only be compared with the waiters indexed under its own
    ``data.order_id`` (and those with no such term), not with every waiter of the name.

    Returns:
        E.g. ``("data.order_id", '"ord_1"')``; ``None`` for an empty expression or one
        with no qualifying conjunct.
    """
    if not source:
        return None
    from runtime import _cel

    try:
        terms = _cel.equality_terms(source, "async")
    except _cel.CELParseError:
        return None  # compiled when registered: only a hand-made waiter gets here
    for path, value in terms:
        key = index_key(value)
        if key is not None:
            return ".".join(path), key
    return None


def event_index_keys(event: Mapping[str, Any], paths: Iterable[str]) -> list[tuple[str, str]]:
    """``(path, index key)`` for each of ``paths`` at which ``event`` has a scalar value.

    These are the value-index entries whose waiters ``event`` could match (see
    :func:`index_term`); paths the event lacks, or holds a list or map at, have none.
    """
    out = []
    for path in paths:
        value: Any = event
        for name in path.split("."):
            value = value.get(name) if isinstance(value, Mapping) else None
        key = index_key(value)
        if key is not None:
            out.append((path, key))
    return out
