"""Resize whose sizes (or scales) are computed at run time, given constant scales.

Exporters write ``F.interpolate(x, scale_factor=2)`` and upsample-to-the-skip-connection as
Shape->Gather->Mul->Cast->Concat chains feeding Resize's ``sizes``; ncnn and OpenCV want the
Resize factor as a constant. When the shapes are fixed (declared static, or given in
``context.input_shapes``) the chain has one value. It is evaluated here with onnx's reference
evaluator on the chain alone (each Shape replaced by the inferred shape it reads, so no data
tensor is computed), and written back as constant ``scales`` when those reproduce the sizes
exactly in float32, else as constant ``sizes``. Inputs whose dynamic dims were pinned to get
there are pinned in the model too: the constant holds for those sizes only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Dim,
    Names,
    add_constant,
    constant,
    consumers,
    dims_of,
    drop_unused,
    opset_of,
    pinned_inputs,
    producers,
    reinfer,
    set_input_dims,
    shapes,
    splice,
    used_by_subgraphs,
)

if TYPE_CHECKING:  # pragma: no cover - registering the built-ins imports no onnx
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

#: Ops a sizes/scales chain may contain: shape arithmetic, nothing that reads tensor data.
_CHAIN_OPS = frozenset({
    "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Mul", "Div", "Add", "Sub",
    "Floor", "Ceil", "Round", "Slice", "Constant", "Identity", "Reshape", "ConstantOfShape",
    "Expand", "Max", "Min", "Sqrt", "Neg",
})


def _evaluate(model: onnx.ModelProto, name: str,
              dims: dict[str, list[Dim]]) -> np.ndarray | None:
    """The value of ``name`` when it depends only on constants and on the (known) shapes of
    other tensors; None otherwise."""
    import numpy as np
    import onnx
    from onnx import helper

    graph = model.graph
    prod = producers(graph)
    inits = {i.name: i for i in graph.initializer}
    graph_inputs = {i.name for i in graph.input}
    nodes: list[onnx.NodeProto] = []
    needed: list[onnx.TensorProto] = []
    seen: set[str] = set()
    stack = [name]
    while stack:
        cur = stack.pop()
        if not cur or cur in seen:
            continue
        seen.add(cur)
        if cur in inits and cur not in graph_inputs:
            needed.append(inits[cur])
            continue
        node = prod.get(cur)
        if node is None or node.op_type not in _CHAIN_OPS:
            return None
        if node.op_type == "Shape":
            shape = dims.get(node.input[0])
            if shape is None or not all(isinstance(d, int) for d in shape):
                return None
            attrs = {a.name: a.i for a in node.attribute}
            value = np.array(shape, np.int64)[attrs.get("start", 0):attrs.get("end")]
            nodes.append(helper.make_node("Constant", [], [cur],
                                          value=onnx.numpy_helper.from_array(value)))
            continue
        nodes.append(node)
        stack.extend(node.input)
    order = {n.output[0]: k for k, n in enumerate(graph.node) if n.output}
    nodes.sort(key=lambda n: order.get(n.output[0], -1) if n.op_type != "Constant" else -1)
    sub = helper.make_graph(nodes, "chain", [], [onnx.ValueInfoProto(name=name)], needed)
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
    try:
        from onnx.reference import ReferenceEvaluator

        outs: Any = ReferenceEvaluator(sub_model).run(None, {})
    except Exception as exc:
        log.debug("resize_constant: cannot evaluate %s: %s", name, exc)
        return None
    return np.asarray(outs[0])


def _resize_inputs(node: onnx.NodeProto, opset: int) -> tuple[str, str] | None:
    """(scales, sizes) input names of a Resize/Upsample ('' for absent); None: not handled."""
    ins = list(node.input) + [""] * 4
    if node.op_type == "Upsample":
        return (ins[1], "") if opset >= 9 else None
    if opset < 11:
        return ins[1], ""
    return ins[2], ins[3]


class ResizeConstant(Rewrite):
    name = "resize_constant"
    summary = "Resize/Upsample sizes or scales computed at run time as constants (fixed shapes)"
    ops = frozenset({"Resize", "Upsample"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        import numpy as np

        graph = model.graph
        if not any(n.op_type in self.ops for n in graph.node):
            return []
        opset = opset_of(model)
        pins = {n: s for n, s in pinned_inputs(model, context.input_shapes).items()
                if n in context.input_shapes}
        dims = shapes(model, pins)
        changes: list[Change] = []
        edits: list[tuple[int, int, np.ndarray, bool]] = []
        for k, node in enumerate(graph.node):
            if node.op_type not in self.ops:
                continue
            found = self._constant_for(model, node, opset, dims)
            if found is not None:
                edits.append((k, *found))
        if not edits:
            return []
        old_inputs: list[str] = []
        fresh = Names(graph)
        for k, slot, value, as_scales in edits:
            node = graph.node[k]
            label = node.name or node.output[0]
            old = node.input[slot]
            old_inputs.append(old)
            const = add_constant(graph, fresh, f"{label}/{'scales' if as_scales else 'sizes'}",
                                 value)
            ins = list(node.input) + [""] * (slot + 1 - len(node.input))
            if node.op_type == "Resize" and opset >= 11:
                ins[2:4] = ([const, ""] if as_scales else ["", const])
                if opset < 13 and not as_scales:  # opset 11/12: scales must be an empty tensor
                    ins[2] = add_constant(graph, fresh, f"{label}/no_scales", [], np.float32)
                ins = ins[:3] if as_scales else ins[:4]
            else:
                ins[slot] = const
            del node.input[:]
            node.input.extend(ins)
            what = (f"{'sizes' if slot == 3 else 'scales'} computed at run time ('{old}') -> "
                    f"constant {'scales' if as_scales else 'sizes'} "
                    f"{[float(v) if as_scales else int(v) for v in value.tolist()]}")
            changes.append(Change(label, node.op_type, what))
        self._prune(graph, old_inputs)
        dynamic = {n: s for n, s in pins.items()
                   if any(not isinstance(d, int) for d in dims_of(
                       next(v for v in graph.input if v.name == n)) or [])}
        if dynamic:
            set_input_dims(model, dynamic)
            reinfer(model)
            changes += [Change(n, "input", f"pinned to {s}: the constant holds for these sizes")
                        for n, s in dynamic.items()]
        return changes

    def _constant_for(self, model: onnx.ModelProto, node: onnx.NodeProto, opset: int,
                      dims: dict[str, list[Dim]]) -> tuple[int, np.ndarray, bool] | None:
        """(input slot replaced, constant, whether it is scales) for one node; None: leave it."""
        import numpy as np
        from onnx import helper

        graph = model.graph
        found = _resize_inputs(node, opset)
        x_dims = dims.get(node.input[0])
        if found is None or x_dims is None or not all(isinstance(d, int) for d in x_dims):
            return None
        scales, sizes = found
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
            return None
        rank = len(x_dims)
        axes: Sequence[int] = [a % rank for a in attrs.get("axes") or range(rank)]
        in_sizes = np.array([x_dims[a] for a in axes], np.int64)
        if sizes:
            if constant(graph, sizes) is not None:
                return None
            value = _evaluate(model, sizes, dims)
            if value is None or value.shape != in_sizes.shape:
                return None
            out = value.astype(np.int64)
            ratio = (out / in_sizes).astype(np.float32)
            # Scales only where in * scale is the size exactly, in any precision an engine
            # may multiply in (7/5 rounds to 6.99999... in float64): ratios such as 2 or 0.5.
            exact = bool(np.all(in_sizes.astype(np.float64) * ratio.astype(np.float64) == out))
            return (3, ratio, True) if exact else (3, out, False)
        if scales:
            if constant(graph, scales) is not None:
                return None
            value = _evaluate(model, scales, dims)
            if value is None or value.shape != in_sizes.shape:
                return None
            slot = 1 if node.op_type == "Upsample" or opset < 11 else 2
            return slot, value.astype(np.float32), True
        return None

    @staticmethod
    def _prune(graph: onnx.GraphProto, roots: list[str]) -> None:
        """Remove the nodes that only computed the replaced inputs (now read by nothing)."""
        outputs = {o.name for o in graph.output}
        frontier = set(roots)
        while frontier:
            users = consumers(graph)
            sub = used_by_subgraphs(graph)
            prod = producers(graph)
            dead = [prod[n] for n in frontier if n in prod and n not in outputs
                    and all(o not in users and o not in sub and o not in outputs
                            for o in prod[n].output)]
            if not dead:
                break
            frontier = {i for d in dead for i in d.input if i}
            inits = [i for i in frontier if i not in prod]
            splice(graph, dead)
            drop_unused(graph, inits)
