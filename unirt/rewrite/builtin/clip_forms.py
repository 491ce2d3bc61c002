"""Clip with constant bounds as plain elementwise ops: ``Relu`` for a lower bound of 0, ``Max``
and ``Min`` against constants otherwise (ReLU6 becomes Relu + Min).

Clip changed form at opset 11 (bounds from attributes to inputs), and engines and converters
support one form, the other or only some bound values. Relu, Max and Min exist in every opset
in one form, so the same numbers come out of any engine.
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
    numpy_dtype,
    replace_each,
    value_types,
)

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
        value = constant(model.graph, name)
        if value is None or value.size != 1:
            return False, None, None
        values.append(float(value.reshape(-1)[0]))
    return True, values[0], values[1]


class ClipForms(Rewrite):
    name = "clip_forms"
    summary = "Clip with constant bounds as Relu / Max / Min (ReLU6 as Relu + Min)"
    ops = frozenset({"Clip"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        from onnx import helper

        types = value_types(model)
        found: list[tuple[int, tuple[float | None, float | None]]] = []
        for i, node in nodes_of(model.graph, ("Clip",)):
            known, low, high = _bounds(model, node)
            if known and (low is not None or high is not None):
                found.append((i, (low, high)))
        def fix(node: onnx.NodeProto, label: str, names: Names,
                bounds: tuple[float | None, float | None]) -> tuple[list[onnx.NodeProto], str]:
            low, high = bounds
            dtype = numpy_dtype(types.get(node.input[0], (1, None))[0])
            x, out = node.input[0], node.output[0]
            new: list[onnx.NodeProto] = []
            what: list[str] = []
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
                    c = add_constant(model.graph, names, f"{label}_{op.lower()}", bound, dtype)
                    new.append(helper.make_node(op, [x, c], [y], name=names(f"{label}_{op}")))
                    what.append(f"{op}({bound:g})")
                x = y
            shown = f"[{'' if low is None else f'{low:g}'}, {'' if high is None else f'{high:g}'}]"
            return new, f"bounds {shown} as {' + '.join(what)}"

        return replace_each(model, found, fix)
