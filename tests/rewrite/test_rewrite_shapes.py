"""The shape-and-layout built-in rewrites: focus_slice, resize_constant, fold, opset_convert,
pin_dims, unbake_reshape.

Each is run on an ``onnx.helper`` model it applies to and checked numerically (the original and
the rewritten model on ONNX Runtime, in-process: these tiny models are known safe, on the same
seeded inputs, max abs diff <= 1e-5), and on a model it does not apply to (``[]``, bytes
unchanged). The Focus rewrite is also run on ncnn and OpenCV through their plugins, which is what
it is for.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.builtin import fold as fold_module
from unirt.rewrite.builtin.focus import FocusSlice
from unirt.rewrite.builtin.fold import Fold
from unirt.rewrite.builtin.opset import OpsetConvert
from unirt.rewrite.builtin.pin import PinDims
from unirt.rewrite.builtin.resize import ResizeConstant
from unirt.rewrite.builtin.unbake import BakedDim, UnbakeReshape, baked_reshapes
from unirt.testing import models as M
from unirt.testing import rewrite_models as rm

ATOL = 1e-5
BIG = 9223372036854775807


# -- helpers -------------------------------------------------------------------------------------
def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto],
           opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _i64(name: str, v: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(v, np.int64), name)


def _f32(name: str, shape: tuple[int, ...], seed: int, scale: float = 0.1) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    return out


def _feeds(m: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0
           ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal(shapes[vi.name]).astype(np.float32)
            for vi in m.graph.input}


def _ort(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _assert_same(a: onnx.ModelProto, b: onnx.ModelProto,
                 shapes: dict[str, tuple[int, ...]]) -> None:
    feeds = _feeds(a, shapes)
    want, got = _ort(a, feeds), _ort(b, feeds)
    assert len(want) == len(got)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        assert float(np.max(np.abs(w - g))) <= ATOL


def _applied(rewrite: Rewrite, m: onnx.ModelProto,
             context: RewriteContext | None = None) -> tuple[onnx.ModelProto, list[Change]]:
    out = _copy(m)
    changes = rewrite.apply(out, context or RewriteContext())
    assert changes, f"{rewrite.name} did not apply"
    assert all(isinstance(c, Change) and c.node and c.op and c.what for c in changes)
    onnx.checker.check_model(out, full_check=True)
    return out, changes


def _not_applied(rewrite: Rewrite, m: onnx.ModelProto,
                 context: RewriteContext | None = None) -> None:
    out = _copy(m)
    before = m.SerializeToString()
    assert rewrite.apply(out, context or RewriteContext()) == []
    assert out.SerializeToString() == before


def _ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


# -- focus_slice ---------------------------------------------------------------------------------
YOLO_ORDER = list(rm.YOLO_ORDER)


def focus(order: list[tuple[int, int]] = YOLO_ORDER, chained: bool = True, step: int = 2,
          batch: int | str = 1, size: int = 16) -> onnx.ModelProto:
    m = rm.focus(order, chained, step, batch, size)
    onnx.checker.check_model(m)
    return m


@pytest.mark.parametrize("chained", [True, False], ids=["slice-per-axis", "one-slice"])
@pytest.mark.parametrize("order", [YOLO_ORDER, [(0, 0), (0, 1), (1, 0), (1, 1)]],
                         ids=["yolov5-order", "column-order"])
def test_focus_becomes_reshape_transpose(chained: bool, order: list[tuple[int, int]]) -> None:
    m = focus(order, chained)
    out, changes = _applied(FocusSlice(), m)
    assert "Slice" not in _ops(out) and "Concat" not in _ops(out)
    assert _ops(out) == ["Reshape", "Transpose", "Reshape", "Transpose", "Reshape", "Conv"]
    assert len(changes) == 1 and changes[0].node == "focus_cat" and "Focus" in changes[0].what
    # the slice constants went with the slices
    assert {i.name for i in out.graph.initializer if i.name.startswith(("s", "e", "a", "t"))} \
        == set()
    _assert_same(m, out, {"x": (1, 3, 16, 16)})


def test_focus_keeps_a_dynamic_batch() -> None:
    m = focus(batch="N")
    out, _ = _applied(FocusSlice(), m)
    _assert_same(m, out, {"x": (3, 3, 16, 16)})


@pytest.mark.parametrize("case", ["step1", "odd-order", "dynamic-hw"])
def test_focus_leaves_other_slices_alone(case: str) -> None:
    if case == "step1":
        m = focus(step=1)
    elif case == "odd-order":
        m = focus([(1, 1), (0, 0), (1, 0), (0, 1)])
    else:  # H and W unknown: no constant Reshape can be written
        m = focus()
        for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
            d.dim_param = "s"
        for d in m.graph.output[0].type.tensor_type.shape.dim[2:]:
            d.dim_param = "h"
    _not_applied(FocusSlice(), m)
    if case == "dynamic-hw":  # ...until the caller gives the sizes
        out, _ = _applied(FocusSlice(), m, RewriteContext(input_shapes={"x": [1, 3, 16, 16]}))
        _assert_same(m, out, {"x": (1, 3, 16, 16)})


@pytest.mark.parametrize("backend", ["ncnn", "opencv"])
def test_focus_rewritten_runs_on_engine(backend: str, tmp_path: Path) -> None:
    import unirt
    from unirt.plugin.registry import get_registry

    try:
        status = get_registry().backend(backend).available()
    except Exception as exc:
        pytest.skip(f"{backend} plugin unavailable: {exc}")
    if not status.available:
        pytest.skip(f"{backend} unavailable: {status.reason}")
    m = focus()
    out, _ = _applied(FocusSlice(), m)
    path = M.save(out, tmp_path / "focus_fixed.onnx")
    feeds = _feeds(m, {"x": (1, 3, 16, 16)})
    (want,) = _ort(m, feeds)
    sess = unirt.load(path, backend=backend, verify="never")
    try:
        got = np.asarray(sess.run(feeds)["y"])
    finally:
        sess.close()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


# -- resize_constant -----------------------------------------------------------------------------
def resize_by_shape(dims: list[Any], opset: int = 17) -> onnx.ModelProto:
    """``F.interpolate(x, scale_factor=2)`` as exported: sizes = Concat(N, C, H*2, W*2) from a
    Shape->Slice->Cast->Mul->Cast chain, then a Conv."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Slice", ["shp", "two", "four"], ["hw"], name="hw"),
        helper.make_node("Cast", ["hw"], ["hwf"], to=TensorProto.FLOAT, name="cast_f"),
        helper.make_node("Mul", ["hwf", "factor"], ["hw2f"], name="times2"),
        helper.make_node("Cast", ["hw2f"], ["hw2"], to=TensorProto.INT64, name="cast_i"),
        helper.make_node("Slice", ["shp", "zero", "two"], ["nc"], name="nc"),
        helper.make_node("Concat", ["nc", "hw2"], ["sizes"], axis=0, name="sizes"),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["up"], mode="nearest", name="resize"),
        helper.make_node("Conv", ["up", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         name="conv"),
    ]
    inits = [_i64("zero", [0]), _i64("two", [2]), _i64("four", [4]),
             numpy_helper.from_array(np.array([2.0, 2.0], np.float32), "factor"),
             _f32("w", (2, 4, 3, 3), 7)]
    out = [dims[0], 2, *(d * 2 if isinstance(d, int) else f"{d}2" for d in dims[2:])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits, opset)


def resize_to_skip() -> onnx.ModelProto:
    """Upsample ``x`` [1,2,5,5] to the size of ``s`` [1,2,7,7] (sizes from Shape(s)): 7/5 is
    no exact float32 scale, so the constant must stay sizes."""
    nodes = [
        helper.make_node("Shape", ["s"], ["shp"], name="shape_s"),
        helper.make_node("Resize", ["x", "", "", "shp"], ["up"], mode="linear", name="resize"),
        helper.make_node("Add", ["up", "s"], ["y"], name="add"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
                          helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 2, 7, 7])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 7, 7])], [])


def test_resize_sizes_from_shape_become_constant_scales() -> None:
    m = resize_by_shape([1, 4, 8, 8])
    out, changes = _applied(ResizeConstant(), m)
    resize = next(n for n in out.graph.node if n.op_type == "Resize")
    scales = numpy_helper.to_array(next(i for i in out.graph.initializer
                                        if i.name == resize.input[2]))
    assert scales.tolist() == [1.0, 1.0, 2.0, 2.0] and len(resize.input) == 3
    assert _ops(out) == ["Resize", "Conv"]  # the Shape chain is gone
    assert changes[0].node == "resize" and "constant scales" in changes[0].what
    _assert_same(m, out, {"x": (1, 4, 8, 8)})


def test_resize_dynamic_input_needs_the_given_shape() -> None:
    m = resize_by_shape([1, 4, "h", "w"])
    _not_applied(ResizeConstant(), m)
    ctx = RewriteContext(input_shapes={"x": [1, 4, 6, 10]})
    out, changes = _applied(ResizeConstant(), m, ctx)
    # the constant holds for the given sizes only, so the input says so
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [1, 4, 6, 10]
    assert any(c.node == "x" and "pinned" in c.what for c in changes)
    _assert_same(m, out, {"x": (1, 4, 6, 10)})


def test_resize_inexact_ratio_becomes_constant_sizes() -> None:
    m = resize_to_skip()
    out, changes = _applied(ResizeConstant(), m)
    resize = next(n for n in out.graph.node if n.op_type == "Resize")
    sizes = numpy_helper.to_array(next(i for i in out.graph.initializer
                                       if i.name == resize.input[3]))
    assert sizes.tolist() == [1, 2, 7, 7] and "constant sizes" in changes[0].what
    assert "Shape" not in _ops(out)
    _assert_same(m, out, {"x": (1, 2, 5, 5), "s": (1, 2, 7, 7)})


def test_resize_with_constant_scales_is_left_alone() -> None:
    _not_applied(ResizeConstant(), M.resize_concat())
    _not_applied(ResizeConstant(), M.add())


# -- fold ----------------------------------------------------------------------------------------
def foldable(blocks: int = 6) -> onnx.ModelProto:
    """Conv/Relu blocks on float32[N,4,8,8], each with constant arithmetic and a
    Shape->Gather->Unsqueeze->Concat->Reshape round trip that folding removes."""
    nodes, inits, cur = [], [], "x"
    for b in range(blocks):
        p = f"b{b}_"
        inits += [_f32(p + "w", (4, 4, 3, 3), b), _f32(p + "k1", (1,), 100 + b, 1.0),
                  _f32(p + "k2", (1,), 200 + b, 1.0), _i64(p + "i0", 0), _i64(p + "ax", [0]),
                  _i64(p + "rest", [-1]), _i64(p + "back", [-1, 4, 8, 8])]
        nodes += [
            helper.make_node("Conv", [cur, p + "w"], [p + "c"], pads=[1, 1, 1, 1], name=p + "c"),
            helper.make_node("Mul", [p + "k1", p + "k2"], [p + "k"], name=p + "k"),
            helper.make_node("Mul", [p + "c", p + "k"], [p + "m"], name=p + "m"),
            helper.make_node("Relu", [p + "m"], [p + "r"], name=p + "r"),
            helper.make_node("Shape", [p + "r"], [p + "s"], name=p + "s"),
            helper.make_node("Gather", [p + "s", p + "i0"], [p + "n"], axis=0, name=p + "g"),
            helper.make_node("Unsqueeze", [p + "n", p + "ax"], [p + "n1"], name=p + "u"),
            helper.make_node("Concat", [p + "n1", p + "rest"], [p + "t"], axis=0, name=p + "t"),
            helper.make_node("Reshape", [p + "r", p + "t"], [p + "f"], name=p + "f"),
            helper.make_node("Reshape", [p + "f", p + "back"], [p + "o"], name=p + "o"),
        ]
        cur = p + "o"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)


needs_onnxslim = pytest.mark.skipif(importlib.util.find_spec("onnxslim") is None,
                                    reason="onnxslim not installed (the 'fold' extra)")


@needs_onnxslim
def test_fold_simplifies_and_keeps_the_dynamic_batch() -> None:
    m = foldable()
    out, changes = _applied(Fold(), m)
    assert len(out.graph.node) < len(m.graph.node) // 2
    assert "Shape" not in _ops(out) and "Gather" not in _ops(out)
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert out.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert [o.name for o in out.graph.output] == ["y"]
    assert any(c.op == "Shape" and "-> 0" in c.what for c in changes)
    # Graph-wide changes read alone: "6 Shape nodes -> 0 (graph)", not "Shape 'graph': 6 -> 0".
    assert any(str(c).endswith(" Shape nodes -> 0 (graph)") for c in changes), changes
    for batch in (1, 3):
        _assert_same(m, out, {"x": (batch, 4, 8, 8)})


@needs_onnxslim
def test_fold_pins_only_what_the_caller_gave() -> None:
    m = foldable(2)
    out, changes = _applied(Fold(), m, RewriteContext(input_shapes={"x": [2, 4, 8, 8]}))
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert any(c.node == "x" and "pinned" in c.what for c in changes)
    _assert_same(m, out, {"x": (2, 4, 8, 8)})


@needs_onnxslim
def test_fold_has_nothing_to_do_on_a_simple_graph() -> None:
    _not_applied(Fold(), M.add())


def slim_and_sign(data: bytes) -> bytes:
    """The real child function, with the child's pid written into the result (module level: the
    child imports it by name)."""
    out = onnx.load_model_from_string(fold_module.slim_bytes(data))
    helper.set_model_props(out, {"slimmed_in_pid": str(os.getpid())})
    return out.SerializeToString()


def segfault(data: bytes) -> bytes:
    os.kill(os.getpid(), signal.SIGSEGV)
    return data


def hang(data: bytes) -> bytes:
    time.sleep(60)
    return data


@needs_onnxslim
def test_fold_runs_onnxslim_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold_module, "_CHILD_FN", slim_and_sign)
    out, _ = _applied(Fold(), foldable(1))
    pids = {p.key: p.value for p in out.metadata_props}
    assert pids["slimmed_in_pid"] != str(os.getpid())


@needs_onnxslim
@pytest.mark.parametrize(("child", "said"), [(segfault, "SIGSEGV"), (hang, "timed out")])
def test_fold_child_failure_leaves_the_model_untouched(
        child: Any, said: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(fold_module, "_CHILD_FN", child)
    monkeypatch.setattr(fold_module, "TIMEOUT", 2.0)
    m = foldable(1)
    before = m.SerializeToString()
    with caplog.at_level(logging.INFO, logger=fold_module.__name__):
        assert Fold().apply(m, RewriteContext()) == []
    assert m.SerializeToString() == before
    assert any(said in r.getMessage() and "left as it was" in r.getMessage()
               for r in caplog.records)


# -- opset_convert -------------------------------------------------------------------------------
def reduce_opset18() -> onnx.ModelProto:
    """ReduceMean with ``axes`` as an input (opset 18) then Softmax: an engine that loads opset
    13 wants axes as an attribute."""
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1, name="mean"),
             helper.make_node("Softmax", ["m"], ["y"], axis=1, name="softmax")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 1])],
                  [_i64("axes", [2])], opset=18)


def test_opset_converted_down() -> None:
    m = reduce_opset18()
    out, changes = _applied(OpsetConvert(), m, RewriteContext(opset=13))
    assert out.opset_import[0].version == 13
    mean = next(n for n in out.graph.node if n.op_type == "ReduceMean")
    assert len(mean.input) == 1 and any(a.name == "axes" for a in mean.attribute)
    assert "18 -> 13" in changes[0].what
    _assert_same(m, out, {"x": (2, 3, 4)})


def test_opset_not_converted_when_not_asked_or_impossible() -> None:
    m = reduce_opset18()
    _not_applied(OpsetConvert(), m)
    _not_applied(OpsetConvert(), m, RewriteContext(opset=18))
    _not_applied(OpsetConvert(), m, RewriteContext(opset=20))
    # onnx's converter has no adapter taking Sub from opset 14 down to 13: nothing changes
    sub = _model([helper.make_node("Sub", ["x", "x"], ["y"], name="sub")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [], opset=17)
    _not_applied(OpsetConvert(), sub, RewriteContext(opset=13))


# -- pin_dims ------------------------------------------------------------------------------------
def test_pin_dims_sets_inputs_and_downstream_shapes() -> None:
    m = M.dynamic_batch()
    out, changes = _applied(PinDims(), m, RewriteContext(input_shapes={"x": [5, 8]}))
    assert [d.dim_value for d in out.graph.input[0].type.tensor_type.shape.dim] == [5, 8]
    assert [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim] == [5, 4]
    assert changes == [Change("x", "input", "dims ['batch', 8] pinned to [5, 8]")]
    _assert_same(m, out, {"x": (5, 8)})


def test_pin_dims_value_info_follows() -> None:
    m = M.resnet_like(batch="B", size=16, width=4, blocks=1)
    out, _ = _applied(PinDims(), m, RewriteContext(input_shapes={"input": [2, 3, 16, 16]}))
    assert out.graph.value_info
    for vi in out.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        assert not any(d.dim_param == "B" for d in dims), vi.name
    _assert_same(m, out, {"input": (2, 3, 16, 16)})


def test_pin_dims_not_applied() -> None:
    _not_applied(PinDims(), M.dynamic_batch())  # no sizes given
    _not_applied(PinDims(), M.add(), RewriteContext(input_shapes={"x": [2, 3]}))  # static
    # a given size that contradicts a static dim, or another input's name, pins nothing
    _not_applied(PinDims(), M.dynamic_batch(), RewriteContext(input_shapes={"x": [5, 7]}))
    _not_applied(PinDims(), M.dynamic_batch(), RewriteContext(input_shapes={"z": [5, 8]}))


# -- unbake_reshape ------------------------------------------------------------------------------
def heads(shape: list[int] | None, via_shape_op: bool = False) -> onnx.ModelProto:
    """x: float32[1,'T',8] split into 2 heads of 4, summed per head: y float32[1,2,'T'].
    ``shape``: the constant Reshape shape ([1,16,2,4] bakes T=16; [0,-1,2,4] is right)."""
    nodes: list[onnx.NodeProto] = []
    inits = []
    if via_shape_op:
        nodes += [helper.make_node("Shape", ["x"], ["sx"], name="sx"),
                  helper.make_node("Slice", ["sx", "z", "two"], ["bt"], name="bt"),
                  helper.make_node("Concat", ["bt", "hd"], ["shape"], axis=0, name="cat")]
        inits += [_i64("z", [0]), _i64("two", [2]), _i64("hd", [2, 4])]
    else:
        inits.append(_i64("shape", shape))
    nodes += [helper.make_node("Reshape", ["x", "shape"], ["r"], name="split_heads"),
              helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3], name="tr"),
              helper.make_node("ReduceSum", ["t", "ax"], ["y"], keepdims=0, name="sum")]
    inits.append(_i64("ax", [3]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "T"])], inits)


def flatten_time(shape: list[int]) -> onnx.ModelProto:
    """x: float32[1,'T',4] -> Reshape(shape) -> Relu: [1,64] bakes T=16 merged with 4."""
    return _model([helper.make_node("Reshape", ["x", "shape"], ["r"], name="flat"),
                   helper.make_node("Relu", ["r"], ["y"], name="relu")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "F"])],
                  [_i64("shape", shape)])


def test_baked_reshapes_names_input_node_and_value() -> None:
    assert baked_reshapes(heads([1, 16, 2, 4])) == [
        BakedDim("x", 1, "T", "split_heads", "shape", 1, 16, 16, 0)]
    merged = baked_reshapes(flatten_time([1, 64]))
    assert merged == [BakedDim("x", 1, "T", "flat", "shape", 1, 64, 16, -1)]
    assert "declared dynamic ('T')" in str(merged[0]) and "bakes 64" in str(merged[0])
    # the traced size split over two entries: reported, but nothing safe to free
    (split,) = baked_reshapes(M.baked_reshape())
    assert (split.node, split.index, split.traced, split.fix) == ("baked", None, 32, None)


@pytest.mark.parametrize("model", [
    heads([0, -1, 2, 4]), heads([1, -1, 2, 4]), heads(None, via_shape_op=True),
    flatten_time([1, -1]), M.add(), M.dynamic_batch(), M.resize_concat(dynamic=True),
], ids=["zero-minus-one", "one-minus-one", "shape-op", "flat-minus-one", "static", "no-reshape",
        "resize"])
def test_baked_reshapes_quiet_on_legit_models(model: onnx.ModelProto) -> None:
    assert baked_reshapes(model) == []
    _not_applied(UnbakeReshape(), model)


def test_unbake_not_applied_when_spread_over_entries() -> None:
    _not_applied(UnbakeReshape(), M.baked_reshape())


@pytest.mark.parametrize("baked,correct,fixed", [
    ([1, 16, 2, 4], [0, -1, 2, 4], [1, 0, 2, 4]),
    ([1, 64], [1, -1], [1, -1]),
], ids=["in-place", "merged"])
def test_unbake_runs_at_other_sizes(baked: list[int], correct: list[int],
                                    fixed: list[int]) -> None:
    build = heads if len(baked) == 4 else flatten_time
    m, right = build(baked), build(correct)
    assert UnbakeReshape.opt_in
    out, changes = _applied(UnbakeReshape(), m)
    shape_in = next(n for n in out.graph.node if n.op_type == "Reshape").input[1]
    shape = numpy_helper.to_array(next(i for i in out.graph.initializer if i.name == shape_in))
    assert shape.tolist() == fixed
    assert changes[0].node in ("split_heads", "flat") and f"{baked} -> {fixed}" in changes[0].what
    width = 8 if build is heads else 4
    for t in (16, 32):
        _assert_same(right, out, {"x": (1, t, width)})
    with pytest.raises(Exception, match="(?i)reshape"):
        _ort(m, _feeds(m, {"x": (1, 32, width)}))  # the baked original fails there
