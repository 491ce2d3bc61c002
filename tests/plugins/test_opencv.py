"""The OpenCV DNN backend: what the contract kit does not cover.

Each test exists because OpenCV 5.0 was seen doing the thing it guards against: returning
``None`` for an empty output, float32 for float16, raw uint16 for bf16, wrapping int64 feeds to
32 bits, crashing on a zero-size input, or reporting outputs in its own order.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import unirt
from unirt.errors import BackendError, BackendUnavailableError, UnirtError
from unirt.evidence.inputs import make_inputs
from unirt.plugin.registry import get_registry
from unirt.tensor import TensorInfo
from unirt.testing import models as M
from unirt.testing import run_in_threads

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cv2") is None,
                                reason="cv2 (opencv-python-headless) is not installed")

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
V = helper.make_tensor_value_info


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any],
           inits: list[Any] | None = None, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="test_opencv")
    m.ir_version = 8
    return m


@pytest.fixture
def load(open_saved: Any) -> Any:
    """``load(proto, **kw)``: save the model and open it on ``opencv``; closes what it opened."""
    def _load(proto: onnx.ModelProto, name: str = "model", **kw: Any) -> unirt.Session:
        return open_saved("opencv", proto, name, **kw)[0]

    return _load


def _ort(proto_or_path: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    src = proto_or_path if isinstance(proto_or_path, (str, Path)) else \
        proto_or_path.SerializeToString()
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src,
                                providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


# -- availability and description ---------------------------------------------------------------
def test_availability_reports_version_devices_and_hint() -> None:
    import cv2

    backend = get_registry().backend("opencv")
    status = backend.available()
    assert status.available
    assert status.version == cv2.__version__
    assert status.devices[0] == "cpu"
    assert backend.install_hint == 'pip install "unirt[opencv]"'
    assert (backend.device_class, backend.default_rank) == ("cpu", 60)


def test_details_say_engine_target_and_build_capabilities(load) -> None:
    sess = load(M.conv_net())
    d = sess.details
    assert d["engine"] == "new"
    assert (d["dnn_backend"], d["dnn_target"]) == ("opencv", "cpu")
    assert "cpu" in d["available_dnn_targets"]["opencv"]
    assert isinstance(d["cuda"], bool)
    assert sess.precision == "fp32"


# -- numbers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["auto", "classic"])
def test_resnet_like_matches_onnxruntime_exactly(load, engine: str) -> None:
    proto = M.resnet_like()
    sess = load(proto, options={"opencv": {"engine": engine}})
    assert sess.precision == "fp32"
    feeds = make_inputs(sess.inputs, seed=11)
    got, want = sess.run(feeds), _ort(proto, feeds)
    assert list(got) == ["logits"]
    assert got["logits"].dtype == np.float32 and got["logits"].shape == (1, 10)
    np.testing.assert_allclose(got["logits"], want["logits"], atol=1e-4, rtol=0)


def test_light_resnet50_matches_onnxruntime() -> None:
    path = LIGHT / "light_resnet50.onnx"
    if not path.exists():
        pytest.skip("the onnx wheel ships no light_resnet50.onnx")
    with unirt.load(path, backend="opencv") as sess:  # IR 3: initializers listed as inputs
        assert [t.name for t in sess.inputs] == ["gpu_0/data_0"]
        feeds = make_inputs(sess.inputs, seed=2)
        got = sess.run(feeds)
    want = _ort(path, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0)


def test_multi_output_names_order_and_dtypes(load) -> None:
    proto = M.multi_io()
    sess = load(proto)
    feeds = make_inputs(sess.inputs, seed=1)
    got = sess.run(feeds)
    want = M.reference(proto, feeds)
    assert list(got) == ["sum", "pooled", "argmax"]
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], atol=1e-5)
    sub = sess.run(feeds, outputs=["argmax", "sum"])
    assert list(sub) == ["argmax", "sum"] and sub["argmax"].dtype == np.int64


def test_classic_engine_outputs_come_back_in_model_order(load) -> None:
    # The classic engine reports TopK's outputs as ("i", "v"): its own order, not the model's.
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    proto = _model([helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)],
                   [V("x", TensorProto.FLOAT, [2, 6])],
                   [V("v", TensorProto.FLOAT, [2, 2]), V("i", TensorProto.INT64, [2, 2])], [k])
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    for engine in ("new", "classic"):
        got = load(proto, name=engine, options={"opencv": {"engine": engine}}).run({"x": x})
        assert list(got) == ["v", "i"]
        assert got["i"].dtype == np.int64
        np.testing.assert_array_equal(got["i"], np.argsort(-x, axis=1)[:, :2])
        np.testing.assert_allclose(got["v"], -np.sort(-x, axis=1)[:, :2])


def test_classic_engine_refuses_a_constant_output_at_open(load) -> None:
    c = helper.make_tensor("c", TensorProto.FLOAT, [2], [1.0, 2.0])
    proto = _model([helper.make_node("Relu", ["x"], ["r"]),
                    helper.make_node("Constant", [], ["cc"], value=c)],
                   [V("x", TensorProto.FLOAT, [2, 3])],
                   [V("r", TensorProto.FLOAT, [2, 3]), V("cc", TensorProto.FLOAT, [2])])
    with pytest.raises(BackendError, match=r"opencv.*no blob for output 'cc'"):
        load(proto, options={"opencv": {"engine": "classic"}})
    got = load(proto, name="new").run({"x": np.ones((2, 3), np.float32)})  # new engine: fine
    np.testing.assert_array_equal(got["cc"], [1.0, 2.0])


def test_in_memory_model_loads() -> None:
    with unirt.load(M.conv_net().SerializeToString(), backend="opencv") as sess:
        assert sess.run(make_inputs(sess.inputs, seed=0))["probs"].shape == (1, 10)


# -- outputs OpenCV gives in another form -------------------------------------------------------
def test_empty_output_is_an_empty_array_of_the_declared_shape(load) -> None:
    ints = [numpy_helper.from_array(np.array([v], np.int64), n)
            for n, v in (("st", 2), ("en", 2), ("ax", 1))]
    proto = _model([helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"]),
                    helper.make_node("Relu", ["x"], ["r"])],
                   [V("x", TensorProto.FLOAT, ["n", 3])],
                   [V("y", TensorProto.FLOAT, ["n", 0]), V("r", TensorProto.FLOAT, ["n", 3])],
                   ints)
    sess = load(proto)
    got = sess.run({"x": np.ones((4, 3), np.float32)})
    assert got["y"].shape == (4, 0) and got["y"].dtype == np.float32
    np.testing.assert_array_equal(got["r"], np.ones((4, 3)))


def test_float16_and_bfloat16_outputs_keep_their_declared_dtype(load) -> None:
    proto = _model([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
                    helper.make_node("Cast", ["x"], ["b"], to=TensorProto.BFLOAT16)],
                   [V("x", TensorProto.FLOAT, [1, 3])],
                   [V("h", TensorProto.FLOAT16, [1, 3]), V("b", TensorProto.BFLOAT16, [1, 3])])
    x = np.array([[1.0, -2.5, 3.14159]], np.float32)
    got = load(proto).run({"x": x})
    assert got["h"].dtype == np.float16
    np.testing.assert_array_equal(got["h"], x.astype(np.float16))
    assert got["b"].dtype.name == "bfloat16"
    np.testing.assert_allclose(got["b"].astype(np.float32), x, rtol=1e-2)


def test_float16_inputs_compute_correctly(load) -> None:
    proto = _model([helper.make_node("Add", ["x", "x"], ["y"])],
                   [V("x", TensorProto.FLOAT16, [2, 3])], [V("y", TensorProto.FLOAT16, [2, 3])])
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float16)
    got = load(proto).run({"x": x})
    assert got["y"].dtype == np.float16
    np.testing.assert_array_equal(got["y"], x + x)


# -- inputs OpenCV cannot take ------------------------------------------------------------------
@pytest.mark.parametrize("elem, why", [
    (TensorProto.STRING, r"input 'x' is a string tensor: OpenCV DNN has no string tensors"),
    (TensorProto.BFLOAT16, r"input 'x' is bfloat16, which OpenCV's numpy binding cannot take"),
    (TensorProto.FLOAT8E4M3FN, r"input 'x' is float8_e4m3fn"),
    (TensorProto.INT4, r"input 'x' is int4"),
    (TensorProto.COMPLEX64, r"input 'x' is complex64"),
], ids=["string", "bf16", "float8", "int4", "complex"])
def test_unsupported_input_dtypes_are_refused_at_open(load, elem: int, why: str) -> None:
    proto = _model([helper.make_node("Identity", ["x"], ["y"])],
                   [V("x", elem, [2])], [V("y", elem, [2])], opset=21)
    with pytest.raises(BackendError, match=r"^opencv cannot run model\.onnx: " + why):
        load(proto)


def test_sequence_input_is_refused_at_open(load) -> None:
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    proto = _model([helper.make_node("SequenceAt", ["s", "i"], ["y"])],
                   [seq, V("i", TensorProto.INT64, [])], [V("y", TensorProto.FLOAT, [2])])
    with pytest.raises(BackendError, match=r"input 's' is not a tensor"):
        load(proto)


def test_int64_feeds_outside_int32_are_refused_not_wrapped(load) -> None:
    proto = _model([helper.make_node("Add", ["x", "x"], ["y"])],
                   [V("x", TensorProto.INT64, [1, 3])], [V("y", TensorProto.INT64, [1, 3])])
    sess = load(proto)
    ok = np.array([[-(2**31), 2**31 - 1, 7]], np.int64)
    np.testing.assert_array_equal(sess.run({"x": ok})["y"], ok * 2)  # computed in 64 bits
    with pytest.raises(BackendError, match=r"input 'x' has int64 values outside the int32 range"):
        sess.run({"x": np.array([[2**40, 0, 0]], np.int64)})


def test_zero_size_input_is_refused_instead_of_crashing(load) -> None:
    # The new engine dies with SIGFPE on a batch of 0 through a Conv.
    sess = load(M.conv_net(batch="N"))
    with pytest.raises(BackendError, match=r"empty input 'input'"):
        sess.run({"input": np.zeros((0, 3, 16, 16), np.float32)})
    assert sess.run({"input": np.ones((2, 3, 16, 16), np.float32)})["probs"].shape == (2, 10)


# -- options and precision ----------------------------------------------------------------------
@pytest.mark.parametrize("opts, error, match", [
    ({"bogus": 1}, UnirtError, r"unknown opencv option 'bogus'; known: engine, backend, target"),
    ({"engine": "turbo"}, UnirtError, r"engine must be one of auto, new, classic"),
    ({"target": "tpu"}, UnirtError, r"target must be one of cpu, cpu_fp16"),
    ({"backend": "vulkan"}, UnirtError, r"backend must be one of opencv, cuda, openvino"),
    ({"target": "cpu_fp16"}, UnirtError, r"computes in fp16, but precision='exact'"),
    ({"backend": "openvino"}, UnirtError, r"precision='exact' cannot pin"),
], ids=["unknown-key", "engine", "target", "backend", "fp16-exact", "openvino-exact"])
def test_option_errors(load, opts: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load(M.tiny(), options={"opencv": opts})


def test_targets_missing_from_the_build_are_unavailable(load) -> None:
    import cv2

    if cv2.dnn.getAvailableTargets(cv2.dnn.DNN_BACKEND_CUDA):
        pytest.skip("this OpenCV build has CUDA")
    with pytest.raises(BackendUnavailableError, match=r"'cuda'.*not available.*opencv: cpu"):
        load(M.tiny(), options={"opencv": {"target": "cuda"}})
    with pytest.raises(UnirtError, match=r"needs the classic engine"):
        load(M.tiny(), options={"opencv": {"engine": "new", "target": "cpu_fp16"}},
             precision="fast")


def test_fast_precision_reports_what_it_computes_in(load) -> None:
    import cv2

    sess = load(M.conv_net(), precision="fast")
    if cv2.dnn.DNN_TARGET_CPU_FP16 in cv2.dnn.getAvailableTargets(cv2.dnn.DNN_BACKEND_OPENCV):
        assert sess.precision == "fp16" and sess.details["dnn_target"] == "cpu_fp16"
    else:
        assert sess.precision == "fp32" and "precision_note" in sess.details


def test_auto_engine_falls_back_to_classic_and_says_why(load, monkeypatch) -> None:
    import cv2
    from unirt_opencv import _backend

    real = _backend.read_net

    def refuse_new(cv: Any, data: Any, attempt: Any, has_engines: bool) -> Any:
        if attempt.engine == "new":
            raise cv2.error("OpenCV(5.0.0) /io/x.cpp:1: error: (-2:Unspecified error) "
                            "in function 'f'\n> Node [Foo@ai.onnx]: unsupported\n")
        return real(cv, data, attempt, has_engines)

    monkeypatch.setattr(_backend, "read_net", refuse_new)
    sess = load(M.conv_net())
    assert sess.details["engine"] == "classic"
    assert sess.details["fallback"] == "new engine: Node [Foo@ai.onnx]: unsupported"
    assert sess.run(make_inputs(sess.inputs, seed=0))["probs"].shape == (1, 10)


# -- engine errors ------------------------------------------------------------------------------
def test_load_errors_name_backend_model_and_opencvs_reason(load) -> None:
    with pytest.raises(BackendError) as info:
        load(M.multi_io(), name="mio", options={"opencv": {"engine": "classic"}})
    text = str(info.value)
    assert text.startswith("opencv could not open mio.onnx: classic engine: Node [Unsqueeze")
    assert "Multidimensional unsqueeze" in text
    assert "/io/opencv" not in text and "in function" not in text


def test_engine_message_keeps_the_useful_part() -> None:
    from unirt_opencv import engine_message

    class Err(Exception):
        pass

    assert engine_message(Err(
        "OpenCV(5.0.0) /io/opencv/modules/dnn/src/net_impl.cpp:626: error: (-215:Assertion "
        "failed) inp.total() in function 'allocateLayers'\n")) == "Assertion failed: inp.total()"
    assert engine_message(Err("")) == "Err"


# -- concurrency --------------------------------------------------------------------------------
def test_concurrent_runs_on_one_session(load) -> None:
    proto = M.multi_io()
    sess = load(proto)
    feeds = [make_inputs(sess.inputs, seed=s) for s in range(4)]
    expected = [M.reference(proto, f) for f in feeds]

    def worker(i: int) -> None:
        for _ in range(25):
            got = sess.run(feeds[i])
            for name, want in expected[i].items():
                np.testing.assert_allclose(got[name], want, atol=1e-5)

    run_in_threads(worker)


# -- conforming outputs (the helper the ncnn backend will need too) ------------------------------
def test_conform_reshapes_casts_and_refuses() -> None:
    from unirt.plugin.conform import conform

    f32 = np.dtype("float32")
    info = TensorInfo("y", ("batch", 4), f32)
    out = conform(np.arange(8, dtype=np.float32), info, {"batch": 2}, "t")
    assert out.shape == (2, 4)
    assert conform(np.arange(12, dtype=np.float32), info, {}, "t").shape == (3, 4)
    with pytest.raises(BackendError, match=r"t: the engine returned shape \[7\]"):
        conform(np.arange(7, dtype=np.float32), info, {}, "t")
    i64 = TensorInfo("i", (3,), np.dtype("int64"))
    assert conform(np.array([1, 2, 3], np.int32), i64, {}, "t").dtype == np.int64
    i8 = TensorInfo("i", (2,), np.dtype("int8"))
    with pytest.raises(BackendError, match=r"outside the range of the declared int8"):
        conform(np.array([1, 300], np.int32), i8, {}, "t")
    with pytest.raises(BackendError, match=r"non-integer"):
        conform(np.array([1.5, 2.0], np.float32), i64.__class__("i", (2,), np.dtype("int64")),
                {}, "t")
    empty = conform(None, TensorInfo("e", ("n", 3), f32), {}, "t")
    assert empty.shape == (0, 3) and empty.dtype == f32
    with pytest.raises(BackendError, match=r"cannot be told"):
        conform(None, TensorInfo("e", ("n", "m"), f32), {}, "t")


def test_classic_engine_int32_results_come_back_as_declared_int64(load) -> None:
    # The classic engine returns an int64 Identity as int32.
    proto = _model([helper.make_node("Identity", ["x"], ["y"])],
                   [V("x", TensorProto.INT64, [1, 3])], [V("y", TensorProto.INT64, [1, 3])])
    x = np.array([[-5, 0, 2**31 - 1]], np.int64)
    got = load(proto, options={"opencv": {"engine": "classic"}}).run({"x": x})
    assert got["y"].dtype == np.int64
    np.testing.assert_array_equal(got["y"], x)


def test_threads_option_sets_opencvs_thread_count(load) -> None:
    import cv2

    before = cv2.getNumThreads()
    try:
        sess = load(M.tiny(), threads=1)
        assert sess.details["threads"] == 1
    finally:
        cv2.setNumThreads(before)


def test_static_check_names_the_inputs_open_would_refuse() -> None:
    from unirt.model.info import read_model

    proto = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                   [V("x", TensorProto.BFLOAT16, [2])], [V("y", TensorProto.FLOAT, [2])])
    reasons = get_registry().backend("opencv").rules(read_model(proto))
    assert [r.message for r in reasons] == [
        "input 'x' is bfloat16, which OpenCV's numpy binding cannot take (it takes bool, "
        "float16, float32, float64, int16, int32, int64, int8, uint16, uint32, uint64, uint8)"]
    verdict = get_registry().backend("opencv").check(read_model(proto))
    assert not verdict.supported
    assert any("input 'x' is bfloat16" in str(r) for r in verdict.reasons)


# -- static rules (check) -----------------------------------------------------------------------
def _rule_reasons(proto: onnx.ModelProto) -> tuple[str, list[Any]]:
    """(the table's prediction, reasons) of ``check`` on ``proto``, as routing sees it (a
    decisive rule makes the status UNSUPPORTED too)."""
    from unirt.model.info import read_model

    verdict = get_registry().backend("opencv").check(read_model(proto))
    if verdict.prediction == "UNSUPPORTED" and verdict.decisive:
        assert verdict.status == verdict.prediction
    return verdict.prediction, verdict.reasons


def test_check_refuses_sequence_input_and_string_output_naming_them() -> None:
    from unirt.capability.verdict import UNSUPPORTED

    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    proto = _model([helper.make_node("SequenceAt", ["s", "i"], ["y"], name="at"),
                    helper.make_node("Cast", ["y"], ["txt"], name="to_str", to=TensorProto.STRING)],
                   [seq, V("i", TensorProto.INT64, [])], [V("txt", TensorProto.STRING, [2])])
    status, reasons = _rule_reasons(proto)
    assert status == UNSUPPORTED
    assert any(r.kind == "input" and "input 's' is not a tensor" in r.message
               and r.verdict == UNSUPPORTED for r in reasons)
    assert any(r.kind == "dtype" and "output 'txt' is a string tensor" in r.message
               for r in reasons)


def test_check_rules_leave_a_plain_float_model_alone() -> None:
    from unirt.capability.verdict import SUPPORTED

    status, reasons = _rule_reasons(M.conv_net(batch="N"))  # dynamic batch: no rule either
    assert status == SUPPORTED and reasons == []


def test_3d_pool_with_a_unit_kernel_axis_is_not_refused_and_runs(load) -> None:
    """Measured on OpenCV 5.0.0 (both engines): MaxPool3d/AvgPool3d((1,2,2)) runs and matches
    ONNX Runtime, so no rule refuses it (it was reported to fail in getMemoryShapes)."""
    from unirt.capability.verdict import UNSUPPORTED

    for op in ("MaxPool", "AveragePool"):
        proto = _model([helper.make_node(op, ["x"], ["y"], name="pool3d", kernel_shape=[1, 2, 2],
                                         strides=[1, 2, 2], pads=[0, 0, 0, 0, 0, 0])],
                       [V("x", TensorProto.FLOAT, [1, 2, 4, 8, 8])],
                       [V("y", TensorProto.FLOAT, [1, 2, 4, 4, 4])])
        status, reasons = _rule_reasons(proto)
        assert status != UNSUPPORTED, reasons
        x = np.random.default_rng(0).standard_normal((1, 2, 4, 8, 8)).astype(np.float32)
        out = load(proto, name=op).run({"x": x})["y"]
        np.testing.assert_allclose(out, _ort(proto, {"x": x})["y"], atol=1e-5)


def test_classic_engine_gets_a_net_per_input_shape(tmp_path: Path) -> None:
    """The classic engine returns wrong numbers after an input-shape change (measured on
    OpenCV 5.0.0); unirt gives each shape its own Net, so every shape matches the reference."""
    path = M.save(M.resnet_like(batch="N", size=32), tmp_path / "dyn.onnx")
    sess = unirt.load(path, backend="opencv", verify="never",
                      options={"opencv": {"engine": "classic"}})
    ref = unirt.load(path, backend="onnxruntime")
    rng = np.random.default_rng(0)
    for batch in (1, 2, 1, 3):
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        np.testing.assert_allclose(sess(x), ref(x), atol=1e-4, err_msg=f"batch {batch}")
    assert sess.details["nets_per_shape"] == 3
