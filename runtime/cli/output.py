"""How the CLI prints: rich tables on a terminal, plain aligned text when piped.

A command builds its answer once, as lines and tables of plain cell text (its ``*_view``
function); :func:`emit` then prints it with rich when the stream is a terminal, or as the
plain aligned text scripts read (:func:`plain`) when it is not. Both show the same cells.
:func:`is_terminal` is the one switch between the two (tests replace it).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

STATUS_COLOURS = {
    "Running": "blue",
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
    """The parts as plain text (``click.echo`` drops their colour codes when piped)."""
    return "\n".join(_plain_part(p) for p in parts)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (the one switch between rich and plain output)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def answer(found: Any, as_json: bool, view: Callable[[Any], Sequence[Part]]) -> None:
    """Print a command's answer: as JSON with ``--json``, else through its ``view``."""
    if as_json:
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
            _print_rich(Console(file=stream, force_terminal=True, highlight=False), parts)
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
