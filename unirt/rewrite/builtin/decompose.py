"""Fused activations as the elementwise ops they are defined by: HardSigmoid, HardSwish, Swish,
Gelu (exact and tanh), Mish.

Each of these joined ONNX late (HardSwish 14, Gelu 20, Mish 18, Swish 24) and an engine or
converter without the fused op rejects the whole model over one activation. Mul, Add, Max, Min,
Sigmoid, Tanh, Erf, Exp, Log and Softplus have been in ONNX since its first opsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import (
    Names,
    add_constant,
    attribute,
    nodes_of,
    numpy_dtype,
    replace_each,
    value_types,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx


class _Builder:
    """Emits nodes computing one formula; constants in the input's dtype."""

    def __init__(self, model: onnx.ModelProto, names: Names, label: str, dtype: Any) -> None:
        self.model, self.names, self.label, self.dtype = model, names, label, dtype
        self.nodes: list[onnx.NodeProto] = []

    def const(self, value: float) -> str:
        return add_constant(self.model.graph, self.names, f"{self.label}_c", value, self.dtype)

    def op(self, op: str, *inputs: str, out: str | None = None) -> str:
        from onnx import helper

        y = out or self.names(f"{self.label}_{op.lower()}")
        self.nodes.append(helper.make_node(op, list(inputs), [y],
                                           name=self.names(f"{self.label}_{op}")))
        return y


def _hard_sigmoid(b: _Builder, x: str, alpha: float, beta: float, out: str | None = None
                  ) -> str:
    lin = b.op("Add", b.op("Mul", x, b.const(alpha)), b.const(beta))
    return b.op("Min", b.op("Max", lin, b.const(0.0)), b.const(1.0), out=out)


def _formula(node: onnx.NodeProto) -> tuple[str, Callable[[_Builder, str, str], None]] | None:
    """What the node's op is made of, and a function emitting it; None for nodes left alone."""
    op = node.op_type
    if op == "HardSigmoid":
        alpha, beta = attribute(node, "alpha", 0.2), attribute(node, "beta", 0.5)

        def hard_sigmoid(b: _Builder, x: str, y: str) -> None:
            _hard_sigmoid(b, x, alpha, beta, y)

        return "min(max(alpha*x + beta, 0), 1)", hard_sigmoid
    if op == "HardSwish":
        def hard_swish(b: _Builder, x: str, y: str) -> None:
            b.op("Mul", x, _hard_sigmoid(b, x, 1 / 6, 0.5), out=y)

        return "x * hard_sigmoid(x, 1/6, 0.5)", hard_swish
    if op == "Swish":
        alpha = attribute(node, "alpha", 1.0)

        def swish(b: _Builder, x: str, y: str) -> None:
            scaled = b.op("Mul", x, b.const(alpha)) if alpha != 1.0 else x
            b.op("Mul", x, b.op("Sigmoid", scaled), out=y)

        return "x * sigmoid(alpha*x)", swish
    if op == "Mish":
        def mish(b: _Builder, x: str, y: str) -> None:
            b.op("Mul", x, b.op("Tanh", b.op("Softplus", x)), out=y)

        return "x * tanh(softplus(x))", mish
    if op == "Gelu":
        approximate = attribute(node, "approximate", b"none")
        if (approximate.decode() if isinstance(approximate, bytes) else approximate) == "tanh":
            def tanh_form(b: _Builder, x: str, y: str) -> None:
                cube = b.op("Mul", b.op("Mul", x, x), x)
                inner = b.op("Add", x, b.op("Mul", cube, b.const(0.044715)))
                t = b.op("Tanh", b.op("Mul", inner, b.const(math.sqrt(2 / math.pi))))
                b.op("Mul", b.op("Mul", x, b.const(0.5)), b.op("Add", t, b.const(1.0)), out=y)

            return "0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))", tanh_form

        def erf_form(b: _Builder, x: str, y: str) -> None:
            e = b.op("Erf", b.op("Mul", x, b.const(1 / math.sqrt(2))))
            b.op("Mul", b.op("Mul", x, b.const(0.5)), b.op("Add", e, b.const(1.0)), out=y)

        return "0.5*x*(1 + erf(x/sqrt(2)))", erf_form
    return None


class Decompose(Rewrite):
    name = "decompose"
    summary = "HardSigmoid, HardSwish, Swish, Gelu, Mish as the elementwise ops defining them"
    ops = frozenset({"HardSigmoid", "HardSwish", "Swish", "Gelu", "Mish"})

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:

        found = [(i, f) for i, n in nodes_of(model.graph, self.ops)
                 if (f := _formula(n)) is not None]
        if not found:
            return []
        types = value_types(model)

        def fix(node: onnx.NodeProto, label: str, names: Names,
                formula: tuple[str, Callable[[_Builder, str, str], None]]
                ) -> tuple[list[onnx.NodeProto], str]:
            text, emit = formula
            b = _Builder(model, names, label, numpy_dtype(types.get(node.input[0], (1, None))[0]))
            emit(b, node.input[0], node.output[0])
            return b.nodes, f"as {text} ({len(b.nodes)} nodes)"

        return replace_each(model, found, fix)
