"""``unirt tune``: verify and time every available backend on a model, keep the ranking.

The next ``unirt.load(model)`` with no preference opens the winner directly (its verdict is
cached too). The measurement is :func:`unirt.evidence.timing.rank`, the one ``prefer="fastest"``
makes.
"""

from __future__ import annotations

from typing import Any

import click

from unirt.cli import output as cli_output
from unirt.cli.options import model_argument, operating_point_options, writable_file
from unirt.errors import UnirtError


@click.command("tune")
@model_argument
@click.option("--backends", "backend_list", default=None, metavar="A,B,...",
              help="Only these backends (default: every available one for --device).")
@operating_point_options
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "gpu"]), default="auto",
              show_default=True)
@click.option("--lock", "lock_path", type=click.Path(dir_okay=False), default=None,
              callback=writable_file,
              help="Also write a deployment lock of the winner (unirt.load(..., lock=FILE)).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tune_command(model: str, backend_list: str | None, shape_specs: tuple[str, ...],
                 input_specs: tuple[str, ...], load_dir: str | None,
                 range_specs: tuple[str, ...], value_specs: tuple[str, ...], precision: str,
                 device: str, lock_path: str | None, as_json: bool) -> None:
    """Verify and time every available backend on MODEL; the next load uses the fastest that
    is right.

    With --input or --load-inputs, every backend is verified on those arrays and timed on the
    first set, and the result is remembered with their shapes: a later plain
    unirt.load(MODEL) opens the winner and verifies it there."""
    from unirt.cli import inputs as cli_inputs
    from unirt.evidence.hints import graph_hints
    from unirt.evidence.inputs import fill_dynamic
    from unirt.evidence.timing import candidate_pool, rank
    from unirt.model.info import read_model
    from unirt.plugin.registry import get_registry
    from unirt.runtime.router import check_arguments, default_order

    registry = get_registry()
    info = read_model(model)
    shapes, ranges, inputs = cli_inputs.operating_point(info, shape_specs, input_specs, load_dir,
                                                        range_specs, value_specs)
    if inputs is None:  # the sizes verification guesses, said out loud
        fill_dynamic(info.inputs, shapes, sizes=graph_hints(info).sizes())
    check_arguments(registry, info, backend=None, prefer=None, exclude=None, device=device,
                     precision=precision, threads=None, options={}, verify="auto",
                     tolerance=None, input_shapes=shapes or None, fallback=True, check=True,
                     input_ranges=ranges or None)
    names = [b.strip() for b in backend_list.split(",") if b.strip()] if backend_list else \
        default_order(registry, device)
    pool, versions, skipped = candidate_pool(registry, names)
    if not pool:
        raise UnirtError("no available backend to tune: " + "; ".join(
            f"{n}: {why}" for n, why in skipped.items()))
    ranking = rank(info, pool, versions, precision, {}, shapes or None, registry=registry,
                   remeasure=True, ranges=ranges or None, inputs=inputs)
    if lock_path is not None:
        from unirt.runtime.lock import write_lock
        from unirt.tools.lock import measure_lock

        if ranking.winner is None:
            raise UnirtError(f"no backend passed on {info.name}: nothing to lock")
        write_lock(measure_lock(model, ranking.winner, shapes or None, precision, registry,
                                inputs=inputs), lock_path)
    if as_json:
        cli_output.print_json({"model": info.name, "precision": precision,
                               "ranking": ranking.as_dict(), "unavailable": skipped,
                               "lock": lock_path})
        return
    _print(ranking, skipped, info, registry)
    if lock_path is not None:
        cli_output.console().print(f"Lock written to {lock_path}: unirt.load({model!r}, "
                                   f"lock={lock_path!r}) opens {ranking.winner} without "
                                   "measuring.", highlight=False)


def _print(ranking: Any, skipped: dict[str, str], info: Any, registry: Any) -> None:
    model = info.name
    con = cli_output.console()
    ref = registry.reference
    ref_ms = ranking.median_s.get(ref) if ref else None
    rows = []
    for name in ranking.order:
        ms = ranking.median_s[name] * 1e3
        speed = f"{ref_ms * 1e3 / ms:.2f}x" if ref_ms else ""
        err = ranking.max_abs.get(name)
        load = ranking.load_s.get(name)
        rows.append([name, "verified" if name != ref else "reference", f"{ms:.3f}", speed,
                     "" if err is None else f"{err:.2g}",
                     "" if load is None else f"{load * 1e3:.0f}"])
    for name, why in ranking.rejected.items():
        rows.append([name, f"not used: {why}", "", "", "", ""])
    for name, why in skipped.items():
        rows.append([name, f"unavailable: {why}", "", "", "", ""])
    at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in ranking.shapes.items())
    con.print(cli_output.table(f"Tuning {model} at {at}",
                               ["backend", "result", "median ms", "vs reference",
                                "max abs err", "load ms"], rows))
    if ranking.winner:
        on = " and input sets" if ranking.inputs else ""
        con.print(f"The next unirt.load({model!r}) opens {ranking.winner} (the ranking is "
                  f"remembered with these shapes{on}).", highlight=False)

