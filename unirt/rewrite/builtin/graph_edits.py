"""Small reads and edits of an ONNX graph that several built-in rewrites share.

The rewrites here match patterns of a few nodes (four Slices and a Concat, a Resize fed by a
Shape chain, a Reshape with a constant shape), so they read constants and shapes and splice
nodes directly; folding and whole-graph simplification is left to a library (see ``fold``).
Everything here reads only the top-level graph: subgraphs (If/Loop bodies) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

#: A dim as read from a model: an int, a name ("T") or None when neither is known.
Dim = int | str | None


def constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer (not also a graph input, which a caller
    may override) or the output of a ``Constant`` node with a ``value`` tensor; else None."""
    if not name or name in {i.name for i in graph.input}:
        return None
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
            return None
    return None


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """Each tensor name to the node that writes it."""
    return {out: node for node in graph.node for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Each tensor name to the top-level nodes that read it (a node reading twice counts once)."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            if name:
                users.setdefault(name, []).append(node)
    return users


def used_by_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Names read anywhere inside If/Loop/Scan bodies (outer-scope references included)."""
    names: set[str] = set()

    def walk(g: onnx.GraphProto) -> None:
        for node in g.node:
            names.update(node.input)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                walk(attr.g)
            for sub in attr.graphs:
                walk(sub)
    return names


def fresh_name(graph: onnx.GraphProto, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``... whichever no node, tensor or initializer uses."""
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
    taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def add_constant(graph: onnx.GraphProto, base: str, value: np.ndarray) -> str:
    """Add ``value`` as an initializer under a fresh name derived from ``base``; return it."""
    name = fresh_name(graph, base)
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def drop_unused(graph: onnx.GraphProto, names: Iterable[str]) -> None:
    """Remove the initializers and Constant nodes among ``names`` that nothing reads any more
    (no node, subgraph or graph output), once the nodes that read them were removed."""
    read = set(consumers(graph)) | used_by_subgraphs(graph) | {o.name for o in graph.output}
    dead = {n for n in names if n and n not in read}
    keep_inits = [i for i in graph.initializer if i.name not in dead]
    if len(keep_inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep_inits)
    keep_nodes = [n for n in graph.node
                  if not (n.op_type == "Constant" and n.output and n.output[0] in dead)]
    if len(keep_nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep_nodes)


def dims_of(vi: onnx.ValueInfoProto) -> list[Dim] | None:
    """The dims of a tensor value info, or None when it has no shape."""
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    out: list[Dim] = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def pinned_inputs(model: onnx.ModelProto,
                  input_shapes: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The inputs whose every dim is fixed: declared static, or given in ``input_shapes`` (a
    given shape of the wrong rank is ignored: pinning is for the user's sizes, not a guess)."""
    init_names = {i.name for i in model.graph.initializer}
    fixed: dict[str, list[int]] = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        dims = dims_of(vi)
        given = input_shapes.get(vi.name)
        if (given is not None and dims is not None and len(given) == len(dims)
                and all(isinstance(d, str) or d is None or d == g for d, g in zip(dims, given))):
            fixed[vi.name] = [int(g) for g in given]
            continue
        if dims is not None and all(isinstance(d, int) for d in dims):
            fixed[vi.name] = [int(d) for d in dims]  # type: ignore[arg-type]
    return fixed


def set_input_dims(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> None:
    """Write ``shapes`` into the declared input dims (dim_value, dropping dim_param)."""
    for vi in model.graph.input:
        if vi.name not in shapes:
            continue
        for d, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
            d.Clear()
            d.dim_value = int(size)


def shapes(model: onnx.ModelProto,
           input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, list[Dim]]:
    """Every tensor's dims as ONNX shape inference sees them, with ``input_shapes`` applied to a
    copy first (the model itself is not touched). Inference that fails leaves the declared dims."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    if input_shapes:
        set_input_dims(work, pinned_inputs(work, input_shapes))
    del work.graph.value_info[:]
    try:
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception as exc:  # a model inference cannot read: use what it declares
        log.debug("shape inference failed: %s", exc)
    out: dict[str, list[Dim]] = {}
    for vi in [*work.graph.input, *work.graph.value_info, *work.graph.output]:
        dims = dims_of(vi)
        if dims is not None:
            out[vi.name] = dims
    for init in work.graph.initializer:
        out[init.name] = [int(d) for d in init.dims]
    return out


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (1 when it imports none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def splice(graph: onnx.GraphProto, remove: Sequence[onnx.NodeProto],
           new: Sequence[onnx.NodeProto], at: onnx.NodeProto) -> None:
    """Remove the nodes ``remove`` and put ``new`` where ``at`` (one of them) stood, which keeps
    the node list in topological order when ``new`` reads only what ``at``'s inputs could.
    Nodes are told apart by their first output (unique in a valid graph)."""
    gone = {n.output[0] for n in remove}
    anchor = at.output[0]
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        key = node.output[0] if node.output else None
        if key == anchor:
            nodes.extend(new)
        if key not in gone:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            nodes.append(copy)
    del graph.node[:]
    graph.node.extend(nodes)


def reinfer(model: onnx.ModelProto, relax_outputs: bool = False) -> None:
    """Replace the model's value_info, and the output dims inference can now tell, with what shape
    inference finds; leave them as they were when inference fails. ``relax_outputs``: static
    output dims may become dynamic too (un-baking a traced size frees them)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    del work.graph.value_info[:]
    for out in work.graph.output:
        if out.type.HasField("tensor_type"):
            for d in out.type.tensor_type.shape.dim:
                if relax_outputs or not d.HasField("dim_value"):
                    d.Clear()  # let inference fill what the old symbol stood for
    try:
        work = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception as exc:
        log.info("shape inference failed after the edit, value_info left as it was: %s", exc)
        return
    del model.graph.value_info[:]
    model.graph.value_info.extend(work.graph.value_info)
    for old, new in zip(model.graph.output, work.graph.output):
        if not old.type.HasField("tensor_type") or not new.type.HasField("tensor_type"):
            continue
        for d_old, d_new in zip(old.type.tensor_type.shape.dim, new.type.tensor_type.shape.dim):
            if d_new.HasField("dim_value"):
                if not d_old.HasField("dim_value") or relax_outputs:
                    d_old.Clear()
                    d_old.dim_value = d_new.dim_value
            elif relax_outputs and d_old.HasField("dim_value"):
                d_old.Clear()
                if d_new.dim_param:
                    d_old.dim_param = d_new.dim_param
