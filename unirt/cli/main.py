"""The ``unirt`` command line.

User errors (:class:`~unirt.errors.UnirtError`) print as ``Error: ...`` with exit status 1 and no
traceback; anything else is a bug and prints as an internal error with its traceback and exit
status 3, so the two never get confused. Every command takes ``--json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from unirt.cli import output as cli_output
from unirt.cli.options import (
    input_option,
    input_range_option,
    input_values_option,
    load_inputs_option,
    model_argument,
    save_inputs_option,
    with_quiet,
    writable_dir,
    writable_file,
)
from unirt.errors import BackendError, UnirtError
from unirt.store.files import write_atomic

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
        except BrokenPipeError:
            # `unirt lint m.onnx | head`: the reader left; nothing more to say, and no
            # traceback when Python flushes stdout at exit.
            # (no real stdout under click's test runner: nothing to redirect)
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(EXIT_USER_ERROR)
        except Exception:
            click.echo("Internal error (a bug in unirt or a plugin, please report it):", err=True)
            click.echo(traceback.format_exc(), err=True)
            ctx.exit(EXIT_INTERNAL_ERROR)


_console = cli_output.console
_table = cli_output.table
_print_json = cli_output.print_json


@click.group(cls=_Group)
@click.version_option(package_name="unirt")
def cli() -> None:
    """Run ONNX models on whichever engine on this machine can run them, and say why."""


# -- unirt backends ---------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """List the registered backends: available?, version, devices, why not, how to install."""
    from unirt.plugin.inventory import backends as list_backends
    from unirt.plugin.registry import get_registry

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
    from unirt.plugin.registry import get_registry

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
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(model: str, as_json: bool) -> None:
    """Describe a model: inputs, outputs, opsets, operators, size."""
    from unirt.model.info import read_model

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
    from unirt.evidence.inputs import parse_assignments, parse_shape, save_inputs
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
    import io

    import numpy as np

    saved = {}
    for name, arr in outputs.items():
        target = Path(output_dir) / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".npy")
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        _write_atomic(target, buf.getvalue())
        saved[name] = str(target)
    return saved


# -- unirt compare ----------------------------------------------------------------------------
def _backends_option(value: str | None) -> list[str] | None:
    return [b.strip() for b in value.split(",") if b.strip()] if value else None


def _shapes(shape_specs: tuple[str, ...]) -> dict[str, Any]:
    from unirt.evidence.inputs import parse_assignments, parse_shape

    return {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}


@cli.command()
@model_argument
@click.option("--backends", "backend_list", default=None, metavar="A,B,...",
              help="Backends to compare (default: every available one).")
@input_option
@load_inputs_option
@save_inputs_option
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224")
@input_range_option
@input_values_option
@click.option("--seed", default=0, show_default=True)
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True)
@click.option("--atol", "atol_specs", multiple=True, metavar="X | OUTPUT=X",
              help="Absolute tolerance, for every output or one (repeatable; default per "
                   "mode).")
@click.option("--rtol", "rtol_specs", multiple=True, metavar="X | OUTPUT=X",
              help="Relative tolerance, for every output or one (repeatable; default per "
                   "mode).")
@click.option("--layerwise", is_flag=True,
              help="For each failing backend, find the first node whose output diverges.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds per backend before it is reported as hung.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare(model: str, backend_list: str | None, input_specs: tuple[str, ...],
            load_dir: str | None, save_dir: str | None, shape_specs: tuple[str, ...],
            range_specs: tuple[str, ...], value_specs: tuple[str, ...], seed: int, precision: str,
            atol_specs: tuple[str, ...], rtol_specs: tuple[str, ...], layerwise: bool,
            timeout: float, as_json: bool) -> None:
    """Run MODEL on several backends and compare every output with ONNX Runtime CPU.

    Exit status 2 when a backend is out of tolerance, crashes or fails, so it can gate CI.
    With --save-inputs DIR the exact inputs are kept; --load-inputs DIR replays them.
    """
    from unirt.cli import inputs as cli_inputs
    from unirt.evidence.hints import hinted_feeds
    from unirt.evidence.inputs import save_input_sets
    from unirt.evidence.probe import FAIL
    from unirt.model.info import read_model
    from unirt.tools import compare as cmp

    shapes = _shapes(shape_specs)
    info = read_model(model)
    feeds, _ = cli_inputs.given_inputs(info, input_specs, load_dir)
    ranges = cli_inputs.ranges(info, range_specs, value_specs)
    atol = cli_inputs.tolerances(info, atol_specs, "atol")
    rtol = cli_inputs.tolerances(info, rtol_specs, "rtol")
    # Every set a --load-inputs folder holds is compared (--input arrays go into each).
    every: list[dict[str, Any]] = [feeds]
    if load_dir:
        sets = cli_inputs.input_sets(info, input_specs, load_dir, shapes, ranges)
        if sets is not None:
            every = [dict(s) for s in sets.sets]
            feeds = every[0]
    if save_dir:  # the arrays made here, saved, then run: a replay runs these very arrays
        every = [hinted_feeds(info, f, shapes, seed + i, ranges) for i, f in enumerate(every)]
        feeds = every[0]
        save_input_sets(save_dir, every)
    report = cmp.compare(info, _backends_option(backend_list),
                         every if len(every) > 1 else feeds, shapes, seed, precision,
                         atol, rtol, timeout, ranges=ranges or None)
    layers = {}
    if layerwise:  # intermediate tensors have no per-output figure: the overall one applies
        whole_atol = atol if not isinstance(atol, dict) else None
        whole_rtol = rtol if not isinstance(rtol, dict) else None
        for r in report.results:
            if r.status == FAIL:
                layers[r.backend] = cmp.layerwise(model, r.backend, feeds, shapes, seed,
                                                  precision, whole_atol, whole_rtol, timeout)
    if as_json:
        data = report.as_dict()
        data["layerwise"] = {k: v.as_dict() for k, v in layers.items()}
        _print_json(data)
    else:
        con = _console()
        shapes_text = ", ".join(f"{k}: {d}[{'x'.join(map(str, s))}]"
                                for k, (s, d) in report.inputs.items())
        con.print(f"{report.model}: {precision} precision, reference {report.reference}, "
                  f"inputs {shapes_text}")
        tols = {r.tolerances.get(o.name, (None, None)) for r in report.results
                for o in r.outputs}
        shared = next(iter(tols)) if len(tols) == 1 and None not in next(iter(tols)) else None
        rows = []
        for r in report.results:
            if not r.outputs:
                rows.append([r.backend, r.status.upper(), "", "", "", "", "", "", "", r.reason])
            for i, o in enumerate(r.outputs):
                tol = r.tolerances.get(o.name, (None, None))
                note = o.problem or ("" if shared is not None or None in tol
                                     else f"atol {tol[0]:.3g} rtol {tol[1]:.3g}")
                # The backend's name, verdict and precision once, on its first output's row.
                head = [r.backend, r.status.upper(), r.precision or ""] if i == 0 else \
                    ["", "", ""]
                rows.append([*head, o.name, _num(o.max_abs), _num(o.max_rel),
                             _num(o.mean_abs), _num(o.cosine), _topk(o), note])
        columns = ["backend", "verdict", "prec", "output", "max abs", "max rel", "mean abs",
                   "cosine", "top1/5", "note"]
        keep = [i for i, c in enumerate(columns) if i < 4 or any(row[i] for row in rows)]
        title = "Comparison" + ("" if shared is None else
                                f" (atol {shared[0]:.3g}, rtol {shared[1]:.3g})")
        con.print(_table(title, [columns[i] for i in keep],
                         [[row[i] for i in keep] for row in rows], compact=True,
                         numeric=frozenset(j for j, i in enumerate(keep) if 4 <= i <= 8)))
        for lw in layers.values():
            con.print(_layerwise_text(lw), markup=False)
        if layerwise:  # nothing to search layer by layer when the engine gave no outputs
            from unirt.evidence.probe import ProbeStatus

            for r in report.results:
                if r.status in (ProbeStatus.CRASHED, ProbeStatus.ERROR, ProbeStatus.TIMEOUT):
                    click.echo(f"layerwise {r.backend}: not searched ({r.status}: it gave no "
                               f"outputs); `unirt reduce {model} --backend {r.backend}` "
                               "shrinks the model to a repro that fails the same way")
    if not report.passed:
        sys.exit(2)


def _topk(o: Any) -> str:
    if o.top1 is None:
        return ""
    return f"{o.top1:.0%}" + ("" if o.top5 is None else f" / {o.top5:.0%}")


def _layerwise_text(lw: Any) -> str:
    return str(lw.text())


# -- unirt bench ------------------------------------------------------------------------------
@cli.command(name="bench")
@model_argument
@click.option("--backends", "backend_list", default=None, metavar="A,B,...",
              help="Backends to measure (default: every available one).")
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224",
              help="An input shape; repeat with several values of one input for a size sweep.")
@input_option
@load_inputs_option
@input_range_option
@input_values_option
@click.option("--runs", type=int, default=None,
              help="Timed runs per backend and shape.  [default: 50]")
@click.option("--duration", type=float, default=None, metavar="SECONDS",
              help="Run for this long per backend and shape instead of a --runs count.")
@click.option("--mode", type=click.Choice(["latency", "throughput"]), default="latency",
              show_default=True,
              help="latency: one request at a time; throughput: several in flight "
                   "(threads on one session; OpenVINO's CPU streams).")
@click.option("--requests", type=int, default=None, metavar="N",
              help="Requests in flight in throughput mode (default: the engine's optimal "
                   "number where it says, else the core count).")
@click.option("--warmup", default=5, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=None, help="Intra-op threads for every engine.")
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True)
@click.option("--timeout", type=float, default=600.0, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              callback=writable_file)
@click.option("--json-out", "json_path", type=click.Path(dir_okay=False), default=None,
              callback=writable_file, help="Write the report as JSON to this file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              callback=writable_file,
              help="Draw latency (median, p10-p90 band) against the swept size per backend "
                   "(needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def bench_cmd(model: str, backend_list: str | None, shape_specs: tuple[str, ...],
              input_specs: tuple[str, ...], load_dir: str | None, range_specs: tuple[str, ...],
              value_specs: tuple[str, ...], runs: int | None,
              duration: float | None, mode: str, requests: int | None,
              warmup: int, threads: int | None, precision: str, timeout: float,
              csv_path: str | None, json_path: str | None, plot_path: str | None,
              as_json: bool) -> None:
    """Measure load time and latency (or throughput) of MODEL on each backend, interleaved in
    one run."""
    from unirt.cli import inputs as cli_inputs
    from unirt.model.info import read_model
    from unirt.process.isolation import OutcomeStatus
    from unirt.tools import bench as b

    if runs is not None and duration is not None:
        raise UnirtError("give --runs or --duration, not both")
    if duration is not None and not duration > 0:
        raise UnirtError(f"--duration must be a positive number of seconds, not {duration:g}")
    if requests is not None and mode != "throughput":
        raise UnirtError("--requests is for --mode throughput (latency mode sends one at a "
                         "time)")
    sweep = _shape_sweep(shape_specs)
    info = read_model(model)
    feeds, _ = cli_inputs.given_inputs(info, input_specs, load_dir)
    ranges = cli_inputs.ranges(info, range_specs, value_specs)
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UnirtError('--plot needs matplotlib: pip install "unirt[plot]"') from None
    report = b.bench(info, _backends_option(backend_list), sweep, runs or 50, warmup, threads,
                     precision, timeout=timeout, feeds=feeds or None, ranges=ranges or None,
                     duration=duration, mode=mode, requests=requests)
    data = report.as_dict()
    if json_path:
        _write_atomic(Path(json_path), json.dumps(data, indent=2, default=str))
    if csv_path:
        _write_atomic(Path(csv_path), _csv(data["results"]))
    if plot_path:
        from unirt.tools.bench_plot import plot

        plot(report, Path(plot_path))
    if as_json:
        _print_json(data)
        return
    m = report.machine
    con = _console()
    con.print(f"{report.model} on {m['cpu']} ({m['cores']} cores), "
              + ", ".join(f"{k} {v}" for k, v in m["engines"].items()))
    throughput = mode == "throughput"
    rows = []
    for r in report.results:
        ok = r.status == OutcomeStatus.OK
        row = [r.backend, r.shape, (r.precision or "") if ok else r.status,
               _num_ms(r.import_s), _num_ms(r.convert_s), _num_ms(r.cold_load_s),
               _num_ms(r.warm_load_s)]
        if throughput:
            row += ["" if not ok else str(r.requests) + (
                f"/{r.streams}" if r.streams else ""), _num(r.requests_per_s)]
        row += [_num(r.min_ms), _num(r.mean_ms), _num(r.median_ms), _num(r.p90_ms),
                _num(r.p99_ms), _num(r.throughput),
                "" if r.peak_rss_bytes is None else f"{r.peak_rss_bytes / 2**20:.0f}", r.reason]
        rows.append(row)
    columns = ["backend", "shape", "precision", "import", "convert", "cold load", "warm load"]
    if throughput:
        columns += ["in flight/streams", "requests/s"]
    columns += ["min", "mean", "p50", "p90", "p99", "samples/s", "peak MB", "note"]
    con.print(_table("Benchmark (times in ms; convert: converting or compiling for the shape, "
                     "at load or at its first run)", columns, rows))


def _shape_sweep(specs: tuple[str, ...]) -> list[dict[str, Any]]:
    """``--shape`` values in order -> shape sets: repeating a name starts the next set, so
    ``-s x=1x3x32x32 -s x=1x3x64x64`` is a sweep of two sizes."""
    from unirt.evidence.inputs import parse_assignments, parse_shape

    sets: list[dict[str, Any]] = [{}]
    for spec in specs:
        name, value = next(iter(parse_assignments([spec], "--shape").items()))
        if name in sets[-1]:
            sets.append(dict(sets[-1]))
        sets[-1][name] = parse_shape(value)
    return sets


def _num(v: float | None) -> str:
    """Three significant digits, without exponents: a bench cell stays one short line."""
    if v is None:
        return ""
    if v == 0:
        return "0"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) >= 0.001 else f"{v:.1e}"


def _num_ms(seconds: float | None) -> str:
    return "" if seconds is None else _num(seconds * 1e3)


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


_write_atomic = write_atomic


def _add_builtin_groups() -> None:
    """Commands kept in modules of their own (the capability matrix, the cache)."""
    from unirt.cli.cache import cache
    from unirt.cli.capabilities import capabilities_command, probe_ops_command
    from unirt.cli.lint import lint_command
    from unirt.cli.lock import lock_command
    from unirt.cli.reduce import reduce_command
    from unirt.cli.rewrite import rewrite_command
    from unirt.cli.serve import serve_command
    from unirt.cli.tune import tune_command

    cli.add_command(capabilities_command)
    cli.add_command(probe_ops_command)
    cli.add_command(cache)
    cli.add_command(tune_command)
    cli.add_command(lock_command)
    cli.add_command(rewrite_command)
    cli.add_command(lint_command)
    cli.add_command(reduce_command)
    cli.add_command(serve_command)


_add_builtin_groups()
with_quiet(cli)


def _add_plugin_commands() -> None:
    from unirt.plugin.registry import get_registry

    get_registry().call_hook_safely("register_commands", cli=cli)
    with_quiet(cli)  # plugin commands too


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _add_plugin_commands()
    cli.main(args=argv, prog_name="unirt")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
