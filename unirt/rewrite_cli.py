"""``unirt rewrite``: write a model fitted to an engine, for users who ship the file without
unirt. Nothing is written unless the engine's numbers on the rewritten model were checked (run
in a child and compared with the reference on the original: verified; or, when nothing runs the
original, with the reference on the rewritten model: ran right, the rewrite itself unproven, and
said so): a repair unirt cannot vouch for is not one.
"""

from __future__ import annotations

import json

import click

from .cli_options import optional_model_argument, writable_file
from .errors import UnirtError


@click.command("rewrite")
@optional_model_argument
@click.option("--for", "backend", default=None, metavar="BACKEND",
              help="The engine the model is fitted to (verified on it).")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default=None,
              callback=writable_file,
              help="Where to write the rewritten model.")
@click.option("--only", "only", multiple=True, metavar="NAME",
              help="Only this rewrite (repeatable; opt-in rewrites must be named).")
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input to verify at (sets its dynamic dims).")
@click.option("--list", "list_only", is_flag=True, help="List the registered rewrites.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def rewrite_command(model: str | None, backend: str | None, out: str | None,
                    only: tuple[str, ...], shape_specs: tuple[str, ...], list_only: bool,
                    as_json: bool) -> None:
    """Rewrite MODEL so that BACKEND runs it, verify it, and write it to OUT."""
    from .plugins import get_registry

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
    from .files import check_writable, copy_atomic
    from .inputs import parse_assignments, parse_shape
    from .model import read_model
    from .rewrite.fit import PROVEN, check_names, fit, traced_shapes

    target = check_writable(out, "--out", inputs=[model])  # before any work
    info = read_model(model)
    registry.backend(backend)
    names = check_names(registry, list(only)) if only else None
    shapes = {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}
    if not shapes and names:  # where the original runs, as load(rewrite=[...]) verifies
        shapes = traced_shapes(registry, info, names)
    fitted = fit(info, backend, names=names, registry=registry, shapes=shapes or None)
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
