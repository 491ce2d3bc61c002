"""How every ``unirt`` command prints: rich tables at a readable width, JSON for machines.

Shared by :mod:`unirt.cli.main`, :mod:`unirt.cli.capabilities` and :mod:`unirt.cli.cache`, so that
all commands look alike. ``rich`` is imported here, never by ``import unirt``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def console(stderr: bool = False) -> Any:
    """A rich console; piped output (CI logs, files) gets 140 columns instead of rich's 80,
    unless ``$COLUMNS`` says how wide (then that, as on a terminal)."""
    import os
    import shutil

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    asked = os.environ.get("COLUMNS", "")
    if asked.isdigit() and int(asked) > 0:
        width: int | None = int(asked)
    else:
        width = None if stream.isatty() else max(
            shutil.get_terminal_size((140, 24)).columns, 140)
    return Console(width=width, highlight=False, stderr=stderr)


def table(title: str | None, columns: list[str], rows: list[list[Any]],
          compact: bool = False, numeric: frozenset[int] = frozenset()) -> Any:
    """A table whose cells are plain text (``unirt[cuda]`` is not rich markup). ``compact``:
    no vertical rules (a row of many short columns fits 80 columns); ``numeric``: indices of
    columns that are never broken inside a number (a folded ``2.98e-08`` reads as garbage)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, show_lines=False, title_justify="left",
              box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, pad_edge=not compact,
              collapse_padding=compact)
    for i, c in enumerate(columns):
        if i in numeric:
            t.add_column(c, no_wrap=True, justify="right")
        elif compact and i < len(columns) - 1:  # names stay whole; the last column wraps
            t.add_column(c, no_wrap=True, overflow="ellipsis")
        else:
            t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    return t


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def dims_text(shape: tuple | None) -> str:
    """A tensor's shape as users read it: ``[1, 3, ?, ?]``; ``?`` when unknown."""
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def comma_list(value: str | None) -> list[str] | None:
    """``--backends A,B``: the names, or None when not given."""
    return [b.strip() for b in value.split(",") if b.strip()] if value else None


def num(v: float | None) -> str:
    """Three significant digits, without exponents: a table cell stays one short line."""
    if v is None:
        return ""
    if v == 0:
        return "0"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) >= 0.001 else f"{v:.1e}"
