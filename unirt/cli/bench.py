"""``unirt bench``: latency or throughput of every backend, side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from unirt.cli.options import (
    input_option,
    input_range_option,
    input_values_option,
    load_inputs_option,
    model_argument,
    writable_file,
)
from unirt.cli.output import comma_list, console, num, print_json, table
from unirt.errors import UnirtError
from unirt.store.files import write_atomic


@click.command(name="bench")
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
    report = b.bench(info, comma_list(backend_list), sweep, runs or 50, warmup, threads,
                     precision, timeout=timeout, feeds=feeds or None, ranges=ranges or None,
                     duration=duration, mode=mode, requests=requests)
    data = report.as_dict()
    if json_path:
        write_atomic(Path(json_path), json.dumps(data, indent=2, default=str))
    if csv_path:
        write_atomic(Path(csv_path), _csv(data["results"]))
    if plot_path:
        from unirt.tools.bench_plot import plot

        plot(report, Path(plot_path))
    if as_json:
        print_json(data)
        return
    m = report.machine
    con = console()
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
                f"/{r.streams}" if r.streams else ""), num(r.requests_per_s)]
        row += [num(r.min_ms), num(r.mean_ms), num(r.median_ms), num(r.p90_ms),
                num(r.p99_ms), num(r.throughput),
                "" if r.peak_rss_bytes is None else f"{r.peak_rss_bytes / 2**20:.0f}", r.reason]
        rows.append(row)
    columns = ["backend", "shape", "precision", "import", "convert", "cold load", "warm load"]
    if throughput:
        columns += ["in flight/streams", "requests/s"]
    columns += ["min", "mean", "p50", "p90", "p99", "samples/s", "peak MB", "note"]
    con.print(table("Benchmark (times in ms; convert: converting or compiling for the shape, "
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


def _num_ms(seconds: float | None) -> str:
    return "" if seconds is None else num(seconds * 1e3)


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()
