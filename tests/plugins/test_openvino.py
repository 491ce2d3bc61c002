"""OpenVINO-specific behaviour beyond the shared contract (tests/test_contract.py runs that).

Each test here pins a trap found by running OpenVINO: bf16 by default on this CPU, output
buffers reused across runs, device names that differ from unirt's, engine errors that start with
C++ source locations.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import unirt
from unirt.errors import BackendError, BackendUnavailableError, ShapeLimitError, UnirtError
from unirt.evidence.inputs import make_inputs
from unirt.model.info import read_model
from unirt.plugin.registry import get_registry
from unirt.store.cache import cache_dir
from unirt.testing import models as M
from unirt.testing import run_in_threads


def load(*args, **kwargs) -> unirt.Session:
    """unirt.load without the verification child: these tests look at the engine itself
    (what it compiles, caches, converts); verification has its own tests in test_verify.py."""
    kwargs.setdefault("verify", "never")
    return unirt.load(*args, **kwargs)

ov = pytest.importorskip("openvino", reason="openvino is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is the reference")


@pytest.fixture(autouse=True)
def _need_openvino() -> None:
    status = get_registry().backend("openvino").available()
    if not status.available:
        pytest.skip(f"openvino not available: {status.reason}")


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _custom_op_model() -> onnx.ModelProto:
    """Relu -> my.domain.FooBar -> Abs: a node no OpenVINO frontend can convert."""
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("FooBar", ["r"], ["f"], name="foo", domain="my.domain"),
         helper.make_node("Abs", ["f"], ["y"], name="abs")], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", M.OPSET),
                                            helper.make_opsetid("my.domain", 1)])
    m.ir_version = M.IR_VERSION
    return m


def _typed_outputs_model() -> onnx.ModelProto:
    """One float32 input, outputs of several dtypes (int64 from Shape, float16, int32, bool)."""
    g = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
         helper.make_node("Cast", ["x"], ["half"], to=TensorProto.FLOAT16, name="to_half"),
         helper.make_node("Cast", ["x"], ["i32"], to=TensorProto.INT32, name="to_i32"),
         helper.make_node("Cast", ["x"], ["flag"], to=TensorProto.BOOL, name="to_bool")],
        "typed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["n", 4]),
         helper.make_tensor_value_info("i32", TensorProto.INT32, ["n", 4]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n", 4])])
    return M._model(g)


# -- precision ---------------------------------------------------------------------------------
def test_exact_matches_onnxruntime_on_a_resnet(tmp_path: Path) -> None:
    path = M.save(M.resnet_like(), tmp_path / "resnet.onnx")
    sess = load(path, backend="openvino")
    assert sess.precision == "fp32"
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = sess.run({"input": x})["logits"]
    np.testing.assert_allclose(got, _ort(path, {"input": x})[0], atol=1e-4, rtol=0)


def test_fast_reports_the_engines_own_precision(tmp_path: Path) -> None:
    path = M.save(M.resnet_like(), tmp_path / "resnet.onnx")
    sess = load(path, backend="openvino", precision="fast")
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    assert sess.precision == {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[default]
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = sess.run({"input": x})["logits"]
    # Whatever precision it runs in, it is the same model: close, if not within 1e-4.
    np.testing.assert_allclose(got, _ort(path, {"input": x})[0], atol=0.5)


# -- shapes and dtypes -------------------------------------------------------------------------
def test_dynamic_batch_runs_at_two_sizes_without_reopening(tmp_path: Path) -> None:
    path = M.save(M.resnet_like(batch="N", size=32), tmp_path / "resnet_dyn.onnx")
    sess = load(path, backend="openvino")
    assert sess.inputs[0].shape == ("N", 3, 32, 32)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        got = sess.run({"input": x})["logits"]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, _ort(path, {"input": x})[0], atol=1e-4, rtol=0)


def test_static_shape_models_reject_other_shapes(tmp_path: Path) -> None:
    sess = load(M.save(M.conv_net(), tmp_path / "conv.onnx"), backend="openvino")
    with pytest.raises(UnirtError, match="dimension 2 must be 16"):
        sess.run({"input": np.zeros((1, 3, 32, 32), np.float32)})


def test_output_dtypes_are_what_the_model_declares(tmp_path: Path) -> None:
    sess = load(M.save(_typed_outputs_model(), tmp_path / "typed.onnx"),
                      backend="openvino")
    x = np.array([[-1.0, 2.0, 3.5, 0.0], [1.0, 0.0, 2.0, 4.0]], np.float32)
    out = sess.run({"x": x})
    assert list(out) == ["shape", "half", "i32", "flag"]
    assert {k: v.dtype for k, v in out.items()} == {
        "shape": np.dtype("int64"), "half": np.dtype("float16"),
        "i32": np.dtype("int32"), "flag": np.dtype("bool")}
    np.testing.assert_array_equal(out["shape"], [2, 4])
    np.testing.assert_array_equal(out["flag"], x != 0)


def test_int64_outputs_keep_int64(tmp_path: Path) -> None:
    proto = M.multi_io()
    sess = load(M.save(proto, tmp_path / "multi.onnx"), backend="openvino")
    feeds = make_inputs(sess.inputs, seed=2)
    out = sess.run(feeds)
    assert out["argmax"].dtype == np.int64
    np.testing.assert_array_equal(out["argmax"], M.reference(proto, feeds)["argmax"])


# -- memory ------------------------------------------------------------------------------------
def test_a_run_does_not_overwrite_earlier_results(tmp_path: Path) -> None:
    sess = load(M.save(M.conv_net(), tmp_path / "conv.onnx"), backend="openvino")
    a = make_inputs(sess.inputs, seed=1)
    b = make_inputs(sess.inputs, seed=2)
    first = sess.run(a)["probs"]
    kept = first.copy()
    second = sess.run(b)["probs"]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, kept)
    assert first.flags.writeable and first.flags.owndata  # the caller's own array


def test_inputs_are_left_as_they_were(tmp_path: Path) -> None:
    sess = load(M.save(M.resnet_like(size=32), tmp_path / "r.onnx"), backend="openvino")
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = x.copy()
    sess.run({"input": x})
    np.testing.assert_array_equal(x, before)


# -- caching -----------------------------------------------------------------------------------
def test_second_load_comes_from_the_cache(tmp_path: Path) -> None:
    path = M.save(M.resnet_like(size=32), tmp_path / "r.onnx")
    cache = cache_dir() / "openvino"
    assert not cache.exists() or not any(cache.iterdir())
    first = load(path, backend="openvino")
    files = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    assert files, "compiling wrote nothing to the cache"
    assert Path(first.details["cache_dir"]).parent == cache
    assert first.details.get("loaded_from_cache") is False
    second = load(path, backend="openvino")
    assert second.details.get("loaded_from_cache") is True
    assert sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file()) == files
    x = np.ones((1, 3, 32, 32), np.float32)
    np.testing.assert_array_equal(first.run({"input": x})["logits"],
                                  second.run({"input": x})["logits"])


def test_a_model_rewritten_in_place_does_not_load_the_old_blob(tmp_path: Path) -> None:
    # OpenVINO alone keys a path on (path, size, mtime): same-size weights with the mtime put
    # back would load the first model's compiled blob and give its numbers.
    path = tmp_path / "fc.onnx"
    first = M.dynamic_batch()
    second = M.dynamic_batch()
    w = onnx.numpy_helper.to_array(second.graph.initializer[0]) * 2
    second.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "W"))
    M.save(first, path)
    stat = path.stat()
    x = np.ones((2, 8), np.float32)
    y_first = load(path, backend="openvino").run({"x": x})["y"]
    M.save(second, path)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    sess = load(path, backend="openvino")
    assert sess.details["loaded_from_cache"] is False
    y_second = sess.run({"x": x})["y"]
    np.testing.assert_allclose(y_second, M.reference(second, {"x": x})["y"], atol=1e-5)
    assert not np.allclose(y_first, y_second)


def test_cache_can_be_turned_off(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    sess = load(path, backend="openvino", options={"openvino": {"cache": False}})
    assert sess.details["cache_dir"] is None
    cache = cache_dir() / "openvino"
    assert not cache.exists() or not any(cache.iterdir())


# -- options -----------------------------------------------------------------------------------
def test_unknown_option_lists_the_known_ones(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    with pytest.raises(UnirtError, match=r"unknown openvino option 'bogus'; known: device, "
                                         r"performance_hint"):
        load(path, backend="openvino", options={"openvino": {"bogus": 1}})
    with pytest.raises(UnirtError, match="performance_hint must be one of LATENCY"):
        load(path, backend="openvino", options={"openvino": {"performance_hint": "FAST"}})


def test_threads_and_performance_hint_reach_the_engine(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    sess = load(path, backend="openvino", threads=1,
                      options={"openvino": {"performance_hint": "throughput"}})
    assert sess.details["threads"] == 1
    assert sess.details["performance_hint"] == "THROUGHPUT"
    assert load(path, backend="openvino").details["performance_hint"] == "LATENCY"


def test_missing_devices_are_clear_errors(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    present = ov.Core().available_devices
    if not any(d.startswith("GPU") for d in present):
        with pytest.raises(BackendUnavailableError, match=r"openvino: device GPU is not "
                                                          r"available.*OpenVINO sees: CPU"):
            load(path, backend="openvino", options={"openvino": {"device": "GPU"}})
        with pytest.raises(BackendUnavailableError, match="device GPU is not available"):
            load(path, backend="openvino", device="gpu")
    with pytest.raises(BackendUnavailableError, match="device NOSUCH is not available"):
        load(path, backend="openvino", options={"openvino": {"device": "nosuch"}})
    with pytest.raises(BackendUnavailableError, match=r"openvino cannot run on 'cuda': "
                                                      r"OpenVINO's GPU device is an Intel GPU"):
        load(path, backend="openvino", device="cuda")


def test_device_names_are_accepted_as_openvino_spells_them(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    for device in ("cpu", "AUTO", "AUTO:CPU"):
        sess = load(path, backend="openvino", options={"openvino": {"device": device}})
        assert sess.details["device"] == device.upper()
        assert sess.details["execution_devices"] == ["CPU"]
        np.testing.assert_allclose(sess(np.array([[-1, 1, 2, 3]], np.float32)), [[0, 2, 4, 6]])


# -- engine errors and query_model -------------------------------------------------------------
def test_engine_errors_name_backend_model_and_cause(tmp_path: Path) -> None:
    path = M.save(_custom_op_model(), tmp_path / "custom.onnx")
    with pytest.raises(BackendError, match=r"openvino cannot run custom.onnx: node 'foo' "
                                           r"\(my.domain::FooBar\): custom domain"):
        load(path, backend="openvino")  # the capability check refuses it before the engine
    from unirt.model.info import read_model
    from unirt.plugin.registry import get_registry

    with pytest.raises(BackendError) as info:  # and the engine itself, asked directly
        get_registry().backend("openvino").open(read_model(path))
    message = str(info.value)
    assert "openvino" in message and "custom.onnx" in message
    assert "my.domain.FooBar" in message
    assert "Exception from" not in message  # OpenVINO's C++ source locations are dropped


def test_run_errors_are_clean(tmp_path: Path) -> None:
    # Reshape to a dynamic target that cannot hold the data: only the run can find out.
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")], "bad_reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    sess = load(M.save(M._model(g), tmp_path / "reshape.onnx"), backend="openvino")
    with pytest.raises(BackendError) as info:
        sess.run({"x": np.zeros(5, np.float32), "shape": np.array([2, 2], np.int64)})
    message = str(info.value)
    assert message.startswith("openvino failed running reshape.onnx: ")
    assert "Exception from" not in message


def test_query_supported_model_is_empty(tmp_path: Path) -> None:
    be = get_registry().backend("openvino")
    assert be.query(read_model(M.save(M.resnet_like(), tmp_path / "r.onnx"))) == set()
    assert be.query(read_model(M.multi_io())) == set()


@pytest.mark.parametrize("as_bytes", [False, True], ids=["file", "bytes"])
def test_query_names_the_onnx_nodes_it_cannot_convert(tmp_path: Path, as_bytes: bool) -> None:
    proto = _custom_op_model()
    source = proto.SerializeToString() if as_bytes else M.save(proto, tmp_path / "c.onnx")
    assert get_registry().backend("openvino").query(read_model(source)) == {"foo"}


def test_openvino_operations_map_back_to_onnx_nodes(tmp_path: Path) -> None:
    from unirt_openvino._nodes import onnx_node_names

    path = M.save(M.multi_io(), tmp_path / "multi.onnx")
    ops = ov.Core().read_model(str(path)).get_ordered_ops()
    by_type = {op.get_type_name(): op for op in ops}
    info = read_model(path)
    # ArgMax becomes TopK + Squeeze; the TopK carries no ONNX name or tensor name of its own.
    assert onnx_node_names([by_type["TopK"]], info) == {"argmax"}
    assert onnx_node_names([by_type["ReduceMean"]], info) == {"mean"}
    assert onnx_node_names([by_type["Unsqueeze"], by_type["Add"]], info) == {"unsq", "add"}


def test_inputs_openvino_drops_are_still_accepted(tmp_path: Path) -> None:
    # The ONNX frontend removes a graph input no node reads; the user still feeds it.
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "unused_input",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    sess = load(M.save(M._model(g), tmp_path / "unused.onnx"), backend="openvino")
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    out = sess.run({"x": x, "unused": np.zeros((1, 2), np.float32)})
    np.testing.assert_array_equal(out["y"], np.maximum(x, 0))


def test_threads_running_different_batch_sizes_at_once(tmp_path: Path) -> None:
    proto = M.dynamic_batch()
    sess = load(M.save(proto, tmp_path / "fc.onnx"), backend="openvino")
    feeds = [{"x": np.random.default_rng(i).standard_normal((i + 1, 8)).astype(np.float32)}
             for i in range(4)]
    expected = [M.reference(proto, f)["y"] for f in feeds]

    def worker(i: int) -> None:
        for _ in range(20):
            np.testing.assert_allclose(sess.run(feeds[i])["y"], expected[i], atol=1e-5)

    run_in_threads(worker)


# -- static rules (check) ----------------------------------------------------------------------
def _container_model(which: str) -> onnx.ModelProto:
    """A graph taking a sequence, returning a sequence, or taking an optional."""
    f2 = helper.make_tensor_value_info
    if which == "sequence input":
        seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
        g = helper.make_graph([helper.make_node("SequenceAt", ["s", "i"], ["y"], name="at")],
                              "g", [seq, f2("i", TensorProto.INT64, [])],
                              [f2("y", TensorProto.FLOAT, [2])])
    elif which == "sequence output":
        seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
        g = helper.make_graph([helper.make_node("SequenceConstruct", ["x", "x"], ["s"],
                                                name="mk")],
                              "g", [f2("x", TensorProto.FLOAT, [2])], [seq])
    else:
        opt = helper.make_value_info("s", helper.make_optional_type_proto(
            helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))
        g = helper.make_graph([helper.make_node("OptionalGetElement", ["s"], ["y"], name="get")],
                              "g", [opt], [f2("y", TensorProto.FLOAT, [2])])
    return M._model(g, opset=18)


@pytest.mark.parametrize("which, expected", [
    ("sequence input", "input 's' is a sequence"),
    ("sequence output", "output 's' is a sequence"),
    ("optional input", "input 's' is an optional"),
])
def test_check_refuses_sequences_and_optionals(which: str, expected: str) -> None:
    from unirt.capability.verdict import UNSUPPORTED

    verdict = get_registry().backend("openvino").check(read_model(_container_model(which)))
    assert verdict.status == UNSUPPORTED
    [reason] = [r for r in verdict.reasons if r.kind == "input"]
    assert reason.verdict == UNSUPPORTED
    assert expected in reason.message and "cannot be fed sequences or optionals" in reason.message


@pytest.mark.parametrize("which", ["sequence input", "sequence output", "optional input"])
def test_open_refuses_sequences_and_optionals_as_check_does(which: str) -> None:
    backend = get_registry().backend("openvino")
    info = read_model(_container_model(which))
    [reason] = [r for r in backend.check(info).reasons if r.kind == "input"]
    with pytest.raises(BackendError) as refused:
        backend.open(info)
    assert str(refused.value) == f"openvino cannot run {info.name}: {reason.message}"


def test_check_rules_leave_tensor_models_alone() -> None:
    from unirt.capability.verdict import SUPPORTED

    backend = get_registry().backend("openvino")
    for proto in (M.tiny(), M.dynamic_batch()):
        verdict = backend.check(read_model(proto))
        assert verdict.prediction == SUPPORTED and verdict.reasons == []
    assert backend.rules(read_model(M.multi_io())) == []


def test_pass_through_graph_feeds_its_input(tmp_path: Path) -> None:
    """A lone Dropout becomes Parameter -> Result, whose port is named after the output: the
    input must still be fed (by position), or OpenVINO returns uninitialised memory."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Dropout", ["x"], ["y"], name="drop")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
    proto.ir_version = 10
    from unirt.model.info import read_model
    from unirt.plugin.registry import get_registry

    sess = get_registry().backend("openvino").open(read_model(proto))
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(sess.run({"x": x}, ["y"])[0], x)


# -- a refused run must not spoil the next one ---------------------------------------------------
def _pool_model() -> onnx.ModelProto:
    """AveragePool with a 3x2 kernel, then Relu, on [N, 2, H, W]: OpenVINO's shape inference
    refuses H < 3 (the kernel is larger than the data), as on the PP-OCR recognizer at height 32.
    On 2026.4.1 (CPU, more than one thread) the compiled model keeps the refused call's dims:
    the next run at H=3, which ran fine before, is refused with ``(dim: 2)`` in the message, on
    every try; on the real recognizer a good shape after a refused one came back all-NaN in about
    half of fresh processes, and a fresh InferRequest did not help."""
    g = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], name="pool", kernel_shape=[3, 2],
                          strides=[3, 2]),
         helper.make_node("Relu", ["p"], ["y"], name="relu")], "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "h", "w"])])
    return M._model(g)


def _pool_feeds(height: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(height)
    return {"x": rng.standard_normal((1, 2, height, 4)).astype(np.float32)}


def _expected_pool(feeds: dict[str, np.ndarray]) -> np.ndarray:
    x = feeds["x"]
    h, w = x.shape[2] // 3, x.shape[3] // 2
    pooled = x[:, :, :h * 3, :w * 2].reshape(1, 2, h, 3, w, 2).mean(axis=(3, 5))
    return np.maximum(pooled, 0)


def test_a_refused_shape_is_a_shape_limit_and_spoils_no_later_run(tmp_path: Path) -> None:
    sess = load(M.save(_pool_model(), tmp_path / "pool.onnx"), backend="openvino")
    good, bad = _pool_feeds(3), _pool_feeds(2)
    np.testing.assert_allclose(sess.run(good)["y"], _expected_pool(good), atol=1e-5)
    for _ in range(2):
        with pytest.raises(ShapeLimitError, match="openvino failed running pool.onnx: .*"
                                                  "larger than the data shape"):
            sess.run(bad)
        # Without a new compiled model this run is refused too, quoting the refused dims.
        np.testing.assert_allclose(sess.run(good)["y"], _expected_pool(good), atol=1e-5)
        taller = _pool_feeds(6)
        np.testing.assert_allclose(sess.run(taller)["y"], _expected_pool(taller), atol=1e-5)
    assert sess._impl.reopened == 2


def test_a_refused_shape_spoils_no_other_thread(tmp_path: Path) -> None:
    """A thread that made its request before another thread's run was refused gets a request
    on the new compiled model: the old one is shared by every request made on it."""
    import threading

    sess = load(M.save(_pool_model(), tmp_path / "pool.onnx"), backend="openvino")
    good = _pool_feeds(3)
    ran, refused, results = threading.Event(), threading.Event(), []

    def other() -> None:
        results.append(sess.run(good)["y"])
        ran.set()
        refused.wait(60)
        results.append(sess.run(good)["y"])

    thread = threading.Thread(target=other)
    thread.start()
    assert ran.wait(60)
    with pytest.raises(ShapeLimitError):
        sess.run(_pool_feeds(2))
    refused.set()
    thread.join(60)
    assert len(results) == 2
    for got in results:
        np.testing.assert_allclose(got, _expected_pool(good), atol=1e-5)


def test_when_compiling_again_fails_the_next_run_compiles(tmp_path: Path) -> None:
    sess = load(M.save(_pool_model(), tmp_path / "pool.onnx"), backend="openvino")
    impl = sess._impl
    real, calls = impl._reopen, []

    def flaky(old):
        calls.append(old is not None)
        if old is not None:
            raise RuntimeError("Exception from src/x.cpp:1:\nno memory left")
        return real(old)

    impl._reopen = flaky
    good = _pool_feeds(3)
    sess.run(good)
    with pytest.raises(ShapeLimitError):
        sess.run(_pool_feeds(2))
    assert calls == [True] and impl._compiled is None
    np.testing.assert_allclose(sess.run(good)["y"], _expected_pool(good), atol=1e-5)
    assert calls == [True, False]


def test_closed_session_runs_no_more(tmp_path: Path) -> None:
    be = get_registry().backend("openvino")
    impl = be.open(read_model(M.save(_pool_model(), tmp_path / "pool.onnx")))
    impl.close()
    with pytest.raises(BackendError, match="closed"):
        impl.run(_pool_feeds(3), ["y"])
