"""OpenVINO operations mapped back to the ONNX nodes they came from, for ``query``.

``query_model`` and the ONNX frontend answer in OpenVINO operations, while a verdict must name
ONNX nodes (the ones a user can find in the model, and the ones the op-support table speaks of).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unirt.plugin import ModelInfo


def is_placeholder(type_name: str) -> bool:
    """Whether an operation stands for an ONNX node the frontend could not convert: an
    ``ONNXFrameworkNode`` (read from a file) or a ``NotSupportedONNXNode`` (read from a stream)."""
    return "FrameworkNode" in type_name or "NotSupported" in type_name


def onnx_node_names(ops: Sequence[Any], model: ModelInfo) -> set[str]:
    """Map OpenVINO operations back to the names of the ONNX nodes they were converted from.

    ``query_model`` speaks in OpenVINO operations, and one ONNX node may become several (ArgMax
    becomes TopK + Squeeze) whose friendly names are not the ONNX node's name. What survives
    conversion reliably is the tensor names: the operation producing an ONNX node's output
    carries that output's name. So an operation maps to the ONNX node producing one of its
    output tensors; failing that, to a node of the same name; failing that (an internal step of a
    decomposition), to the first node reached downstream. An operation that maps to nothing is
    reported under its OpenVINO friendly name. An unnamed ONNX node is reported as
    ``<op_type>:<first output>``. Nodes inside subgraphs (If/Loop bodies) are not separate
    operations for ``query_model``: the verdict is on the node that holds the subgraph.
    """
    main = [n for n in model.nodes if n.graph == ""]
    by_output = {out: n for n in main for out in n.outputs if out}
    by_name = {n.name: n for n in main if n.name}

    def label(node: Any) -> str:
        return node.name or f"{node.op_type}:{node.outputs[0] if node.outputs else '?'}"

    def direct(op: Any) -> str | None:
        for port in op.outputs():
            for tensor in sorted(port.get_names()):
                if tensor in by_output:
                    return label(by_output[tensor])
        node = by_name.get(op.get_friendly_name())
        return label(node) if node is not None else None

    names: set[str] = set()
    for op in ops:
        found = direct(op)
        frontier, seen = [op], {op.get_name()}
        while found is None and frontier and len(seen) < 256:
            nxt = []
            for current in frontier:
                for port in current.outputs():
                    for target in port.get_target_inputs():
                        consumer = target.get_node()
                        if consumer.get_name() not in seen:
                            seen.add(consumer.get_name())
                            nxt.append(consumer)
            for consumer in nxt:
                found = direct(consumer)
                if found is not None:
                    break
            frontier = nxt
        names.add(found if found is not None else op.get_friendly_name())
    return names
