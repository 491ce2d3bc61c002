"""Models with the problems the built-in rewrites repair, built with ``onnx.helper``.

Kept apart from :mod:`unirt.testing.models` because each exists to fail somewhere: the pool-rank
model runs on no engine, the C3D-style one fails on OpenCV DNN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _model(nodes: list[onnx.NodeProto], x: Sequence[int | str], y: Sequence[int | str] | None,
           inits: list[onnx.TensorProto] | None = None, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, x)],
                          [helper.make_tensor_value_info("y", F, y)], inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="unirt.testing")
    m.ir_version = 8
    return m


#: ``pool_rank(output=UNDECLARED)``: the output declared with no shape at all.
UNDECLARED = None


def pool_rank(op: str = "MaxPool", output: Sequence[int | str] | None = (2, 2, 3, 3)
              ) -> onnx.ModelProto:
    """PyTorch ``MaxPool3d(2)`` on an unbatched ``(C, D, H, W) = (2, 4, 6, 6)`` tensor, as it
    exports: a 3-D kernel on a rank-4 input (ONNX reads it as 2-D pooling; every engine
    refuses it). ``output``: the declared output shape (symbolic dims, or :data:`UNDECLARED`,
    as exporters often leave it: then onnx's reference evaluator's 2-D reading, of shape
    ``[2, 4, 3, 3]``, is not contradicted by any declaration)."""
    return _model([helper.make_node(op, ["x"], ["y"], kernel_shape=[2, 2, 2],
                                    strides=[2, 2, 2], name="p1")], [2, 4, 6, 6], output)


def pool_rank_expected(x: np.ndarray, op: str = "MaxPool") -> np.ndarray:
    """What :func:`pool_rank` means (PyTorch's answer), in numpy."""
    c, d, h, w = x.shape
    blocks = x.reshape(c, d // 2, 2, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 5, 2, 4, 6)
    blocks = blocks.reshape(c, d // 2, h // 2, w // 2, 8)
    return blocks.max(-1) if op == "MaxPool" else blocks.mean(-1)


def c3d(size: int = 16, frames: int = 8, classes: int = 5) -> onnx.ModelProto:
    """A C3D-style classifier: Conv3d 3x3x3, ReLU, MaxPool3d (1,2,2), adaptive (global) average
    pool, Flatten, Gemm: OpenCV DNN fails the 3-D global pool ("expected 'addedDims <=
    pads_begin.size()'")."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32) * 0.1,
                                "w")
    fc = numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "bias")
    return _model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3, 3],
                         pads=[1, 1, 1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu1"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[1, 2, 2], strides=[1, 2, 2],
                         name="pool1"),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "bias"], ["y"], transB=1, name="fc")],
        [1, 3, frames, size, size], [1, classes], [w, fc, bias])


#: The Concat order of YOLOv5's Focus: ``x[..., ::2, ::2], x[..., 1::2, ::2], ...``.
YOLO_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))
_END = np.iinfo(np.int64).max


def focus(order: Sequence[tuple[int, int]] = YOLO_ORDER, chained: bool = True, step: int = 2,
          batch: int | str = 1, size: int = 16) -> onnx.ModelProto:
    """YOLOv5's Focus: four strided Slices of ``x`` concatenated on channels, then a Conv.
    ``chained``: one Slice per axis, as older torch exports it; else one Slice on both axes.
    ncnn refuses it ("ONNX op slice became pnnx layer 'Tensor.slice'")."""
    def i64(name: str, v: Any) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(v, np.int64), name)

    w = (np.random.default_rng(5).standard_normal((8, 12, 3, 3)) * 0.1).astype(np.float32)
    nodes, inits, cat = [], [numpy_helper.from_array(w, "w")], []
    for k, (dh, dw) in enumerate(order):
        if chained:
            inits += [i64(f"s{k}h", [dh]), i64(f"e{k}h", [_END]), i64(f"a{k}h", [2]),
                      i64(f"t{k}h", [step]), i64(f"s{k}w", [dw]), i64(f"e{k}w", [_END]),
                      i64(f"a{k}w", [3]), i64(f"t{k}w", [step])]
            nodes += [helper.make_node("Slice", ["x", f"s{k}h", f"e{k}h", f"a{k}h", f"t{k}h"],
                                       [f"h{k}"], name=f"slice{k}h"),
                      helper.make_node("Slice", [f"h{k}", f"s{k}w", f"e{k}w", f"a{k}w",
                                                 f"t{k}w"], [f"q{k}"], name=f"slice{k}w")]
        else:
            inits += [i64(f"s{k}", [dh, dw]), i64(f"e{k}", [_END, _END]), i64(f"a{k}", [-2, -1]),
                      i64(f"t{k}", [step, step])]
            nodes.append(helper.make_node("Slice", ["x", f"s{k}", f"e{k}", f"a{k}", f"t{k}"],
                                          [f"q{k}"], name=f"slice{k}"))
        cat.append(f"q{k}")
    half = size // 2 if step == 2 else size
    nodes += [helper.make_node("Concat", cat, ["cat"], axis=1, name="focus_cat"),
              helper.make_node("Conv", ["cat", "w"], ["y"], kernel_shape=[3, 3],
                               pads=[1, 1, 1, 1], name="conv")]
    return _model(nodes, [batch, 3, size, size], [batch, 8, half, half], inits, opset=13)


def unary(op: str, shape: tuple[int, ...] = (1, 3, 8, 8), opset: int = 17,
          **attrs: Any) -> onnx.ModelProto:
    """One elementwise activation node."""
    return _model([helper.make_node(op, ["x"], ["y"], name="act", **attrs)], list(shape),
                  list(shape), opset=opset)


def relu6() -> onnx.ModelProto:
    """ReLU6 as exported: Clip with constant bounds 0 and 6."""
    lo = numpy_helper.from_array(np.array(0, np.float32), "lo")
    hi = numpy_helper.from_array(np.array(6, np.float32), "hi")
    return _model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="relu6")],
                  [1, 3, 8, 8], [1, 3, 8, 8], [lo, hi])


def mean_to_scalar() -> onnx.ModelProto:
    """A mean over every axis, keepdims=0: a rank-0 output."""
    return _model([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0, name="mean")],
                  [1, 3, 4, 4], [])


def unit_kernel_conv3d() -> onnx.ModelProto:
    """Conv3d with a (1, 3, 3) kernel, padding only on H and W (an R(2+1)D spatial conv)."""
    w = numpy_helper.from_array(
        np.random.default_rng(1).standard_normal((4, 3, 1, 3, 3)).astype(np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 3, 3],
                                    pads=[0, 1, 1, 0, 1, 1], name="conv")],
                  [1, 3, 4, 8, 8], [1, 4, 4, 8, 8], [w])
