"""``unirt compare``: every backend on the same inputs against the reference, output by output."""

from __future__ import annotations

import sys
from typing import Any

import click

from unirt.cli.options import (
    input_option,
    input_range_option,
    input_values_option,
    load_inputs_option,
    model_argument,
    save_inputs_option,
)
from unirt.cli.output import comma_list, console, num, print_json, table


def _shapes(shape_specs: tuple[str, ...]) -> dict[str, Any]:
    from unirt.evidence.inputs import parse_assignments, parse_shape

    return {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}


@click.command()
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
    from unirt.evidence.input_files import save_input_sets
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
    report = cmp.compare(info, comma_list(backend_list),
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
        print_json(data)
    else:
        con = console()
        shapes_text = ", ".join(f"{k}: {d}[{'x'.join(map(str, s))}]"
                                for k, (s, d) in report.inputs.items())
        con.print(f"{report.model}: {precision} precision, reference {report.reference}, "
                  f"inputs {shapes_text}")
        con.print(_report_table(report))
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


def _report_table(report: Any) -> Any:
    """The comparison as a table: a row per output, the backend's verdict on its first one;
    a column only where some row has a value; tolerances in the title when all share them."""
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
            rows.append([*head, o.name, num(o.max_abs), num(o.max_rel),
                         num(o.mean_abs), num(o.cosine), _topk(o), note])
    columns = ["backend", "verdict", "prec", "output", "max abs", "max rel", "mean abs",
               "cosine", "top1/5", "note"]
    keep = [i for i, c in enumerate(columns) if i < 4 or any(row[i] for row in rows)]
    title = "Comparison" + ("" if shared is None else
                            f" (atol {shared[0]:.3g}, rtol {shared[1]:.3g})")
    return table(title, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows],
                 compact=True, numeric=frozenset(j for j, i in enumerate(keep) if 4 <= i <= 8))


def _topk(o: Any) -> str:
    if o.top1 is None:
        return ""
    return f"{o.top1:.0%}" + ("" if o.top5 is None else f" / {o.top5:.0%}")


def _layerwise_text(lw: Any) -> str:
    return str(lw.text())
