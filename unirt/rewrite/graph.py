"""Small graph edits the built-in rewrites share: fresh names, known ranks and dtypes, constants,
and putting a few nodes where one was.

The built-ins edit ``onnx.ModelProto`` with ``onnx.helper`` (see the README for why not a pattern
library): each repair replaces one node by a handful, and these helpers keep each rewrite's own
module down to the rule it encodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (its node forms depend on it)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


class Names:
    """Fresh tensor and node names: ``base`` plus a suffix no name in the model has."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        used: set[str] = {t.name for t in g.initializer}
        used |= {v.name for v in (*g.input, *g.output, *g.value_info)}
        for n in g.node:
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


def value_types(model: onnx.ModelProto) -> dict[str, tuple[int, list[int | str | None] | None]]:
    """``name -> (element type, dims or None)`` for every tensor whose type is known, after
    non-strict shape inference (a node that inference rejects, such as the very node a rewrite
    repairs, leaves its outputs unknown and nothing else)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        graph = inferred.graph
    except Exception:
        graph = model.graph
    types: dict[str, tuple[int, list[int | str | None] | None]] = {}
    for v in (*graph.input, *graph.value_info, *graph.output):
        if not v.type.HasField("tensor_type"):
            continue
        tt = v.type.tensor_type
        dims: list[int | str | None] | None = None
        if tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in tt.shape.dim]
        types[v.name] = (tt.elem_type, dims)
    for t in graph.initializer:
        types[t.name] = (t.data_type, list(t.dims))
    return types


def static_dims(dims: Sequence[int | str | None] | None) -> list[int] | None:
    """``dims`` when every one is a known size, else None."""
    if dims is None or not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return [int(d) for d in dims if isinstance(d, int)]


def constant(model: onnx.ModelProto, name: str) -> Any:
    """The numpy value of initializer ``name`` (or of a ``Constant`` node's output), else None."""
    from onnx import numpy_helper

    if not name:
        return None
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def add_constant(model: onnx.ModelProto, names: Names, base: str, value: Any,
                 dtype: Any = None) -> str:
    """Add ``value`` as an initializer under a fresh name; returns the name."""
    import numpy as np
    from onnx import numpy_helper

    name = names(base)
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    return name


def numpy_dtype(elem_type: int) -> Any:
    """The numpy dtype of an ONNX element type (float32 when unknown)."""
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(elem_type)
    except Exception:
        import numpy as np

        return np.dtype(np.float32)


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    from onnx import helper

    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def unsqueeze(model: onnx.ModelProto, names: Names, x: str, axes: list[int], out: str,
              node_name: str) -> onnx.NodeProto:
    """An Unsqueeze in the form the model's opset takes (axes an input from opset 13)."""
    from onnx import helper

    if opset(model) >= 13:
        axes_name = add_constant(model, names, f"{node_name}_axes", axes, "int64")
        return helper.make_node("Unsqueeze", [x, axes_name], [out], name=node_name)
    return helper.make_node("Unsqueeze", [x], [out], name=node_name, axes=axes)


def squeeze(model: onnx.ModelProto, names: Names, x: str, axes: list[int], out: str,
            node_name: str) -> onnx.NodeProto:
    """A Squeeze in the form the model's opset takes (axes an input from opset 13)."""
    from onnx import helper

    if opset(model) >= 13:
        axes_name = add_constant(model, names, f"{node_name}_axes", axes, "int64")
        return helper.make_node("Squeeze", [x, axes_name], [out], name=node_name)
    return helper.make_node("Squeeze", [x], [out], name=node_name, axes=axes)


def replace(model: onnx.ModelProto, index: int,
            new_nodes: Iterable[onnx.NodeProto]) -> None:
    """Put ``new_nodes`` where node ``index`` was (the graph stays topologically sorted).
    Callers replacing several nodes go from the last to the first, so indices hold."""
    nodes = model.graph.node
    new = [_copy(n) for n in new_nodes]
    del nodes[index]
    for offset, n in enumerate(new):
        nodes.insert(index + offset, n)


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def node_label(node: onnx.NodeProto, index: int) -> str:
    """The node's name, or ``#index`` for an unnamed one (as the change report shows it)."""
    return node.name or f"#{index}"
