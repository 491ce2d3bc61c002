"""A global pool over more than two spatial axes as the reduction it is: GlobalAveragePool ->
ReduceMean, GlobalMaxPool -> ReduceMax, over every spatial axis, keepdims=1.

OpenCV DNN fails a 3-D GlobalAveragePool ("expected 'addedDims <= pads_begin.size()'": the
adaptive pooling of a C3D-style video model) and computes the same reduction written as
ReduceMean (measured here, OpenCV 4.x).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Names,
    add_constant,
    nodes_of,
    opset_of,
    replace_each,
    value_types,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

REDUCE = {"GlobalAveragePool": "ReduceMean", "GlobalMaxPool": "ReduceMax"}


class GlobalPool(Rewrite):
    name = "global_pool"
    summary = "3-D (or higher) GlobalAveragePool/GlobalMaxPool as ReduceMean/ReduceMax"
    ops = frozenset(REDUCE)

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        from onnx import helper

        types = value_types(model)
        found: list[tuple[int, int]] = []
        for i, node in nodes_of(model.graph, REDUCE):
            dims = types.get(node.input[0], (0, None))[1]
            if dims is not None and len(dims) > 4:
                found.append((i, len(dims)))
        def fix(node: onnx.NodeProto, label: str, names: Names,
                rank: int) -> tuple[list[onnx.NodeProto], str]:
            op = REDUCE[node.op_type]
            axes = list(range(2, rank))
            # ReduceMean and ReduceMax take their axes as an input from opset 18.
            if opset_of(model) >= 18:
                axes_name = add_constant(model.graph, names, f"{label}_axes", axes, "int64")
                new = helper.make_node(op, [node.input[0], axes_name], [node.output[0]],
                                       name=node.name or None, keepdims=1)
            else:
                new = helper.make_node(op, [node.input[0]], [node.output[0]],
                                       name=node.name or None, axes=axes, keepdims=1)
            return [new], f"over {rank - 2} spatial axes: {op} over axes {axes}, keepdims=1"

        return replace_each(model, found, fix)
