"""Clip with constant bounds as plain elementwise ops: ``Relu`` for a lower bound of 0, ``Max``
and ``Min`` against constants otherwise (ReLU6 becomes Relu + Min).

Clip changed form at opset 11 (bounds from attributes to inputs), and engines and converters
support one form, the other or only some bound values. Relu, Max and Min exist in every opset
in one form, so the same numbers come out of any engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import Change, Rewrite, RewriteContext
from ..graph import Names, add_constant, attribute, constant, node_label, replace, value_types

if TYPE_CHECKING:  # pragma: no cover
    import onnx


def _bounds(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[bool, float | None,
                                                                   float | None]:
    """(constant?, low, high): the bounds when every given one is a known scalar."""
    if len(node.input) == 1 and (attribute(node, "min") is not None
                                 or attribute(node, "max") is not None):
        return True, attribute(node, "min"), attribute(node, "max")
    values: list[float | None] = []
    for name in [*node.input[1:3], "", ""][:2]:
        if not name:
            values.append(None)
            continue
        value = constant(model, name)
        if value is None or value.size != 1:
            return False, None, None
        values.append(float(value.reshape(-1)[0]))
    return True, values[0], values[1]


class ClipForms(Rewrite):
    name = "clip_forms"
    summary = "Clip with constant bounds as Relu / Max / Min (ReLU6 as Relu + Min)"
    ops = frozenset({"Clip"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        import numpy as np
        from onnx import helper

        types = value_types(model)
        found: list[tuple[int, float | None, float | None]] = []
        for i, node in enumerate(model.graph.node):
            if node.op_type != "Clip" or node.domain not in ("", "ai.onnx"):
                continue
            known, low, high = _bounds(model, node)
            if known and (low is not None or high is not None):
                found.append((i, low, high))
        if not found:
            return []
        names = Names(model)
        changes: list[Change] = []
        for i, low, high in reversed(found):
            node = model.graph.node[i]
            label = node_label(node, i)
            elem = types.get(node.input[0], (1, None))[0]
            dtype = helper.tensor_dtype_to_np_dtype(elem) if elem else np.float32
            x, out, new, what = node.input[0], node.output[0], [], []
            steps: list[tuple[str, float]] = []
            if low is not None:
                steps.append(("Max", low))
            if high is not None:
                steps.append(("Min", high))
            for k, (op, bound) in enumerate(steps):
                y = out if k == len(steps) - 1 else names(f"{out}_{op.lower()}")
                if op == "Max" and bound == 0:
                    new.append(helper.make_node("Relu", [x], [y], name=names(f"{label}_relu")))
                    what.append("Relu")
                else:
                    c = add_constant(model, names, f"{label}_{op.lower()}", bound, dtype)
                    new.append(helper.make_node(op, [x, c], [y], name=names(f"{label}_{op}")))
                    what.append(f"{op}({bound:g})")
                x = y
            replace(model, i, new)
            bounds = f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]"
            changes.append(Change(label, "Clip", f"bounds {bounds} as {' + '.join(what)}"))
        return list(reversed(changes))
