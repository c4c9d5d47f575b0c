r"""One definition of a value stepkit carries, stores and compares: JSON every layer takes.

An event's ``data``, a step's output, ``step.invoke`` data and a handler's result all pass
through JSON, the stores (SQLite text, DynamoDB items), the CEL evaluator and comparisons of
waiter values. Each layer has its own edge: CEL's integers are 64-bit (``2**70 == 2**70 + 1``
there), UTF-8 cannot encode a lone surrogate (``\ud800``, as ``surrogateescape`` produces),
recursive encoders and evaluators run out of stack on deep nesting, and ``json.dumps`` turns
an integer key into a string (so ``{1: "a", "1": "b"}`` silently loses an entry). A value
inside all of them is valid everywhere; anything else is refused where it enters, naming the
path and the rule (:func:`problem`), instead of failing later in a store or an evaluator.

The rule:

- ``None``, booleans, strings, integers and finite floats, lists (a tuple is carried as a
  list) and objects;
- object keys are strings;
- integers between ``-2**63`` and ``2**63 - 1`` (CEL's ``int``, compared exactly; send larger
  numbers as strings);
- floats finite (JSON has no NaN or Infinity);
- strings valid UTF-8 (no lone surrogates);
- nesting at most :data:`MAX_DEPTH` levels of objects and lists.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

#: Nesting of objects and lists a value may have. CEL's evaluator and the JSON codecs are
#: recursive; 64 levels stay far inside their stack at any size (DynamoDB's own 32-level
#: limit does not apply: stepkit stores values as JSON text, not as nested attributes).
MAX_DEPTH = 64
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1


class Problem(NamedTuple):
    """Where a value breaks the rule, and which part of it."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


def problem(value: Any, root: str) -> Problem | None:
    """The first place ``value`` breaks the rule, or ``None`` when it is valid.

    Iterative (a value nested thousands deep is reported, not a ``RecursionError``), and one
    pass over the value: paths are built only for the place that is wrong.

    Args:
        value: The value as the caller has it.
        root: How the value's top is named in messages, e.g. ``"event.data"``.
    """
    # Each entry: the item, its depth, and its trail (parent trail, key) for the path.
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, trail = stack.pop()
        if item is None or item is True or item is False:
            continue
        kind = type(item)
        if kind is str:
            if not item.isascii() and not _utf8(item):
                return _at(root, trail, "contains a lone surrogate (like \\ud800) that UTF-8 "
                                        "cannot encode")
        elif kind is int:
            if not MIN_INT <= item <= MAX_INT:
                return _at(root, trail, _too_big(item))
        elif kind is float:
            if not math.isfinite(item):
                return _at(root, trail, f"contains {item}, which JSON cannot carry (send a "
                                        "string or null)")
        elif kind is dict or kind is list or kind is tuple:
            if depth >= MAX_DEPTH:
                return _circle(root, trail, item) or _at(
                    root, trail, f"nested deeper than {MAX_DEPTH} levels")
            if kind is dict:
                for key, child in item.items():
                    if type(key) is not str:
                        return _at(root, trail, f"has the {type(key).__name__} key {key!r}; "
                                                "object keys must be strings")
                    if not key.isascii() and not _utf8(key):
                        return _at(root, trail, "has a key with a lone surrogate (like "
                                                "\\ud800) that UTF-8 cannot encode")
                    stack.append((child, depth + 1, (trail, key, item)))
            else:
                stack.extend((child, depth + 1, (trail, i, item))
                             for i, child in enumerate(item))
        elif isinstance(item, bool | str | int | float | dict | list | tuple):
            # A subclass (an IntEnum, a str Enum, an OrderedDict): judge it as its base.
            stack.append((_base(item), depth, trail))
        else:
            name = kind.__name__
            article = "an" if name[:1].lower() in "aeiou" else "a"
            return _at(root, trail, f"is {article} {name}, which is not a JSON value; use "
                                    "dicts, lists, strings, numbers, booleans or None")
    return None


def _base(item: Any) -> Any:
    """A subclass's value as its plain base type, as ``json.dumps`` writes it."""
    if isinstance(item, str):
        return str.__str__(item)  # the characters, not a str-mixin Enum's "Cls.NAME"
    if isinstance(item, int):
        return int(item)
    if isinstance(item, float):
        return float(item)
    return dict(item) if isinstance(item, dict) else list(item)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_big(number: int) -> str:
    # str() of an int over 4,300 digits raises ValueError: say its size instead.
    shown = str(number) if number.bit_length() < 200 else f"an integer of about " \
        f"{int(number.bit_length() * 0.30103) + 1} digits"
    return (f"{shown} is outside -2**63..2**63-1, the integers CEL and stepkit compare "
            "exactly; send larger numbers as strings")


def _at(root: str, trail: Any, rule: str) -> Problem:
    keys: list[Any] = []
    while trail is not None:
        trail, key, _ = trail
        keys.append(key)
    return Problem(root + "".join(_step(k) for k in reversed(keys)), rule)


def _circle(root: str, trail: Any, item: Any) -> Problem | None:
    """A value too deep because it contains itself: where it first refers back."""
    chain: list[tuple[Any, Any]] = []  # (container, key taken in it), from the top down
    while trail is not None:
        trail, key, parent = trail
        chain.append((parent, key))
    chain.reverse()
    seen = [id(parent) for parent, _ in chain] + [id(item)]
    for end, ident in enumerate(seen):
        if ident in seen[:end]:
            keys = "".join(_step(k) for _, k in chain[:end])
            return Problem(root + keys, "is a circular reference (it contains itself)")
    return None


def _step(key: Any) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    if key.isidentifier():
        return f".{key}"
    return f"[{key!r}]"
