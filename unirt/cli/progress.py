"""Progress of long steps on the command line: on stderr, never on stdout.

Every command installs the display through the shared ``--quiet`` option
(:data:`unirt.cli.options.quiet_option`): it subscribes to :mod:`unirt.progress` for the
command's run. On a terminal a rich spinner names the step under way and each finished step
leaves a line; elsewhere (CI logs, pipes) each finished step is one plain line, so a log shows
what took the time. ``--json`` output on stdout is never mixed with it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from unirt.progress import Progress, StepState, subscribe


class _Plain:
    """One line per finished step (and per failed one), prefixed ``unirt:``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: Progress) -> None:
        if event.status == StepState.STARTED:
            return
        with self.lock:
            self.stream.write(f"unirt: {event.describe()}\n")
            self.stream.flush()

    def close(self) -> None:
        pass


class _Spinner:
    """A rich status line naming the innermost step under way; finished steps are printed
    above it (dim), so the terminal keeps where the time went."""

    def __init__(self) -> None:
        from unirt.cli.output import console

        self.console = console(stderr=True)
        self.running: list[Progress] = []
        self.lock = threading.Lock()
        self.status: Any = None

    def __call__(self, event: Progress) -> None:
        with self.lock:
            if event.status == StepState.STARTED:
                self.running.append(event)
            else:
                self.running = [e for e in self.running if not _same(e, event)]
                self.console.print(f"[dim]{_escape(event.describe())}[/dim]", highlight=False)
            if self.running:
                text = _escape(self.running[-1].describe())
                if self.status is None:
                    self.status = self.console.status(text, spinner="dots")
                    self.status.start()
                else:
                    self.status.update(text)
            elif self.status is not None:
                self.status.stop()
                self.status = None

    def close(self) -> None:
        with self.lock:
            if self.status is not None:
                self.status.stop()
                self.status = None


def _same(a: Progress, b: Progress) -> bool:
    return (a.step, a.backend, a.model) == (b.step, b.backend, b.model)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextmanager
def shown(quiet: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Show progress events on ``stream`` (stderr) while the block runs; nothing when quiet."""
    if quiet:
        yield
        return
    stream = stream or sys.stderr
    display: _Plain | _Spinner = _Spinner() if stream.isatty() else _Plain(stream)
    with subscribe(display):
        try:
            yield
        finally:
            display.close()
