"""``unirt reduce``: the few-node repro of a backend's failure (see :mod:`unirt.tools.reduce`).

Kept apart from :mod:`unirt.cli.main` (the core adds it with ``cli.add_command(reduce_command)``).
Exit status 0 when a repro was written, 1 with the usual one-line error otherwise (the model
does not fail on the backend, the reference cannot run it, a bad argument).
"""

from __future__ import annotations

import click

from unirt.cli import output as cli_output
from unirt.cli.options import load_inputs_option, model_argument


@click.command("reduce")
@model_argument
@click.option("--backend", "-b", required=True, help="The backend that fails on MODEL.")
@click.option("--output", "-o", default=None, metavar="OUT.onnx",
              help="Where to write the reduced model (default: MODEL.reduced.onnx here); its "
                   "inputs go next to it as OUT.<input>.npy.")
@click.option("--input", "-i", "input_specs", multiple=True, metavar="NAME=FILE.npy",
              help="The inputs it fails on (default: seeded random ones).")
@load_inputs_option
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224")
@click.option("--seed", default=0, show_default=True)
@click.option("--precision", type=click.Choice(["exact", "fast"]), default="exact",
              show_default=True)
@click.option("--atol", type=float, default=None, help="Absolute tolerance (default per mode).")
@click.option("--rtol", type=float, default=None, help="Relative tolerance (default per mode).")
@click.option("--match", default=None, metavar="REGEX",
              help="Keep only cuts whose failure's description matches REGEX (an error "
                   "message, say), besides being of the same kind.")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds per engine run before it counts as hung.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reduce_command(model: str, backend: str, output: str | None, input_specs: tuple[str, ...],
                   load_dir: str | None,
                   shape_specs: tuple[str, ...], seed: int, precision: str, atol: float | None,
                   rtol: float | None, match: str | None, timeout: float,
                   as_json: bool) -> None:
    """Shrink MODEL, on which BACKEND fails (crash, error, hang, or numbers beyond tolerance
    against ONNX Runtime CPU), to a subgraph of a few nodes that still fails the same way, and
    write it with its inputs: a repro to file with the engine. Every engine run happens in a
    child process."""
    from unirt.cli import inputs as cli_inputs
    from unirt.evidence.inputs import parse_assignments, parse_shape
    from unirt.model.info import read_model
    from unirt.tools.reduce import reduce

    # the first set a --load-inputs folder holds (a live check's saved inputs: one set)
    feeds, _ = cli_inputs.given_inputs(read_model(model), input_specs, load_dir)
    shapes = {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}
    result = reduce(model, backend, output, feeds or None, shapes or None, seed, precision,
                    atol, rtol, timeout, match)
    if as_json:
        cli_output.print_json(result.as_dict())
        return
    click.echo(f"{result.model} on {result.backend}: {result.original.text()}")
    click.echo(f"reduced {result.nodes_before} -> {result.nodes_after} nodes "
               f"({', '.join(result.ops)}) in {result.runs} engine runs, "
               f"{result.seconds:.1f} s")
    click.echo(f"still fails: {result.failure.text()}")
    if result.diagnosis:
        click.echo(f"diagnosis: {result.diagnosis}")
    if not result.reference_runs:
        click.echo("warning: the reference cannot run the reduced model either")
    click.echo(f"wrote {result.path}" + "".join(f", {p}" for p in result.inputs.values()))
    click.echo(f"replay: {result.replay()}")
