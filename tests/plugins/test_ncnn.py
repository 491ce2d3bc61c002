"""The ncnn backend through pnnx: conversion, blob mapping, batch, precision, refusals, caching.

Numbers are compared with ONNX Runtime CPU (the reference every backend is held to) in exact mode
within 1e-4. Skipped with the reason when ncnn or the pnnx executable is missing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from unirt.errors import BackendError, BackendUnavailableError, UnirtError
from unirt.evidence.inputs import make_inputs
from unirt.model.info import read_model
from unirt.plugin.backend import OpenOptions
from unirt.plugin.registry import get_registry
from unirt.testing import models as M
from unirt.testing import run_in_threads

try:
    from unirt_ncnn import INSTALL_HINT, NcnnBackend, NcnnSession
    from unirt_ncnn._session import _Plan
except ImportError:  # pragma: no cover - the plugin is part of the repo
    pytest.skip("unirt_ncnn is not importable", allow_module_level=True)

_status = NcnnBackend().available()
pytestmark = pytest.mark.skipif(not _status.available,
                                reason=f"ncnn backend not available: {_status.reason}")

ATOL = 1e-4


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_matches_ort(out: dict[str, Any], ref: dict[str, Any], atol: float = ATOL) -> None:
    assert list(out) == list(ref)
    for name, want in ref.items():
        got = out[name]
        assert got.shape == want.shape, f"{name}: {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{name}: {got.dtype} != {want.dtype}"
        np.testing.assert_allclose(got, want, atol=atol, rtol=1e-3, err_msg=name)


@pytest.fixture
def load(open_saved: Any) -> Any:
    """``load(proto, **kw)`` -> ``(session, path)`` on ``ncnn``. verify="never" (open_saved's
    default): the router's child-process check would convert into the cache first, and these
    tests look at what the backend itself converts and caches."""
    def _load(proto: Any, name: str = "model", **kw: Any) -> tuple[unirt.Session, Path]:
        return open_saved("ncnn", proto, name, **kw)

    return _load


# -- availability --------------------------------------------------------------------------------
def test_registered_and_described() -> None:
    b = get_registry().backend("ncnn")
    assert b.device_class == "cpu" and b.default_rank == 70
    status = b.available()
    assert status.available
    assert "pnnx" in status.version and status.version.startswith("1.")
    assert status.devices[0] == "cpu"


def test_unavailable_without_pnnx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UNIRT_PNNX", str(tmp_path / "no-such-pnnx"))
    status = NcnnBackend().available()
    assert not status.available
    assert "pnnx" in status.reason.lower()
    assert status.install_hint == INSTALL_HINT and "--no-deps pnnx" in status.install_hint


def test_vulkan_without_a_gpu_is_unavailable_with_reason(tmp_path: Path) -> None:
    if any(d.startswith("vulkan") for d in _status.devices):
        pytest.skip("this machine has a Vulkan device")
    model = read_model(M.save(M.tiny(), tmp_path / "t.onnx"))
    with pytest.raises(BackendUnavailableError, match="Vulkan device 0 is not available"):
        NcnnBackend().open(model, OpenOptions(extra={"device": "vulkan"}))
    with pytest.raises(BackendUnavailableError, match="Vulkan"):
        NcnnBackend().open(model, OpenOptions(device="gpu"))


def test_unknown_option_lists_the_known_ones(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "t.onnx")
    with pytest.raises(UnirtError, match=r"unknown ncnn option 'bogus'; known: timeout"):
        unirt.load(path, backend="ncnn", options={"ncnn": {"bogus": 1}})


# -- numbers and blob mapping --------------------------------------------------------------------
def test_resnet_like_exact_matches_onnxruntime(load) -> None:
    builder = getattr(M, "resnet_like", None) or M.conv_net
    sess, path = load(builder())
    assert sess.precision == "fp32"
    opts = sess.details["ncnn_options"]
    assert not any(opts[k] for k in ("use_fp16_packed", "use_fp16_storage",
                                     "use_fp16_arithmetic", "use_bf16_storage"))
    feeds = make_inputs(sess.inputs, seed=11)
    assert_matches_ort(sess.run(feeds), ort_run(path, feeds))


def test_fast_reports_reduced_precision(load) -> None:
    sess, path = load(M.conv_net(), precision="fast")
    assert sess.precision == "fp16"
    assert sess.details["ncnn_options"]["use_fp16_storage"]
    feeds = make_inputs(sess.inputs, seed=2)
    assert_matches_ort(sess.run(feeds), ort_run(path, feeds), atol=5e-2)


def test_two_inputs_two_outputs_of_different_shapes_map_back_by_name(load) -> None:
    sess, path = load(M.resize_concat())
    assert [t.name for t in sess.outputs] == ["merged", "pooled"]
    feeds = make_inputs(sess.inputs, seed=4)
    out = sess.run(feeds)
    assert out["merged"].shape == (1, 3, 16, 16) and out["pooled"].shape == (1, 6)
    assert_matches_ort(out, ort_run(path, feeds))
    # Swapping what is fed must change the answer: the inputs are not interchangeable blobs.
    sub = sess.run(feeds, outputs=["pooled"])
    np.testing.assert_allclose(sub["pooled"], out["pooled"])


def test_argmax_tail_is_computed_on_the_host(load) -> None:
    sess, path = load(M.multi_io())
    assert sess.details["host_ops"] == ["ArgMax->argmax"]
    feeds = make_inputs(sess.inputs, seed=9)
    out = sess.run(feeds)
    assert out["argmax"].dtype == np.int64
    assert_matches_ort(out, ort_run(path, feeds))
    assert list(sess.run(feeds, outputs=["argmax"])) == ["argmax"]


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_dynamic_resize_is_converted_again_per_shape(load, mode: str) -> None:
    sess, path = load(M.resize_concat(dynamic=True, mode=mode))
    assert sess.details["conversions"] == []  # lazy: shapes come from the first run
    for sizes in [(8, 8), (5, 7), (8, 8)]:
        h, w = sizes
        feeds = make_inputs(sess.inputs, {"x": (1, 4, h, w), "y": (1, 2, 2 * h, 2 * w)}, seed=h)
        out = sess.run(feeds)
        assert out["merged"].shape == (1, 3, 2 * h, 2 * w)
        assert_matches_ort(out, ort_run(path, feeds))
    shapes = [c["shapes"][0] for c in sess.details["conversions"]]
    assert shapes == [[1, 4, 8, 8], [1, 4, 5, 7]], "one conversion per shape signature"


def test_batch_runs_sample_by_sample_when_pnnx_marks_a_batch_axis(load) -> None:
    sess, path = load(M.conv_net(batch="N"))
    for batch in (1, 3):
        feeds = make_inputs(sess.inputs, {"input": (batch, 3, 16, 16)}, seed=batch)
        assert_matches_ort(sess.run(feeds), ort_run(path, feeds))
    convs = sess.details["conversions"]
    assert [c["shapes"] for c in convs] == [[[1, 3, 16, 16]]], "batch 3 reuses the batch-1 net"


def test_batch_mixing_model_is_run_whole_not_split(load) -> None:
    sess, path = load(M.batch_mixing())
    feeds = make_inputs(sess.inputs, {"x": (3, 4)}, seed=1)
    out = sess.run(feeds)
    assert_matches_ort(out, ort_run(path, feeds))
    np.testing.assert_allclose(out["y"].mean(axis=0), 0, atol=1e-6)


def test_batch_that_cannot_be_split_is_refused(tmp_path: Path) -> None:
    """pnnx calls axis 0 a batch axis at batch 3 but not at batch 1: the model mixes samples."""
    from unirt_ncnn import _pnnx

    sess = object.__new__(NcnnSession)
    sess.model = read_model(M.save(M.batch_mixing(), tmp_path / "b.onnx"))

    class FakeNet:
        def __init__(self, bi: int) -> None:
            blob = _pnnx.Blob("in0", "x", bi, None)
            self.conv = type("C", (), {"inputs": (blob,), "outputs": (
                _pnnx.Blob("out0", "y", bi, None),)})()

    sess._net_for = lambda sig: FakeNet(233 if sig[0][0] == 1 else 0)  # type: ignore[method-assign]
    with pytest.raises(BackendError, match=r"ncnn runs one sample at a time.*batch 3"):
        sess._make_plan(((3, 4),))
    plan = sess._make_plan(((1, 4),))
    assert isinstance(plan, _Plan) and plan.per_sample == 0


# -- refusals ------------------------------------------------------------------------------------
def test_non_float_input_refused_at_open_naming_it(tmp_path: Path) -> None:
    path = M.save(M.int_inputs(), tmp_path / "ints.onnx")
    with pytest.raises(BackendError, match=r"ncnn.*input 'ids' is int64"):
        unirt.load(path, backend="ncnn")


def test_op_ncnn_cannot_run_is_named(tmp_path: Path) -> None:
    path = M.save(M.constant_only(), tmp_path / "c.onnx")
    with pytest.raises(BackendError, match=r"ncnn: .*ONNX op Cast \(node 'cast'\)"):
        unirt.load(path, backend="ncnn")


def _fake_pnnx(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "fake-pnnx"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.mark.parametrize("body, match", [
    ("kill -SEGV $$", r"pnnx crashed \(SIGSEGV\)"),
    ("echo 'unsupported op FooBar'; exit 3", r"pnnx failed .*exit 3.*unsupported op FooBar"),
    ("sleep 30", r"pnnx did not finish .* within 1 s"),
    ("printf '7767517\\n1 1\\nMemoryData c 0 1 out0 0=3\\n' > model.ncnn.param; "
     ": > model.ncnn.bin", r"folded the whole graph .* to constants"),
], ids=["crash", "error", "hang", "folded"])
def test_converter_failures_are_clear_errors_not_crashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, match: str) -> None:
    monkeypatch.setenv("UNIRT_PNNX", str(_fake_pnnx(tmp_path, body)))
    path = M.save(M.tiny(), tmp_path / "t.onnx")
    with pytest.raises(BackendError, match=match):
        unirt.load(path, backend="ncnn", options={"ncnn": {"timeout": 1}})
    assert not list((Path(os.environ["UNIRT_CACHE_DIR"]) / "ncnn").glob("[0-9a-f]*")), \
        "a failed conversion leaves no cache entry"


# -- options, threads, lifetime ------------------------------------------------------------------
def test_threads_option_reaches_ncnn(load) -> None:
    sess, _ = load(M.tiny(), threads=1)
    assert sess.details["ncnn_options"]["num_threads"] == 1


def test_inputs_are_not_written_by_in_place_layers(load) -> None:
    sess, _ = load(M.tiny(size=64))
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    before = x.copy()
    y = sess(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(y, np.maximum(before, 0) * 2)
    y[...] = 7  # the caller owns the output
    np.testing.assert_allclose(sess(x), np.maximum(before, 0) * 2)


def test_concurrent_first_runs_of_a_dynamic_model(load) -> None:
    sess, path = load(M.conv_net(batch="N"))
    feeds = [make_inputs(sess.inputs, {"input": (b, 3, 16, 16)}, seed=b) for b in (1, 2, 1, 2)]
    expected = [ort_run(path, f)["probs"] for f in feeds]

    def worker(i: int) -> None:
        for _ in range(5):
            np.testing.assert_allclose(sess.run(feeds[i])["probs"], expected[i], atol=ATOL)

    run_in_threads(worker)
    assert len(sess.details["conversions"]) == 1


# -- the cache ------------------------------------------------------------------------------------
def test_second_open_loads_from_the_cache(load, tmp_path: Path) -> None:
    first, _ = load(M.conv_net(), name="a")
    assert [c["cached"] for c in first.details["conversions"]] == [False]
    second, _ = load(M.conv_net(), name="b")  # same bytes, other file: same entry
    assert [c["cached"] for c in second.details["conversions"]] == [True]
    assert first.details["conversions"][0]["entry"] == second.details["conversions"][0]["entry"]
    fast, _ = load(M.conv_net(), name="c", precision="fast")
    assert fast.details["conversions"][0]["entry"] != first.details["conversions"][0]["entry"]


def test_corrupted_conversion_is_rebuilt(load, tmp_path: Path) -> None:
    first, path = load(M.conv_net(), name="a")
    entry = Path(first.details["conversions"][0]["entry"])
    (entry / "model.ncnn.bin").write_bytes(b"\0" * 100)
    second, _ = load(M.conv_net(), name="a2")
    assert [c["cached"] for c in second.details["conversions"]] == [False]
    feeds = make_inputs(second.inputs, seed=1)
    assert_matches_ort(second.run(feeds), ort_run(path, feeds))


def test_cache_dir_option(load, tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    sess, _ = load(M.tiny(), options={"ncnn": {"cache_dir": str(where)}})
    assert Path(sess.details["conversions"][0]["entry"]).is_relative_to(where)


def test_open_options_precision_is_part_of_the_key(tmp_path: Path) -> None:
    b = NcnnBackend()
    model = read_model(M.save(M.tiny(), tmp_path / "t.onnx"))
    exact = b.open(model, OpenOptions(precision="exact"))
    fast = b.open(model, OpenOptions(precision="fast"))
    assert exact.details["conversions"][0]["entry"] != fast.details["conversions"][0]["entry"]
    assert (exact.precision, fast.precision) == ("fp32", "fp16")


def test_check_agrees_with_open_on_float32_inputs(tmp_path: Path) -> None:
    model = read_model(M.save(M.int_inputs(), tmp_path / "ints.onnx"))
    verdict = get_registry().backend("ncnn").check(model)
    assert not verdict.supported
    assert any("'ids' is int64" in str(r) for r in verdict.reasons)


def test_a_shape_pnnx_fails_on_is_a_shape_limit_at_run(load, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt.errors import ShapeLimitError

    sess, _ = load(M.resize_concat(dynamic=True))
    sess.run(make_inputs(sess.inputs, {"x": (1, 4, 8, 8), "y": (1, 2, 16, 16)}, seed=1))
    monkeypatch.setenv("UNIRT_PNNX", str(_fake_pnnx(tmp_path, "exit 9")))
    impl = sess._impl  # the engine session: run it directly at a shape not converted yet
    impl.config = impl.config.__class__(**{**impl.config.__dict__,
                                           "exe": Path(os.environ["UNIRT_PNNX"])})
    feeds = make_inputs(sess.inputs, {"x": (1, 4, 5, 5), "y": (1, 2, 10, 10)}, seed=1)
    for _ in range(2):  # the failure is remembered, not re-converted
        with pytest.raises(ShapeLimitError, match=r"ncnn: pnnx failed .*exit 9"):
            impl.run(feeds, ["merged"])


# -- static rules (check): what only a conversion can settle is UNKNOWN -------------------------
def _topk_model(cast: bool) -> Any:
    """TopK(k=3) on float32[1,10]; with ``cast`` its indices go through a Cast to float32."""
    from onnx import TensorProto, helper, numpy_helper

    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=1)]
    outs = [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 3])]
    if cast:
        nodes.append(helper.make_node("Cast", ["i"], ["y"], name="cast", to=TensorProto.FLOAT))
        outs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]))
    else:
        outs.append(helper.make_tensor_value_info("i", TensorProto.INT64, [1, 3]))
    g = helper.make_graph(nodes, "topk", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 10])], outs, [k])
    return M._model(g)


def _check(proto: Any) -> Any:
    return get_registry().backend("ncnn").check(read_model(proto))


def test_check_static_batch_above_one_is_unknown_naming_the_input() -> None:
    from unirt.capability.verdict import UNKNOWN

    verdict = _check(M.conv_net(batch=2))
    assert verdict.status == UNKNOWN
    batch = [r for r in verdict.reasons if r.kind == "batch"]
    assert len(batch) == 1 and batch[0].verdict == UNKNOWN
    assert "input 'input' has a static batch of 2" in batch[0].message
    assert not any(r.kind == "batch" for r in _check(M.conv_net(batch=1)).reasons)


def test_check_dynamic_dims_are_unknown_naming_input_and_dim() -> None:
    from unirt.capability.verdict import SUPPORTED, UNKNOWN

    verdict = _check(M.dynamic_batch())
    assert verdict.status == UNKNOWN
    [reason] = [r for r in verdict.reasons if r.kind == "dynamic"]
    assert reason.verdict == UNKNOWN
    assert "input 'x' has dynamic dims (batch)" in reason.message
    assert "pnnx can crash on dynamic dims" in reason.message
    static = _check(M.tiny())
    assert static.prediction == SUPPORTED and static.reasons == []


def test_check_topk_feeding_a_cast_is_unknown_naming_both_nodes() -> None:
    from unirt.capability.verdict import UNKNOWN

    verdict = _check(_topk_model(cast=True))
    [reason] = [r for r in verdict.reasons if r.kind == "crash"]
    assert (reason.node, reason.op, reason.verdict) == ("topk", "TopK", UNKNOWN)
    assert "feeds Cast 'cast'" in reason.message and "segfaulted" in reason.message
    assert not any(r.kind == "crash" for r in _check(_topk_model(cast=False)).reasons)


@pytest.mark.parametrize("name", ["bvlc_alexnet", "shufflenet"])
def test_real_ir3_models_convert(name: str) -> None:
    """IR 3 models list their weights among the graph inputs; pnnx must be given the real input
    only (it failed with ``input_shapes[0] expect [16]f32`` before the rewrite)."""
    from unirt.testing.real_models import LIGHT_MODELS, light_case

    path, feeds, expected = light_case(name)
    with unirt.load(path, backend="ncnn", verify="never", check=False) as sess:
        out = next(iter(sess.run(feeds).values()))
    rtol, _ = LIGHT_MODELS[name]
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=1e-5)
