"""``unirt info``: a model's inputs, outputs and opsets, read without running it."""

from __future__ import annotations

from typing import Any

import click

from unirt.cli.options import (
    model_argument,
)
from unirt.cli.output import console, dims_text, print_json, table


@click.command()
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
        print_json(data)
        return
    con = console()
    opsets = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in m.opsets.items())
    con.print(f"{m.name}: IR {m.ir_version}, opsets {opsets}, "
              f"{len(m.nodes)} nodes, {m.size_bytes / 1e6:.2f} MB"
              + (f", producer {m.producer}" if m.producer else ""))
    con.print(table("Inputs", ["name", "dtype", "shape"],
                     [[t.name, t.dtype, dims_text(t.shape)] for t in m.inputs]))
    con.print(table("Outputs", ["name", "dtype", "shape"],
                     [[t.name, t.dtype, dims_text(t.shape)] for t in m.outputs]))
    con.print("operators: " + ", ".join(f"{op} x{n}" for op, n in m.op_counts.most_common()))


def _tensor_json(t: Any) -> dict[str, Any]:
    return {"name": t.name, "dtype": None if t.dtype is None else str(t.dtype),
            "shape": None if t.shape is None else list(t.shape)}
