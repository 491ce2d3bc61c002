"""ONNX Runtime's IO binding (plugins/unirt_onnxruntime/_binding.py), the CUDA backend's run path,
exercised on the CPU provider: the contract kit through it, buffers reused while shapes stay,
the caller's arrays and earlier results untouched, and the plain run where binding cannot hold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper
from unirt_onnxruntime import OnnxRuntimeBackend, OnnxRuntimeCudaBackend, OrtSession

import unirt
from unirt.errors import UnirtError
from unirt.model.info import read_model
from unirt.plugin.backend import OpenOptions
from unirt.plugin.registry import get_registry
from unirt.testing import models as M
from unirt.testing.contract import BackendContract


@pytest.fixture
def bind_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test-only switch: the CPU backend runs through IO binding as the CUDA one does."""
    monkeypatch.setattr(OnnxRuntimeBackend, "bind_device", "cpu")


class TestContractThroughIoBinding(BackendContract):
    @pytest.fixture
    def backend_name(self, bind_on_cpu: None) -> str:
        return "onnxruntime"


def open_bound(proto: Any, tmp_path: Path) -> OrtSession:
    path = M.save(proto, tmp_path / "m.onnx")
    impl = get_registry().backend("onnxruntime").open(read_model(path), OpenOptions())
    assert isinstance(impl, OrtSession)
    return impl


def test_the_cuda_backend_binds_and_the_cpu_one_does_not() -> None:
    assert OnnxRuntimeCudaBackend.bind_device == "cuda:0"
    assert OnnxRuntimeBackend.bind_device is None
    cuda = OnnxRuntimeCudaBackend()
    assert cuda._bind_device({"device_id": 1}) == "cuda:1"
    assert cuda._bind_device({}) == "cuda:0"
    with pytest.raises(UnirtError, match="device_id must be an integer"):
        cuda._bind_device({"device_id": "first"})


def test_details_show_providers_and_binding(tmp_path: Path, bind_on_cpu: None) -> None:
    path = M.save(M.add(), tmp_path / "a.onnx")
    with unirt.load(path, backend="onnxruntime") as sess:
        assert sess.details["providers"] == ["CPUExecutionProvider"]
        assert sess.details["io_binding"] == "cpu"


def test_repeated_runs_reuse_the_input_buffers(tmp_path: Path, bind_on_cpu: None) -> None:
    impl = open_bound(M.dynamic_batch(), tmp_path)
    bound = impl._bound
    assert bound is not None
    x = np.ones((2, 8), np.float32)
    impl.run({"x": x}, ["y"])
    for k in range(2, 5):  # the refilled buffer is what runs, not the first feed
        got = impl.run({"x": x * k}, ["y"])[0]
        np.testing.assert_allclose(got, M.reference(M.dynamic_batch(), {"x": x * k})["y"],
                                   rtol=1e-5, atol=1e-6)
    assert (bound.stats.allocated, bound.stats.reused) == (1, 3)
    impl.run({"x": np.ones((5, 8), np.float32)}, ["y"])  # a new shape: a new buffer
    assert bound.stats.allocated == 2


def test_results_and_feeds_are_the_callers(tmp_path: Path, bind_on_cpu: None) -> None:
    """Neither a later run nor the binding writes into what a run returned or was fed."""
    impl = open_bound(M.dynamic_batch(), tmp_path)
    x1, x2 = np.ones((2, 8), np.float32), np.full((2, 8), 3.0, np.float32)
    y1 = impl.run({"x": x1}, ["y"])[0]
    kept = y1.copy()
    y2 = impl.run({"x": x2}, ["y"])[0]
    np.testing.assert_array_equal(y1, kept)
    assert not np.array_equal(y1, y2)
    np.testing.assert_array_equal(x1, np.ones((2, 8), np.float32))


def test_output_subsets_rebind(tmp_path: Path, bind_on_cpu: None) -> None:
    impl = open_bound(M.multi_io(), tmp_path)
    feeds = {"a": np.ones((1, 3, 4, 4), np.float32), "b": np.arange(3, dtype=np.float32)[None]}
    pooled, total = impl.run(feeds, ["pooled", "sum"])
    assert pooled.shape == (1, 3) and total.shape == (1, 3, 4, 4)
    (arg,) = impl.run(feeds, ["argmax"])
    assert arg.dtype == np.int64 and arg.shape == (1,)


def test_threads_have_their_own_binding(tmp_path: Path, bind_on_cpu: None) -> None:
    from unirt.testing import run_in_threads

    impl = open_bound(M.dynamic_batch(), tmp_path)
    feeds = [np.full((1, 8), float(i), np.float32) for i in range(4)]
    want = [impl.run({"x": f}, ["y"])[0] for f in feeds]

    def worker(i: int) -> None:
        for _ in range(20):
            np.testing.assert_array_equal(impl.run({"x": feeds[i]}, ["y"])[0], want[i])

    run_in_threads(worker)


def test_string_feeds_take_the_plain_run(tmp_path: Path, bind_on_cpu: None) -> None:
    g = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])], "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, [2])])
    impl = open_bound(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                      tmp_path)
    assert impl.details["io_binding"] == "cpu"
    out = impl.run({"s": np.array(["a", "b"], dtype=object)}, ["t"])[0]
    assert list(out) == ["a", "b"]
    assert impl._bound is not None and impl._bound.stats.allocated == 0


def test_non_tensor_outputs_turn_binding_off(tmp_path: Path, bind_on_cpu: None) -> None:
    g = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x", "x"], ["seq"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [2])])
    impl = open_bound(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                      tmp_path)
    assert impl._bound is None
    assert impl.details["io_binding"] == "off: non-tensor outputs seq"
    (seq,) = impl.run({"x": np.ones(2, np.float32)}, ["seq"])
    assert len(seq) == 2


def test_data_dependent_output_shapes_change_between_runs(tmp_path: Path,
                                                          bind_on_cpu: None) -> None:
    """Same input shape, another output shape (NonZero): outputs are never pinned to a size."""
    g = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"])], "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("nz", TensorProto.INT64, [1, "n"])])
    impl = open_bound(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                      tmp_path)
    assert impl.run({"x": np.array([1, 0, 2, 0], np.float32)}, ["nz"])[0].tolist() == [[0, 2]]
    assert impl.run({"x": np.array([1, 1, 1, 0], np.float32)}, ["nz"])[0].tolist() == \
        [[0, 1, 2]]


def test_session_options_are_declared_and_reach_the_engine(tmp_path: Path) -> None:
    """The options the ONNX Runtime backends take (the base class refuses any other); a
    SessionOptions one is set on the session, ``providers`` is taken and ignored."""
    info = read_model(M.save(M.add(), tmp_path / "a.onnx"))
    backend = OnnxRuntimeBackend()
    with pytest.raises(UnirtError, match=r"unknown onnxruntime option 'bogus'; known: "
                                         r"graph_optimization_level, .*provider_options"):
        backend.open(info, OpenOptions(extra={"bogus": 1}))
    extra = {"execution_mode": "ORT_SEQUENTIAL", "inter_op_num_threads": 1,
             "providers": ["ignored"], "provider_options": {}}
    so = backend._session_options(OpenOptions(extra=extra))
    assert so.inter_op_num_threads == 1 and so.log_severity_level == 4
    backend.open(info, OpenOptions(extra=extra)).close()
