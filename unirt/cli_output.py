"""How every ``unirt`` command prints: rich tables at a readable width, JSON for machines.

Shared by :mod:`unirt.cli`, :mod:`unirt.capability_cli` and :mod:`unirt.cache_cli`, so that all
commands look alike. ``rich`` is imported here, never by ``import unirt``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def console(stderr: bool = False) -> Any:
    """A rich console; piped output (CI logs, files) gets 140 columns instead of rich's 80."""
    import shutil

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else max(shutil.get_terminal_size((140, 24)).columns, 140)
    return Console(width=width, highlight=False, stderr=stderr)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Any:
    """A table whose cells are plain text (``unirt[cuda]`` is not rich markup)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, show_lines=False, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    return t


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
