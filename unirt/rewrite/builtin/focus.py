"""YOLOv5's "Focus" layer as Reshape/Transpose instead of four strided Slices.

Focus is ``cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)``:
space-to-depth written as strided slicing. ncnn has no strided slice (pnnx turns it into
``Tensor.slice``, which ncnn does not implement) and OpenCV DNN has failed on it, while both run
Reshape and Transpose. The same rearrangement is two rank-4 Reshape/Transpose steps, one per
spatial axis; the axis split first is the one whose offset varies fastest across the Concat
inputs, so YOLOv5's channel order (row offset fastest) comes out exactly. Rank 4 throughout,
because ncnn's blobs have at most four dims. Needs C, H and W known (declared, or pinned by the
caller's input shapes) and H, W even; the batch stays as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Dim,
    Names,
    add_constant,
    constant,
    consumers,
    drop_unused,
    producers,
    shapes,
    splice,
)

if TYPE_CHECKING:  # pragma: no cover - registering the built-ins imports no onnx
    import onnx

log = logging.getLogger(__name__)

H, W = 2, 3  # the spatial axes of an NCHW tensor


@dataclass(frozen=True)
class _Chain:
    """One Concat input: the Slices (outermost last) that take it from ``source``."""

    source: str
    slices: tuple[onnx.NodeProto, ...]
    offset: tuple[int, int]  # (row, column) offset of the stride-2 slices


def _slice_chain(graph: onnx.GraphProto, name: str, dims: dict[str, list[Dim]],
                 prod: dict[str, onnx.NodeProto],
                 users: dict[str, list[onnx.NodeProto]]) -> _Chain | None:
    """The (at most two) Slices that produce ``name``, as stride-2 slices of H and W."""
    import numpy as np

    offsets: dict[int, int] = {}
    slices: list[onnx.NodeProto] = []
    current = name
    while current in prod and prod[current].op_type == "Slice" and len(slices) < 2:
        node = prod[current]
        if len(node.input) < 5:
            return None
        src = node.input[0]
        src_dims = dims.get(src)
        if src_dims is None or len(src_dims) != 4:
            return None
        values = [constant(graph, n) for n in node.input[1:5]]
        if any(v is None for v in values):
            return None
        starts, ends, axes, steps = (np.asarray(v).reshape(-1).tolist() for v in values)
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = axis + 4 if axis < 0 else axis
            size = src_dims[axis]
            if axis in (H, W) and step == 2 and start in (0, 1) and axis not in offsets:
                if not isinstance(size, int) or end < size:
                    return None
                offsets[axis] = int(start)
            elif not (start == 0 and step == 1 and isinstance(size, int) and end >= size):
                return None  # anything but a no-op on the other axes
        slices.append(node)
        current = src
    if set(offsets) != {H, W}:
        return None
    inner = slices[1:]  # the Slice outputs that only feed the next Slice of the chain
    if any(len(users.get(s.output[0], [])) != 1 for s in inner):
        return None
    return _Chain(current, tuple(reversed(slices)), (offsets[H], offsets[W]))


def _space_to_depth(graph: onnx.GraphProto, source: str, out: str, dims: list[int],
                    first: int, prefix: str) -> list[onnx.NodeProto]:
    """Reshape/Transpose steps: split ``first`` axis, then the other, each offset into
    channels ahead of what is there (so ``first``'s offset ends up varying fastest)."""
    import numpy as np
    from onnx import helper

    n, c, h, w = dims
    batch = n if n > 0 else -1
    second = W if first == H else H

    def shape_for(axis: int, ch: int, hh: int, ww: int) -> tuple[list[int], list[int]]:
        if axis == H:  # [N, C*H/2, 2, W] -> [N, 2, C*H/2, W]
            return [batch, ch * hh // 2, 2, ww], [0, 2, 1, 3]
        return [batch, ch * hh, ww // 2, 2], [0, 3, 1, 2]  # -> [N, 2, C*H, W/2]

    s1, p1 = shape_for(first, c, h, w)
    c2, h2, w2 = 2 * c, (h // 2 if first == H else h), (w // 2 if first == W else w)
    s2, p2 = shape_for(second, c2, h2, w2)
    final = [batch, 4 * c, h // 2, w // 2]
    fresh = Names(graph)
    steps = [fresh(f"{prefix}/focus_{k}") for k in range(4)]
    shape1, shape2, shape3 = (add_constant(graph, fresh, f"{prefix}/focus_shape{k + 1}", s,
                                           np.int64) for k, s in enumerate((s1, s2, final)))
    return [
        helper.make_node("Reshape", [source, shape1], [steps[0]], name=steps[0]),
        helper.make_node("Transpose", [steps[0]], [steps[1]], perm=p1, name=steps[1]),
        helper.make_node("Reshape", [steps[1], shape2], [steps[2]], name=steps[2]),
        helper.make_node("Transpose", [steps[2]], [steps[3]], perm=p2, name=steps[3]),
        helper.make_node("Reshape", [steps[3], shape3], [out],
                         name=fresh(f"{prefix}/focus_out")),
    ]


class FocusSlice(Rewrite):
    name = "focus_slice"
    summary = ("YOLOv5 Focus (four stride-2 Slices + Concat on channels) as "
               "Reshape/Transpose/Reshape space-to-depth")
    ops = frozenset({"Slice"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        graph = model.graph
        if not any(n.op_type == "Concat" for n in graph.node):
            return []
        dims = shapes(model, context.input_shapes)
        changes: list[Change] = []
        for out in [n.output[0] for n in graph.node if n.op_type == "Concat" and n.output]:
            concat = producers(graph)[out]  # fresh: an earlier splice rebuilt the node list
            change = self._rewrite_one(graph, concat, dims)
            if change is not None:
                changes.append(change)
        return changes

    def _rewrite_one(self, graph: onnx.GraphProto, concat: onnx.NodeProto,
                     dims: dict[str, list[Dim]]) -> Change | None:
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        if len(concat.input) != 4 or axis not in (1, -3):
            return None
        prod, users = producers(graph), consumers(graph)
        outputs = {o.name for o in graph.output}
        chains = []
        for name in concat.input:
            chain = _slice_chain(graph, name, dims, prod, users)
            if chain is None or name in outputs or len(users.get(name, [])) != 1:
                return None
            chains.append(chain)
        source = chains[0].source
        src = dims.get(source)
        order = [ch.offset for ch in chains]
        if any(ch.source != source for ch in chains) or src is None:
            return None
        c, h, w = src[1:]
        if not (isinstance(c, int) and isinstance(h, int) and isinstance(w, int)):
            return None
        if min(c, h, w) <= 0 or h % 2 or w % 2:
            return None
        if order == [(0, 0), (1, 0), (0, 1), (1, 1)]:
            first = H  # YOLOv5: the row offset varies fastest
        elif order == [(0, 0), (0, 1), (1, 0), (1, 1)]:
            first = W
        else:
            return None
        n = src[0] if isinstance(src[0], int) else -1
        prefix = concat.name or concat.output[0]
        new = _space_to_depth(graph, source, concat.output[0], [n, c, h, w], first, prefix)
        removed = [s for ch in chains for s in ch.slices]
        consts = [i for s in removed for i in s.input[1:]]
        names = ", ".join(s.name or s.output[0] for s in removed)
        splice(graph, [*removed, concat], new, at=concat)
        drop_unused(graph, consts)
        return Change(prefix, "Concat",
                      f"Focus: stride-2 Slices of '{source}' ({names}) concatenated on channels "
                      f"-> Reshape/Transpose/Reshape/Transpose/Reshape (space-to-depth, "
                      f"{'YOLOv5' if first == H else 'column-fastest'} channel order)")
