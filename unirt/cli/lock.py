"""``unirt lock``: measure once and write a deployment lock; ``unirt lock --check``: does a lock
hold on this machine?

Kept apart from :mod:`unirt.cli.main` (the core adds it with ``cli.add_command(lock_command)``).
Errors follow the CLI's rule: a ``UnirtError`` (a malformed lock is a ``LockError``) is one line,
exit status 1. ``--check`` exits 1 with the differences, one per line, so a deployment script can
gate on it before shipping a device image.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from unirt.cli import output as cli_output
from unirt.cli.options import operating_point_options, optional_model_argument, writable_file
from unirt.errors import UnirtError

_console = cli_output.console
_print_json = cli_output.print_json


@click.command("lock")
@optional_model_argument
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False), default=None,
              callback=writable_file,
              help="Where to write the lock (default: unirt.lock).")
@operating_point_options
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True)
@click.option("--backend", "-b", default=None,
              help="Lock this backend (verified now) instead of the fastest one that passes.")
@click.option("--check", "check_path", type=click.Path(dir_okay=False), default=None,
              metavar="LOCK", help="Check LOCK against this machine (and MODEL, when given) "
                                   "instead of writing one: exit 1 with the differences.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lock_command(model: str | None, out: str | None, shape_specs: tuple[str, ...],
                 input_specs: tuple[str, ...], load_dir: str | None,
                 range_specs: tuple[str, ...], value_specs: tuple[str, ...],
                 precision: str, backend: str | None, check_path: str | None,
                 as_json: bool) -> None:
    """Choose MODEL's backend once, measured, and write it to a lock file for a fleet.

    Devices then open exactly that choice with unirt.load(MODEL, lock="unirt.lock"), with no
    measuring; a changed model or engine version is refused, naming what differs.
    """
    if check_path is not None:
        if out or shape_specs or backend or input_specs or load_dir or range_specs or \
                value_specs:
            raise UnirtError("--check reads a lock: --out, --backend and the input options "
                             "(--shape, --input, --load-inputs, --input-range, --input-values) "
                             "make one")
        _check(check_path, model, as_json)
        return
    if model is None:
        raise click.UsageError("give the MODEL to lock, or --check LOCK [MODEL]")
    _write(model, out or "unirt.lock", (shape_specs, input_specs, load_dir, range_specs,
                                        value_specs), precision, backend, as_json)


def _write(model: str, out: str, point: tuple[Any, ...], precision: str, backend: str | None,
           as_json: bool) -> None:
    from unirt.cli import inputs as cli_inputs
    from unirt.model.info import read_model
    from unirt.runtime.lock import write_lock
    from unirt.store.files import check_writable
    from unirt.tools.lock import measure_lock

    check_writable(out, "--out", inputs=[model])  # the default too, before the measuring
    shapes, ranges, inputs = cli_inputs.operating_point(read_model(model), *point)
    lock = measure_lock(model, backend=backend, shapes=shapes, precision=precision,
                        inputs=inputs, ranges=ranges or None)
    path = write_lock(lock, out)
    if as_json:
        _print_json({"written_to": str(path), "lock": lock.to_dict()})
        return
    con = _console()
    con.print(f"{lock.model.file}: locked on [bold]{lock.backend}[/bold] "
              f"({lock.engines.get(lock.backend) or 'no version'}), {lock.precision} precision",
              markup=True)
    if lock.verification is not None:
        con.print(f"verified: {lock.verification.summary}", markup=False)
    if lock.ranking:
        rows = [[i, r.backend, _fmt(r.median_ms), _fmt(r.max_abs)]
                for i, r in enumerate(lock.ranking, 1)]
        con.print(cli_output.table("Ranking", ["#", "backend", "median ms", "max abs"], rows))
    for name, why in lock.rejected.items():
        con.print(f"not ranked: {name}: {why}", markup=False)
    con.print(f"lock written to {path}", markup=False)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def _check(lock_path: str, model: str | None, as_json: bool) -> None:
    from unirt.runtime.lock import inspect_lock, read_lock

    lock = read_lock(lock_path)
    checked: str | None = model
    notes: list[str] = []
    if checked is None:  # a lock ships next to its model: check that file when it is there
        beside = Path(lock_path).parent / lock.model.file
        if beside.is_file():
            checked = str(beside)
        else:
            notes.append(f"model not checked: give MODEL ({lock.model.file} is not next to "
                         f"{lock.label})")
    result = inspect_lock(lock, checked)
    notes += result.notes
    data: dict[str, Any] = {"lock": lock_path, "ok": result.ok, "backend": lock.backend,
                            "model_checked": checked, "differences": result.differences,
                            "notes": notes}
    if as_json:
        _print_json(data)
    else:
        for line in result.differences:
            click.echo(line)
        for line in notes:
            click.echo(f"note: {line}", err=True)
        if result.ok:
            what = f" and {Path(checked).name}" if checked else ""
            click.echo(f"{lock.label} holds on this machine{what}: {lock.backend} "
                       f"({lock.describe()})")
    if not result.ok:
        sys.exit(1)
