"""Pooling whose kernel has one dim fewer than its input's spatial rank: add the batch axis.

PyTorch pools an unbatched ``(C, D, H, W)`` tensor with ``MaxPool3d`` and exports a 3-D kernel on
a rank-4 input, which ONNX reads as batched 2-D pooling: ONNX Runtime, OpenVINO, OpenCV and pnnx
all refuse it. PyTorch's meaning is pooling the tensor with a batch of one, so the node is
wrapped: Unsqueeze axis 0 -> pool -> Squeeze axis 0 (the indices output of MaxPool too: with a
batch of one its flat indices are those of the unbatched tensor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Names,
    attribute,
    nodes_of,
    replace_each,
    squeeze,
    unsqueeze,
    value_types,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx

POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})


class PoolRank(Rewrite):
    name = "pool_rank"
    summary = ("pooling with a kernel one dim short of its input's spatial rank (PyTorch "
               "MaxPool3d on a 4-D tensor): wrapped in Unsqueeze/pool/Squeeze")
    ops = POOLS

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        from onnx import helper

        types = value_types(model)
        found: list[tuple[int, int]] = []
        for i, node in nodes_of(model.graph, POOLS):
            kernel = attribute(node, "kernel_shape")
            dims = types.get(node.input[0], (0, None))[1] if node.input else None
            if kernel is None or dims is None or len(kernel) != len(dims) - 1:
                continue
            found.append((i, len(dims)))
        def fix(node: onnx.NodeProto, label: str, names: Names,
                rank: int) -> tuple[list[onnx.NodeProto], str]:
            batched = names(f"{node.input[0]}_batched")
            pooled = [names(f"{o}_batched") if o else "" for o in node.output]
            pool = helper.make_node(node.op_type, [batched], pooled, name=node.name or None,
                                    domain=node.domain)
            pool.attribute.extend(node.attribute)
            new = [unsqueeze(model, names, node.input[0], [0], batched, names(f"{label}_unsq")),
                   pool]
            new += [squeeze(model, names, p, [0], o, names(f"{label}_sq_{k}"))
                    for k, (p, o) in enumerate(zip(pooled, node.output)) if o]
            kernel = attribute(node, "kernel_shape")
            return new, (f"kernel {list(kernel)} on a rank-{rank} input: wrapped in "
                         f"Unsqueeze/{node.op_type}/Squeeze")

        return replace_each(model, found, fix)
