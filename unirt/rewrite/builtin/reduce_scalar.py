"""A reduction to a scalar (keepdims=0 over every axis) as keepdims=1, then Reshape to ``[]``.

OpenCV DNN has no rank-0 blob and other engines mishandle reductions that drop every axis; the
same value kept as a ``[1, ..., 1]`` tensor and reshaped at the end is computed the common way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Names,
    add_constant,
    attribute,
    constant,
    nodes_of,
    replace_each,
    set_attribute,
    value_types,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                        "ReduceSumSquare"})


def _all_axes(model: onnx.ModelProto, node: onnx.NodeProto, rank: int | None) -> bool:
    """Whether ``node`` reduces every axis of its input."""
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        value = constant(model.graph, node.input[1])
        if value is None:
            return False  # axes computed at run time: unknown
        axes = [int(a) for a in value.reshape(-1)]
    if not axes:  # absent or empty: every axis, unless told to do nothing
        return not attribute(node, "noop_with_empty_axes", 0)
    if rank is None:
        return False
    return sorted(a % rank for a in axes) == list(range(rank))


class ReduceScalar(Rewrite):
    name = "reduce_scalar"
    summary = "a reduction to a scalar (keepdims=0, every axis): keepdims=1, then Reshape to []"
    ops = REDUCTIONS

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        from onnx import helper

        types = value_types(model)
        found: list[tuple[int, None]] = []
        for i, node in nodes_of(model.graph, REDUCTIONS):
            if attribute(node, "keepdims", 1) != 0:
                continue
            dims = types.get(node.input[0], (0, None))[1]
            if _all_axes(model, node, None if dims is None else len(dims)):
                if dims is not None and len(dims) == 0:
                    continue  # already a scalar in, nothing dropped
                found.append((i, None))
        def fix(node: onnx.NodeProto, label: str, names: Names,
                _: None) -> tuple[list[onnx.NodeProto], str]:
            kept = names(f"{node.output[0]}_kept")
            reduced = helper.make_node(node.op_type, list(node.input), [kept],
                                       name=node.name or None)
            reduced.attribute.extend(node.attribute)
            set_attribute(reduced, "keepdims", 1)
            shape = add_constant(model.graph, names, f"{label}_scalar_shape", [], "int64")
            reshape = helper.make_node("Reshape", [kept, shape], [node.output[0]],
                                       name=names(f"{label}_to_scalar"))
            return [reduced, reshape], "reduced to a scalar: keepdims=1, then Reshape to []"

        return replace_each(model, found, fix)
