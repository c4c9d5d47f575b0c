r"""How the CLI prints: rich tables on a terminal, plain aligned text when piped.

A command builds its answer once, as lines and tables of plain cell text (its ``*_view``
function); :func:`emit` then prints it with rich when the stream is a terminal, or as the
plain aligned text scripts read (:func:`plain`) when it is not. Both show the same cells.
:func:`is_terminal` is the one switch between the two (tests replace it). A line of text
that is no view is printed with :func:`say`.

Ids, names, errors and event data come from whoever sent them, so every human-readable
answer passes through :func:`escape` (in :func:`plain`, :func:`emit` and :func:`say`): a
terminal control character (an escape sequence that clears the screen or writes the
clipboard, a carriage return, a C1 control, a bidi override) is shown as its code, such as
``\x1b`` or ``\u202e``, never sent to the terminal. ``--json`` prints ``json.dumps``'s ASCII
output, where every such character is a ``\u`` escape already.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

STATUS_COLOURS = {
    "Running": "blue",
    "Blocked": "red",
    "Completed": "green",
    "Failed": "red",
    "Cancelled": "yellow",
    "Skipped": "magenta",
    "Retrying": "yellow",
    "Sleeping": "blue",
    "Waiting": "magenta",
    "Invoking": "magenta",
    "Scheduled": "cyan",
    "Abandoned": "yellow",
}


#: What :func:`escape` shows by its code: C0 controls (newline and tab too: a cell is one
#: line), DEL and the C1 controls, lone surrogates (no terminal encoding can write them),
#: the line and paragraph separators, and the bidi marks, embeddings, overrides and isolates
#: (they reorder what is shown after them, so an id could display as another).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028-\u202e"
                     "\u2066-\u2069]")


def escape(text: str) -> str:
    r"""``text`` with each terminal control character shown as its code (``\x1b``, ``\u202e``).

    The one escaping of the CLI's human-readable output. Backslashes are left as they are,
    so ordinary text (a Windows path, a regular expression) reads unchanged; the text is
    for reading, ``--json`` is the exact form.
    """
    return _UNSAFE.sub(_code, text)


def _code(match: re.Match[str]) -> str:
    point = ord(match.group())
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def say(text: str, *, err: bool = False) -> None:
    """Print one line of text (escaped) to stdout, or stderr with ``err``."""
    click.echo(escape(text), err=err)


def fmt_duration(ms: int | float | None) -> str:
    """Format a duration for people: ``350ms``, ``1.25s``, ``3m 2s``, ``2d 4h``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    rest = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def fmt_time(iso: str | None) -> str:
    """Format an API timestamp as ``2026-03-02 08:00:00Z`` (UTC)."""
    if not iso:
        return "-"
    return iso.replace("T", " ").split(".")[0].rstrip("Z") + "Z"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], status_col: int = -1) -> str:
    """Left-aligned columns; the ``status_col`` cells are coloured (on a terminal)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            padded = cell.ljust(width)
            if i == status_col:
                padded = click.style(padded, fg=STATUS_COLOURS.get(cell))
            cells.append(padded)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@dataclass(frozen=True)
class Styled:
    """Text in a colour (and bold) on a terminal; plain text when piped."""

    text: str
    colour: str | None = None
    bold: bool | None = None


@dataclass(frozen=True)
class Table:
    """A table's headers and cells, the one source of both renderings."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    #: The column of statuses, coloured as ``STATUS_COLOURS`` says (-1: none).
    status_col: int = -1


#: A line of text (its parts side by side), or a table.
Part = str | Styled | tuple[str | Styled, ...] | Table


def _plain_part(part: Part) -> str:
    if isinstance(part, Table):
        return table(part.headers, part.rows, part.status_col)
    if isinstance(part, Styled):
        return click.style(part.text, fg=part.colour, bold=part.bold)
    if isinstance(part, tuple):
        return "".join(_plain_part(p) for p in part)
    return part


def plain(parts: Sequence[Part]) -> str:
    """The parts as plain text, escaped (``click.echo`` drops their colour codes when piped)."""
    return "\n".join(_plain_part(_escaped(p)) for p in parts)


def _escaped(part: Part) -> Part:
    """``part`` with every text in it escaped (:func:`escape`), before widths are measured."""
    if isinstance(part, Table):
        return Table([escape(h) for h in part.headers],
                     [[escape(cell) for cell in row] for row in part.rows], part.status_col)
    if isinstance(part, tuple):
        return tuple(_escaped_text(p) for p in part)
    return _escaped_text(part)


def _escaped_text(part: str | Styled) -> str | Styled:
    if isinstance(part, Styled):
        return Styled(escape(part.text), part.colour, part.bold)
    return escape(part)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (the one switch between rich and plain output)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def answer(found: Any, as_json: bool, view: Callable[[Any], Sequence[Part]]) -> None:
    """Print a command's answer: as JSON with ``--json``, else through its ``view``."""
    if as_json:  # ASCII (the default): control characters are \u escapes, never raw
        click.echo(json.dumps(found, indent=2))
    else:
        emit(view(found))


def emit(parts: Sequence[Part], *, err: bool = False) -> None:
    """Print ``parts`` to stdout (stderr with ``err``): with rich on a terminal, else plain.

    On a terminal, rich honours ``NO_COLOR`` (tables, no colour) and ``TERM=dumb``. Piped,
    the output is the plain text :func:`plain` renders, so scripts read it unchanged.
    """
    stream = sys.stderr if err else sys.stdout
    if is_terminal(stream):
        try:
            from rich.console import Console
        except ModuleNotFoundError:  # an install without rich: the plain text says it all
            pass
        else:
            _print_rich(Console(file=stream, force_terminal=True, highlight=False),
                        [_escaped(p) for p in parts])
            return
    click.echo(plain(parts), err=err)


def _print_rich(console: Any, parts: Sequence[Part]) -> None:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    def text(part: str | Styled | tuple[str | Styled, ...]) -> Text:
        if isinstance(part, tuple):
            return Text.assemble(*(text(p) for p in part))
        if isinstance(part, Styled):
            style = " ".join(s for s in ("bold" if part.bold else "", part.colour or "") if s)
            return Text(part.text, style=style)
        return Text(part)  # never markup: cells hold user data such as "[1]"

    for part in parts:
        if not isinstance(part, Table):
            console.print(text(part))
            continue
        grid = RichTable(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False,
                         pad_edge=False)
        last = len(part.headers) - 1
        for i, header in enumerate(part.headers):  # ids stay whole; the last column wraps
            grid.add_column(header, no_wrap=i != last, overflow="fold")
        for row in part.rows:
            grid.add_row(*(
                Text(cell, style=STATUS_COLOURS.get(cell, "")) if i == part.status_col
                else Text(cell) for i, cell in enumerate(row)))
        console.print(grid)


def short_error(error: dict[str, Any] | None) -> str:
    """An error as ``Name: first line of its message`` (empty for none)."""
    if not error:
        return ""
    message = str(error.get("message", "")).splitlines()[0] if error.get("message") else ""
    return f"{error.get('name', 'Error')}: {message}"
