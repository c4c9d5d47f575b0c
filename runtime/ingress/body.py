r"""A request's JSON body read strictly: every malformed body is a 400, never a 500.

Shared by the dev server's API and the event endpoint (deployed and local). What
``json.loads`` raises besides a syntax error (``RecursionError`` on deep nesting,
``ValueError`` on an integer past Python's 4,300-digit conversion limit) and what it lets
through but nothing downstream can store (a lone surrogate from a ``\ud800`` escape, NaN)
are refused here with the rule they break.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: Nesting a body may have: above any event's (its data nests at most 64 levels, inside the
#: event object and the list), far below what the parser's recursion can take.
MAX_BODY_DEPTH = 128


class BodyError(Exception):
    """A request body refused, with its HTTP status (400 or 413) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json(body: bytes, *, check: bool = True) -> Any:
    """The JSON value of ``body``.

    Args:
        body: The request's body.
        check: Also walk the value for nesting and lone surrogates (:func:`check_value`).
            A caller that validates the value as events next passes ``False``: event
            validation applies the same rules, field by field (:mod:`runtime.values`), and
            a second walk of a 2 MiB body costs as much again.

    Raises:
        BodyError: 400: not UTF-8, not JSON, NaN or Infinity, an integer too long to convert,
            nested deeper than ``MAX_BODY_DEPTH`` (deeper than the parser can go, unchecked),
            or a lone surrogate in a string (checked).
    """
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise BodyError(400, "invalid JSON body: not UTF-8 text") from None
    except RecursionError:
        raise BodyError(400, f"invalid JSON body: nested deeper than {MAX_BODY_DEPTH} "
                             "levels") from None
    except json.JSONDecodeError as exc:
        raise BodyError(400, f"invalid JSON body: {exc}") from None
    except ValueError as exc:  # an integer past the int-string conversion limit, NaN
        raise BodyError(400, f"invalid JSON body: {_value_problem(exc)}") from None
    if check:
        check_value(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (send a string or null)")


def _value_problem(exc: ValueError) -> str:
    if "integer string conversion" in str(exc):
        return (f"an integer has more than {sys.get_int_max_str_digits()} digits "
                "(send it as a string)")
    return str(exc)


def check_value(value: Any) -> None:
    """Refuse nesting past ``MAX_BODY_DEPTH`` and strings UTF-8 cannot carry.

    Raises:
        BodyError: 400, naming the rule.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_BODY_DEPTH:
                raise BodyError(400, f"invalid JSON body: nested deeper than {MAX_BODY_DEPTH} "
                                     "levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(400, "invalid JSON body: a string contains a lone surrogate (like "
                             "\\ud800), which is not text") from None
