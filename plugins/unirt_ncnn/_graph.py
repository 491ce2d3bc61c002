"""Preparing an ONNX model for pnnx: the tail ops ncnn cannot run are computed on the host.

ncnn's ArgMax layer is left out of the standard build, and pnnx passes ArgMax/ArgMin through as a
layer that then fails to load. They are the usual last op of a classifier, cheap, and exact in
numpy, so when they only feed graph outputs they are cut off the graph handed to pnnx (their input
becomes an output of the ncnn part) and computed from ncnn's output on the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from unirt.plugin import ModelInfo

HOST_OPS = ("ArgMax", "ArgMin")


@dataclass(frozen=True)
class HostOp:
    """One tail node computed with numpy on the ncnn part's output."""

    op: str
    input: str
    output: str
    axis: int
    keepdims: bool
    select_last_index: bool

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        axis = self.axis if self.axis >= 0 else self.axis + x.ndim
        fn = np.argmax if self.op == "ArgMax" else np.argmin
        if self.select_last_index:
            flipped = np.flip(x, axis=axis)
            idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            idx = fn(x, axis=axis)
        if self.keepdims:
            idx = np.expand_dims(idx, axis)
        return np.ascontiguousarray(idx, dtype=np.int64)


def host_tail(model: ModelInfo) -> tuple[HostOp, ...]:
    """The ArgMax/ArgMin nodes of the main graph whose outputs are graph outputs read by no other
    node and whose input is computed by the graph (not fed directly)."""
    outputs = {t.name for t in model.outputs}
    inputs = {t.name for t in model.inputs}
    main = [n for n in model.nodes if n.graph == ""]
    consumed: dict[str, int] = {}
    for n in model.nodes:  # subgraphs count as consumers too
        for i in n.inputs:
            consumed[i] = consumed.get(i, 0) + 1
    ops = []
    for n in main:
        if n.op_type not in HOST_OPS or n.domain not in ("", "ai.onnx"):
            continue
        if len(n.outputs) != 1 or n.outputs[0] not in outputs or consumed.get(n.outputs[0]):
            continue
        if not n.inputs or n.inputs[0] in inputs:
            continue
        a = n.attributes
        ops.append(HostOp(n.op_type, n.inputs[0], n.outputs[0], int(a.get("axis", 0)),
                          bool(a.get("keepdims", 1)), bool(a.get("select_last_index", 0))))
    return tuple(ops)


def ncnn_outputs(model: ModelInfo, host: tuple[HostOp, ...]) -> list[str]:
    """The outputs of the graph handed to pnnx, in the order pnnx will number them."""
    cut = {h.output for h in host}
    names = [t.name for t in model.outputs if t.name not in cut]
    for h in host:
        if h.input not in names:
            names.append(h.input)
    return names


def write_prepared(model: ModelInfo, host: tuple[HostOp, ...], dest: Path) -> Path:
    """The model pnnx converts: the original file when nothing is cut, its weights are inline
    and its graph inputs are only real inputs; otherwise a rewritten single-file copy at
    ``dest``. IR < 4 models list every initializer among the graph inputs, and pnnx takes those
    for inputs to be given shapes (``input_shapes[0] expect [16]f32`` on the onnx wheel's
    light SqueezeNet): the copy lists only the real inputs, at IR 4."""
    import onnx

    src = model.source()
    if not host and model.path is not None and not model.external_data:
        proto = onnx.load(str(model.path), load_external_data=False)
        if not _weights_listed_as_inputs(proto):
            return model.path
    proto = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(src)
    if _weights_listed_as_inputs(proto):
        weights = {t.name for t in proto.graph.initializer}
        real = [i for i in proto.graph.input if i.name not in weights]
        del proto.graph.input[:]
        proto.graph.input.extend(real)
        proto.ir_version = max(proto.ir_version, 4)
    if host:
        _cut_tail(proto, host, ncnn_outputs(model, host))
    onnx.save(proto, str(dest))
    return dest


def _weights_listed_as_inputs(proto: Any) -> bool:
    weights = {t.name for t in proto.graph.initializer}
    return any(i.name in weights for i in proto.graph.input)


def _cut_tail(proto: Any, host: tuple[HostOp, ...], outputs: list[str]) -> None:
    import onnx
    from onnx import helper

    cut = {h.output for h in host}
    g = proto.graph
    keep = [n for n in g.node if not (len(n.output) == 1 and n.output[0] in cut)]
    del g.node[:]
    g.node.extend(keep)
    known: Mapping[str, Any] = {o.name: o for o in g.output}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        known = {**{v.name: v for v in inferred.graph.value_info}, **known}
    except Exception:  # inference is only there to give pnnx shapes; types suffice
        pass
    new_outputs = []
    for name in outputs:
        vi = known.get(name)
        if vi is None:
            vi = helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        new_outputs.append(vi)
    del g.output[:]
    g.output.extend(new_outputs)
