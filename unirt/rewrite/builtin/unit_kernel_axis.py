"""3-D pooling or convolution whose kernel is 1 (stride 1, no padding) on one spatial axis, as
the 2-D op over a batch that folds that axis in: Transpose/Reshape -> 2-D op -> Reshape/Transpose.

Video models (C3D, R(2+1)D) use ``(1, k, k)`` kernels; a kernel of one on an axis with stride one
and no padding never mixes values along it, so the 3-D op is the 2-D op applied to every slice.
Engines whose 3-D kernels are partial (OpenCV DNN) run the 2-D form. The channel and spatial
sizes must be known (the Reshapes fold them); the batch may be dynamic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Names,
    add_constant,
    attribute,
    constant,
    nodes_of,
    replace_each,
    static_dims,
    value_types,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

OPS = frozenset({"Conv", "MaxPool", "AveragePool"})


def _unit_axis(node: onnx.NodeProto, kernel: list[int]) -> int | None:
    """The first spatial axis the node never mixes along (kernel 1, stride 1, no padding)."""
    strides = attribute(node, "strides") or [1] * len(kernel)
    pads = attribute(node, "pads") or [0] * (2 * len(kernel))
    for j, k in enumerate(kernel):
        if k == 1 and strides[j] == 1 and pads[j] == 0 and pads[j + len(kernel)] == 0:
            return j
    return None


def _drop(values: Any, j: int, halves: int = 1) -> list[Any]:
    """``values`` without spatial axis ``j`` (pads: in both halves)."""
    values = list(values)
    n = len(values) // halves
    return [v for h in range(halves) for i, v in enumerate(values[h * n:(h + 1) * n]) if i != j]


class UnitKernelAxis(Rewrite):
    name = "unit_kernel_axis"
    summary = ("3-D Conv/MaxPool/AveragePool with a kernel of 1 (stride 1, no padding) on one "
               "axis: the 2-D op over that axis folded into the batch")
    ops = OPS

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        types = value_types(model)
        found: list[tuple[int, tuple[int, list[int], list[int]]]] = []
        for i, node in nodes_of(model.graph, OPS):
            if len([o for o in node.output if o]) != 1:
                continue  # MaxPool's indices would index the folded tensor
            weight = (constant(model.graph, node.input[1])
                      if node.op_type == "Conv" and len(node.input) > 1 else None)
            if node.op_type == "Conv" and weight is None:
                continue
            x_dims = types.get(node.input[0], (0, None))[1]
            y_dims = types.get(node.output[0], (0, None))[1]
            if x_dims is None or y_dims is None or len(x_dims) != 5 or len(y_dims) != 5:
                continue
            x_static, y_static = static_dims(x_dims[1:]), static_dims(y_dims[1:])
            kernel = attribute(node, "kernel_shape")
            if kernel is None and weight is not None:
                kernel = list(weight.shape[2:])
            if x_static is None or y_static is None or kernel is None or len(kernel) != 3:
                continue
            j = _unit_axis(node, list(kernel))
            if j is not None:
                found.append((i, (j, x_static, y_static)))
        return replace_each(model, found,
                            lambda node, label, names, f: self._fold(model, node, label, names, *f))

    def _fold(self, model: onnx.ModelProto, node: onnx.NodeProto, label: str, names: Names,
              j: int, x_dims: list[int], y_dims: list[int]) -> tuple[list[onnx.NodeProto], str]:
        """``node`` in its 2-D form over spatial axis ``j``; dims without the batch."""
        from onnx import helper

        others = [k for k in range(3) if k != j]
        perm = [0, 2 + j, 1] + [2 + k for k in others]
        back = [0, 2] + [1 if k == j else 3 + others.index(k) for k in range(3)]
        c, size = x_dims[0], x_dims[1 + j]
        m, out_spatial = y_dims[0], [y_dims[1 + k] for k in others]
        in_spatial = [x_dims[1 + k] for k in others]
        moved, flat, flat_out, unflat = (names(f"{label}_{w}") for w in
                                         ("moved", "folded", "folded_out", "unfolded"))
        shape_in = add_constant(model.graph, names, f"{label}_fold_shape", [-1, c, *in_spatial],
                                "int64")
        shape_out = add_constant(model.graph, names, f"{label}_unfold_shape",
                                 [-1, size, m, *out_spatial], "int64")
        inputs = [flat]
        if node.op_type == "Conv":
            weight = constant(model.graph, node.input[1])
            assert weight is not None  # apply() kept only Convs with a constant weight
            inputs.append(add_constant(model.graph, names, f"{node.input[1]}_2d",
                                       weight.squeeze(axis=2 + j)))
            inputs += list(node.input[2:])
        op2d = helper.make_node(node.op_type, inputs, [flat_out], name=node.name or None)
        for a in node.attribute:
            value = helper.get_attribute_value(a)
            if a.name in ("kernel_shape", "strides", "dilations"):
                value = _drop(value, j)
            elif a.name == "pads":
                value = _drop(value, j, halves=2)
            op2d.attribute.append(helper.make_attribute(a.name, value))
        new = [
            helper.make_node("Transpose", [node.input[0]], [moved], perm=perm,
                             name=names(f"{label}_to_2d")),
            helper.make_node("Reshape", [moved, shape_in], [flat], name=names(f"{label}_fold")),
            op2d,
            helper.make_node("Reshape", [flat_out, shape_out], [unflat],
                             name=names(f"{label}_unfold")),
            helper.make_node("Transpose", [unflat], [node.output[0]], perm=back,
                             name=names(f"{label}_from_2d")),
        ]
        axis = "DHW"[j]
        return new, (f"kernel 1 on axis {axis}: the 2-D {node.op_type} with {axis} folded into "
                     "the batch (Transpose/Reshape around it)")
