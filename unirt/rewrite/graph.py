"""Small reads and edits of an ONNX graph that the built-in rewrites share: constants, shapes and
dtypes, fresh names, and putting a few nodes where others were.

The built-ins match patterns of a few nodes (a pool of the wrong kernel rank, four Slices and a
Concat, a Resize fed by a Shape chain) and edit ``onnx.ModelProto`` with ``onnx.helper``; folding
and whole-graph simplification are left to a library (see ``builtin/fold.py``, and docs/rewrites.md
for why not a pattern library). Everything here reads only the top-level graph: subgraphs (If/Loop
bodies) are left alone. onnx and numpy are imported inside the functions, so that registering the
built-ins costs no model library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from unirt.plugin.rewrite import Change

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

#: A dim as read from a model: an int, a name ("T") or None when neither is known.
Dim = int | str | None

#: What a rewrite found out about one node it matched, handed back to its fix.
Found = TypeVar("Found")


# -- reading -------------------------------------------------------------------------------------
def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (its node forms depend on it; 1 when none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer (not also a graph input, which a caller
    may override) or the output of a ``Constant`` node with a ``value`` tensor; else None."""
    from onnx import numpy_helper

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


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute ``name`` of ``node``, ``default`` when it has none."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def nodes_of(graph: onnx.GraphProto, ops: Iterable[str]) -> list[tuple[int, onnx.NodeProto]]:
    """``(index, node)`` for each top-level node of a default-domain op in ``ops`` (a custom
    domain's op of the same name means something else)."""
    wanted = frozenset(ops)
    return [(i, n) for i, n in enumerate(graph.node)
            if n.op_type in wanted and n.domain in ("", "ai.onnx")]


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``#index`` for an unnamed one (as the change report shows it)."""
    return node.name or f"#{index}"


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
    import onnx

    names: set[str] = set()

    def bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
        found = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
        return found + [g for a in node.attribute for g in a.graphs]

    stack = [g for node in graph.node for g in bodies(node)]
    while stack:
        body = stack.pop()
        for node in body.node:
            names.update(node.input)
            stack.extend(bodies(node))
    return names


# -- shapes --------------------------------------------------------------------------------------
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


def static_dims(dims: Sequence[Dim] | None) -> list[int] | None:
    """``dims`` when every one is a known size, else None."""
    if dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return [int(d) for d in dims if isinstance(d, int)]


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


def value_types(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
                ) -> dict[str, tuple[int, list[Dim] | None]]:
    """``name -> (element type, dims or None)`` for every tensor whose type is known, as ONNX
    shape inference (non-strict, with data propagation) sees it, with ``input_shapes`` pinned on
    a copy first (the model itself is not touched). A node that inference rejects, such as the
    very node a rewrite repairs, leaves its outputs unknown and nothing else; inference that
    fails outright leaves what the model declares."""
    import onnx

    work = onnx.ModelProto()
    work.CopyFrom(model)
    if input_shapes:
        set_input_dims(work, pinned_inputs(work, input_shapes))
    del work.graph.value_info[:]  # stale entries would contradict pinned dims
    try:
        graph = onnx.shape_inference.infer_shapes(work, strict_mode=False, data_prop=True).graph
    except Exception as exc:  # a model inference cannot read: use what it declares
        log.debug("shape inference failed: %s", exc)
        graph = work.graph if input_shapes else model.graph
    types: dict[str, tuple[int, list[Dim] | None]] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = (vi.type.tensor_type.elem_type, dims_of(vi))
    for init in graph.initializer:
        types[init.name] = (init.data_type, [int(d) for d in init.dims])
    return types


def shapes(model: onnx.ModelProto,
           input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, list[Dim]]:
    """Every tensor's dims as :func:`value_types` finds them (tensors of unknown rank left out)."""
    return {name: dims for name, (_, dims) in value_types(model, input_shapes).items()
            if dims is not None}


def numpy_dtype(elem_type: int) -> Any:
    """The numpy dtype of an ONNX element type (float32 when unknown)."""
    import numpy as np
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(elem_type)
    except Exception:
        return np.dtype(np.float32)


def reinfer(model: onnx.ModelProto, relax_outputs: bool = False) -> None:
    """Replace the model's value_info, and the output dims inference can now tell, with what shape
    inference finds; leave them as they were when inference fails. ``relax_outputs``: static
    output dims may become dynamic too (un-baking a traced size frees them)."""
    import onnx

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


# -- editing -------------------------------------------------------------------------------------
class Names:
    """Fresh tensor and node names for one graph: ``base``, else ``base_1``, ``base_2``... (the
    first no node, tensor or initializer uses, nor a name handed out before)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        used: set[str] = {t.name for t in graph.initializer}
        used |= {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
        for n in graph.node:
            used.update(n.input)
            used.update(n.output)
            used.add(n.name)
        self.used = used

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def add_constant(graph: onnx.GraphProto, names: Names, base: str, value: Any,
                 dtype: Any = None) -> str:
    """Add ``value`` (as ``dtype`` when given) as an initializer under a fresh name derived from
    ``base``; return the name."""
    import numpy as np
    from onnx import numpy_helper

    name = names(base)
    graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    return name


def set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Set attribute ``name`` of ``node`` to ``value``, replacing the one it had."""
    from onnx import helper

    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _axes_node(op: str, model: onnx.ModelProto, names: Names, x: str, axes: list[int], out: str,
               node_name: str) -> onnx.NodeProto:
    from onnx import helper

    if opset_of(model) >= 13:  # axes an input from opset 13
        axes_name = add_constant(model.graph, names, f"{node_name}_axes", axes, "int64")
        return helper.make_node(op, [x, axes_name], [out], name=node_name)
    return helper.make_node(op, [x], [out], name=node_name, axes=axes)


def unsqueeze(model: onnx.ModelProto, names: Names, x: str, axes: list[int], out: str,
              node_name: str) -> onnx.NodeProto:
    """An Unsqueeze in the form the model's opset takes."""
    return _axes_node("Unsqueeze", model, names, x, axes, out, node_name)


def squeeze(model: onnx.ModelProto, names: Names, x: str, axes: list[int], out: str,
            node_name: str) -> onnx.NodeProto:
    """A Squeeze in the form the model's opset takes."""
    return _axes_node("Squeeze", model, names, x, axes, out, node_name)


def splice(graph: onnx.GraphProto, remove: Sequence[onnx.NodeProto],
           new: Sequence[onnx.NodeProto] = (), at: onnx.NodeProto | None = None) -> None:
    """Remove the nodes ``remove`` and put ``new`` where ``at`` (one of them) stood, which keeps
    the node list in topological order when ``new`` reads only what ``at``'s inputs could.
    Nodes are told apart by their first output (unique in a valid graph). Callers replacing
    nodes one at a time by index go from the last to the first, so earlier indices hold."""
    import onnx

    gone = {n.output[0] for n in remove if n.output}
    anchor = at.output[0] if at is not None and at.output else None
    nodes: list[onnx.NodeProto] = []
    for node in [*graph.node]:
        key = node.output[0] if node.output else None
        if key is not None and key == anchor:
            nodes.extend(new)
        if key not in gone:
            nodes.append(node)
    copies = []
    for node in nodes:  # copy before clearing: the old entries go with the list
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)


def replace_each(model: onnx.ModelProto, found: Sequence[tuple[int, Found]],
                 fix: Callable[[onnx.NodeProto, str, Names, Found],
                               tuple[list[onnx.NodeProto], str]]) -> list[Change]:
    """Replace each matched node (``(index, what was found)``, in node order) by the nodes
    ``fix(node, label, names, found)`` returns with what it did; the changes in node order.
    Goes from the last to the first, so the earlier indices hold."""
    names = Names(model.graph)
    changes: list[Change] = []
    for i, data in reversed(found):
        node = model.graph.node[i]
        label = node_label(node, i)
        new, what = fix(node, label, names, data)
        splice(model.graph, [node], new, at=node)
        changes.append(Change(label, node.op_type, what))
    return list(reversed(changes))


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
