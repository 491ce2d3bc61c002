"""The ``unirt`` command line.

User errors (:class:`~unirt.errors.UnirtError`) print as ``Error: ...`` with exit status 1 and no
traceback; anything else is a bug and prints as an internal error with its traceback and exit
status 3, so the two never get confused. Every command takes ``--json``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import click

from .errors import UnirtError

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UnirtError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception:
            click.echo("Internal error (a bug in unirt or a plugin, please report it):", err=True)
            click.echo(traceback.format_exc(), err=True)
            ctx.exit(EXIT_INTERNAL_ERROR)


def _console() -> Any:
    import shutil

    from rich.console import Console

    # Piped output (CI logs, files) gets a generous width instead of rich's 80 columns.
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((140, 24)).columns, 140)
    return Console(width=width, highlight=False)


def _table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, show_lines=False, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:  # Text(): values such as 'unirt[cuda]' are not rich markup
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    return t


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=_Group)
@click.version_option(package_name="unirt")
def cli() -> None:
    """Run ONNX models on whichever engine on this machine can run them, and say why."""


# -- unirt backends ---------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """List the registered backends: available?, version, devices, why not, how to install."""
    from .inventory import backends as list_backends
    from .plugins import get_registry

    statuses = list_backends()
    broken = [r for r in get_registry().records.values() if r.error]
    if as_json:
        _print_json({"backends": [s.as_dict() for s in statuses],
                     "broken_plugins": [r.as_dict() for r in broken]})
        return
    rows = []
    for s in statuses:
        why = "" if s.available else f"{s.reason}" + (
            f"\ninstall: {s.install_hint}" if s.install_hint else "")
        rows.append([s.name, "yes" if s.available else "no", s.version or "-",
                     ", ".join(s.devices) or "-", why])
    con = _console()
    con.print(_table("Backends", ["backend", "available", "version", "devices", "why not"], rows))
    for r in broken:
        con.print(f"[yellow]plugin {r.name} ({r.source}) failed to load: {r.error}[/yellow]")


# -- unirt plugins ----------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List plugins (built-in and installed), the backends each provides, and load errors."""
    from .plugins import get_registry

    reg = get_registry()
    reg.backends  # noqa: B018 - collecting backends fills each record's backend list
    records = list(reg.records.values())
    if as_json:
        _print_json([r.as_dict() for r in records])
        return
    rows = []
    for r in records:
        state = "disabled" if r.disabled else ("loaded" if r.loaded else "error")
        rows.append([r.name, r.source, state, ", ".join(r.backends) or "-", r.error or ""])
    _console().print(_table("Plugins", ["plugin", "source", "state", "backends", "error"], rows))


# -- unirt info -------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model: str, as_json: bool) -> None:
    """Describe a model: inputs, outputs, opsets, operators, size."""
    from .model import read_model

    m = read_model(model)
    data = {
        "model": str(m.path or m.name), "ir_version": m.ir_version, "producer": m.producer,
        "opsets": m.opsets, "size_bytes": m.size_bytes,
        "inputs": [_tensor_json(t) for t in m.inputs],
        "outputs": [_tensor_json(t) for t in m.outputs],
        "nodes": len(m.nodes), "op_counts": dict(m.op_counts.most_common()),
        "external_data": [str(p) for p in m.external_data],
    }
    if as_json:
        _print_json(data)
        return
    con = _console()
    opsets = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in m.opsets.items())
    con.print(f"{m.name}: IR {m.ir_version}, opsets {opsets}, "
              f"{len(m.nodes)} nodes, {m.size_bytes / 1e6:.2f} MB"
              + (f", producer {m.producer}" if m.producer else ""))
    con.print(_table("Inputs", ["name", "dtype", "shape"],
                     [[t.name, t.dtype, _shape_text(t.shape)] for t in m.inputs]))
    con.print(_table("Outputs", ["name", "dtype", "shape"],
                     [[t.name, t.dtype, _shape_text(t.shape)] for t in m.outputs]))
    con.print("operators: " + ", ".join(f"{op} x{n}" for op, n in m.op_counts.most_common()))


def _shape_text(shape: tuple | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _tensor_json(t: Any) -> dict[str, Any]:
    return {"name": t.name, "dtype": None if t.dtype is None else str(t.dtype),
            "shape": None if t.shape is None else list(t.shape)}


# -- unirt run --------------------------------------------------------------------------------
@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", "-b", default=None, help="Run on this backend only (no fallback).")
@click.option("--prefer", multiple=True, help="Try this backend first (repeatable).")
@click.option("--input", "-i", "input_specs", multiple=True, metavar="NAME=FILE.npy",
              help="An input from a .npy file (repeatable; FILE alone for a single-input model).")
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of a generated input (sets its dynamic dims).")
@click.option("--seed", default=0, show_default=True, help="Seed for generated inputs.")
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True, help="exact: float32 as declared; fast: the engine's defaults.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Save each output as NAME.npy here.")
@click.option("--explain", is_flag=True, help="Show the route: every backend considered and why.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def run(model: str, backend: str | None, prefer: tuple[str, ...], input_specs: tuple[str, ...],
        shape_specs: tuple[str, ...], seed: int, precision: str, output_dir: str | None,
        explain: bool, as_json: bool) -> None:
    """Run MODEL once on .npy inputs (or seeded random ones) and summarise the outputs."""
    import time

    from .inputs import load_npy, make_inputs, parse_assignments, parse_shape
    from .router import load

    sess = load(model, backend=backend, prefer=list(prefer) or None, precision=precision)
    with sess:
        names = [t.name for t in sess.inputs]
        files: dict[str, str] = {}
        for spec in input_specs:
            if "=" not in spec and len(names) == 1:
                files[names[0]] = spec
            else:
                files.update(parse_assignments([spec], "--input"))
        unknown = set(files) - set(names)
        if unknown:
            raise UnirtError(f"--input names unknown input(s) {', '.join(sorted(unknown))}; "
                             f"inputs: {', '.join(names)}")
        shapes = {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}
        generated = [t for t in sess.inputs if t.name not in files]
        feeds = make_inputs(generated, {k: v for k, v in shapes.items() if k not in files}, seed)
        feeds.update({name: load_npy(path, name) for name, path in files.items()})
        start = time.perf_counter()
        outputs = sess.run(feeds)
        elapsed = time.perf_counter() - start
        saved = _save_outputs(outputs, output_dir) if output_dir else {}
        summary = {
            "model": model, "backend": sess.backend, "seconds": elapsed,
            "inputs": {n: {"shape": list(a.shape), "dtype": str(a.dtype),
                           "source": files.get(n, f"random (seed {seed})")}
                       for n, a in feeds.items()},
            "outputs": {n: {**_stats(a), **({"file": saved[n]} if n in saved else {})}
                        for n, a in outputs.items()},
            "route": [s.as_dict() for s in sess.route],
        }
        if as_json:
            _print_json(summary)
            return
        con = _console()
        con.print(f"{Path(model).name} on [bold]{sess.backend}[/bold] in {elapsed * 1e3:.2f} ms")
        if explain:
            click.echo(sess.explain())
        con.print(_table("Inputs", ["name", "shape", "dtype", "source"],
                         [[n, _shape_text(tuple(a.shape)), a.dtype, files.get(n, "random")]
                          for n, a in feeds.items()]))
        rows = []
        for n, s in summary["outputs"].items():
            rows.append([n, _shape_text(tuple(s["shape"])), s["dtype"], _fmt(s.get("min")),
                         _fmt(s.get("max")), _fmt(s.get("mean")), _fmt(s.get("std")),
                         s.get("nan", ""), s.get("file", "")])
        con.print(_table("Outputs", ["name", "shape", "dtype", "min", "max", "mean", "std",
                                     "NaN", "saved to"], rows))


def _fmt(v: Any) -> str:
    return "" if v is None else (f"{v:.5g}" if isinstance(v, float) else str(v))


def _stats(a: Any) -> dict[str, Any]:
    import numpy as np

    arr = np.asarray(a)
    out: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.size and arr.dtype.kind in "fiub":
        x = arr.astype(np.float64)
        finite = x[np.isfinite(x)]
        out["nan"] = int(np.isnan(x).sum())
        if finite.size:
            out.update(min=float(finite.min()), max=float(finite.max()),
                       mean=float(finite.mean()), std=float(finite.std()))
    return out


def _save_outputs(outputs: dict[str, Any], output_dir: str) -> dict[str, str]:
    import numpy as np

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    saved = {}
    for name, arr in outputs.items():
        target = directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npy")
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.asarray(arr), allow_pickle=False)
            os.replace(tmp, target)  # a reader never sees a half-written file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        saved[name] = str(target)
    return saved


def _add_plugin_commands() -> None:
    from .plugins import get_registry

    get_registry().call_hook_safely("register_commands", cli=cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _add_plugin_commands()
    cli.main(args=argv, prog_name="unirt")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
