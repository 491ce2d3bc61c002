"""``unirt rewrite``: write a model fitted to an engine, for users who ship the file without
unirt. Nothing is written unless the engine's numbers on the rewritten model were checked (run
in a child and compared with the reference on the original: verified; or, when nothing runs the
original, with the reference on the rewritten model: ran right, the rewrite itself unproven, and
said so): a repair unirt cannot vouch for is not one.
"""

from __future__ import annotations

import json

import click

from unirt.cli.options import operating_point_options, optional_model_argument, writable_file
from unirt.errors import UnirtError


@click.command("rewrite")
@optional_model_argument
@click.option("--for", "backend", default=None, metavar="BACKEND",
              help="The engine the model is fitted to (verified on it).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              callback=writable_file,
              help="Where to write the rewritten model.")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Only this rewrite (repeatable; opt-in rewrites must be named).")
@operating_point_options
@click.option("--list", "list_only", is_flag=True, help="List the registered rewrites.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rewrite_command(model: str | None, backend: str | None, out: str | None,
                    only: tuple[str, ...], shape_specs: tuple[str, ...],
                    input_specs: tuple[str, ...], load_dir: str | None,
                    range_specs: tuple[str, ...], value_specs: tuple[str, ...], list_only: bool,
                    as_json: bool) -> None:
    """Rewrite MODEL so that BACKEND runs it, verify it, and write it to OUT. With --input or
    --load-inputs the rewritten model is verified on those inputs."""
    from unirt.plugin.registry import get_registry

    registry = get_registry()
    if list_only:
        rows = [{"name": r.name, "summary": r.summary, "ops": sorted(r.ops),
                 "opt_in": r.opt_in, "version": r.version} for r in registry.rewrites.values()]
        if as_json:
            click.echo(json.dumps(rows, indent=1))
        else:
            for row in rows:
                click.echo(f"{row['name']}{' (opt-in)' if row['opt_in'] else ''}: "
                           f"{row['summary']}")
        return
    if model is None or backend is None or out is None:
        raise UnirtError("give MODEL, --for BACKEND and -o OUT.onnx (or --list)")
    from unirt.cli import inputs as cli_inputs
    from unirt.evidence.traced import rewrite_traced_shapes
    from unirt.model.info import read_model
    from unirt.runtime.fit import PROVEN, check_names, fit
    from unirt.store.files import check_writable, copy_atomic

    target = check_writable(out, "--out", inputs=[model])  # before any work
    info = read_model(model)
    registry.backend(backend)
    names = check_names(registry, list(only)) if only else None
    shapes, ranges, inputs = cli_inputs.operating_point(info, shape_specs, input_specs, load_dir,
                                                        range_specs, value_specs)
    if inputs is not None:
        shapes = {**inputs.first_shapes, **shapes}
    if not shapes and names:  # where the original runs, as load(rewrite=[...]) verifies
        shapes = rewrite_traced_shapes(registry, info, names)
    fitted = fit(info, backend, names=names, registry=registry, shapes=shapes or None,
                 inputs=inputs, ranges=ranges or None)
    written = fitted.status in PROVEN and fitted.info is not None
    if written:
        assert fitted.info is not None and fitted.info.path is not None
        copy_atomic(fitted.info.path, target)
    if as_json:
        click.echo(json.dumps(fitted.as_dict() | {
            "written": str(out) if written else None,
            "shapes": {k: list(v) for k, v in shapes.items()}}, indent=1))
    else:
        for name, change in fitted.changes:
            click.echo(f"{name}: {change}")
        at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
        click.echo(f"{backend}: {fitted.describe()}" + (f" at {at}" if at else ""))
        if written:
            click.echo(f"wrote {out}")
    if not written:
        raise UnirtError(f"{out} not written: {fitted.describe()}")
