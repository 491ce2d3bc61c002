"""``unirt run``: one model run on the backend routing chooses, its outputs summarised or saved."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from unirt.cli.options import (
    input_option,
    input_range_option,
    input_values_option,
    load_inputs_option,
    model_argument,
    save_inputs_option,
    writable_dir,
)
from unirt.cli.output import console, dims_text, print_json, table
from unirt.errors import BackendError
from unirt.store.files import write_atomic


@click.command()
@model_argument
@click.option("--backend", "-b", default=None, help="Run on this backend only (no fallback).")
@click.option("--prefer", multiple=True, help="Try this backend first (repeatable).")
@input_option
@load_inputs_option
@save_inputs_option
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of a generated input (sets its dynamic dims).")
@input_range_option
@input_values_option
@click.option("--seed", default=0, show_default=True, help="Seed for generated inputs.")
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True, help="exact: float32 as declared; fast: the engine's defaults.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None,
              callback=writable_dir,
              help="Save each output as NAME.npy here.")
@click.option("--explain", is_flag=True, help="Show the route: every backend considered and why.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def run(model: str, backend: str | None, prefer: tuple[str, ...], input_specs: tuple[str, ...],
        load_dir: str | None, save_dir: str | None, shape_specs: tuple[str, ...],
        range_specs: tuple[str, ...],
        value_specs: tuple[str, ...], seed: int, precision: str, output_dir: str | None,
        explain: bool, as_json: bool) -> None:
    """Run MODEL once on .npy inputs (or seeded random ones) and summarise the outputs."""
    import time

    from unirt.cli import inputs as cli_inputs
    from unirt.evidence.hints import hinted_feeds
    from unirt.evidence.input_files import save_inputs
    from unirt.evidence.inputs import parse_assignments, parse_shape
    from unirt.model.info import read_model
    from unirt.runtime.router import load
    from unirt.tensor import is_static

    # Parsed before the model is opened, so a malformed --shape costs no engine load; a shape
    # too large for this machine is refused by feeds_for (an InputError naming the input, the
    # shape and the limit) before anything is allocated.
    shapes = {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}
    info = read_model(model)
    given, files = cli_inputs.given_inputs(info, input_specs, load_dir)
    ranges = cli_inputs.ranges(info, range_specs, value_specs)
    feeds = hinted_feeds(info, given, shapes, seed, ranges)
    if save_dir:
        save_inputs(save_dir, feeds)
    # The shapes that will run are the shapes verification measures (a detector verified at
    # 32x32 may refuse 640x640, or be wrong only there), and so are the value ranges.
    sess = load(info, backend=backend, prefer=list(prefer) or None, precision=precision,
                input_shapes={n: tuple(a.shape) for n, a in feeds.items()
                              if n in shapes or n in given} or None,
                input_ranges=ranges or None)
    guessed = [t.name for t in info.inputs if t.name not in shapes and t.name not in given
               and t.shape is not None and not all(map(is_static, t.shape))]
    with sess:
        start = time.perf_counter()
        try:
            outputs = sess.run(feeds)
        except BackendError as exc:
            if not guessed:
                raise
            raise BackendError(f"{exc} (the dynamic dims of {', '.join(map(repr, guessed))} "
                               "were guessed, see the warning above: set the model's real "
                               "sizes with --shape)") from exc
        elapsed = time.perf_counter() - start
        saved = _save_outputs(outputs, output_dir) if output_dir else {}
        summary: dict[str, Any] = {
            "model": model, "backend": sess.backend, "seconds": elapsed,
            "inputs": {n: {"shape": list(a.shape), "dtype": str(a.dtype),
                           "source": files.get(n, f"random (seed {seed})")}
                       for n, a in feeds.items()},
            "outputs": {n: {**_stats(a), **({"file": saved[n]} if n in saved else {})}
                        for n, a in outputs.items()},
            "route": [s.as_dict() for s in sess.route],
        }
        if as_json:
            print_json(summary)
            return
        con = console()
        con.print(f"{Path(model).name} on [bold]{sess.backend}[/bold] in {elapsed * 1e3:.2f} ms")
        if explain:
            click.echo(sess.explain())
        con.print(table("Inputs", ["name", "shape", "dtype", "source"],
                         [[n, dims_text(tuple(a.shape)), a.dtype, files.get(n, "random")]
                          for n, a in feeds.items()]))
        rows = []
        for n, s in summary["outputs"].items():
            rows.append([n, dims_text(tuple(s["shape"])), s["dtype"], _fmt(s.get("min")),
                         _fmt(s.get("max")), _fmt(s.get("mean")), _fmt(s.get("std")),
                         s.get("nan", ""), s.get("file", "")])
        con.print(table("Outputs", ["name", "shape", "dtype", "min", "max", "mean", "std",
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
    import io

    import numpy as np

    saved = {}
    for name, arr in outputs.items():
        target = Path(output_dir) / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npy")
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        write_atomic(target, buf.getvalue())
        saved[name] = str(target)
    return saved
