"""Verification before routing: wrong numbers, crashes and hangs are rejected, verdicts cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt.errors import BackendError
from unirt.evidence import verify as verify_mod
from unirt.evidence.probe import NO_REFERENCE, ProbeResult
from unirt.testing import models as M


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    return M.save(M.conv_net(), tmp_path / "conv.onnx")


def _step(sess: unirt.Session, name: str):
    return next(s for s in sess.route if s.backend == name)


def test_wrong_numbers_crash_and_hang_are_rejected_and_routing_falls_back(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "8")
    sess = unirt.load(conv, prefer=["fake-approx", "fake-segfault", "fake-hang"], device="cpu")
    assert sess.backend not in ("fake-approx", "fake-segfault", "fake-hang")
    approx, segv, hang = (_step(sess, n) for n in ("fake-approx", "fake-segfault", "fake-hang"))
    assert approx.outcome == "rejected"
    assert approx.reason.startswith("wrong numbers: probs at input=1x3x16x16: max abs")
    assert segv.outcome == "rejected"
    assert segv.reason == "crashed (signal SIGSEGV) running input=1x3x16x16"
    assert hang.outcome == "rejected" and "timed out after" in hang.reason
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = unirt.load(conv, backend="onnxruntime")
    np.testing.assert_allclose(sess(x), ref(x), atol=1e-4)  # and this process is alive


def test_backend_with_auto_verification_raises_instead(conv: Path, fake_engines: None) -> None:
    with pytest.raises(BackendError, match=r"fake-approx was rejected for conv.onnx: wrong "
                                           r"numbers: probs"):
        unirt.load(conv, backend="fake-approx")
    sess = unirt.load(conv, backend="fake-approx", verify="never")  # the user's call
    assert sess.backend == "fake-approx" and sess.verification is None


def test_verified_backend_records_error_and_second_load_uses_the_cache(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    first = unirt.load(conv, backend="fake-faithful")
    assert first.verification.status == "verified" and not first.verification.cached
    assert first.precision == "fp32" and first.precision.max_abs == {"probs": 0.0}
    assert "verified, max abs 0 on probs (fp32)" in first.route[0].reason

    def no_probe(*a, **k):
        raise AssertionError("a cached verdict must not start a child process")

    monkeypatch.setattr(verify_mod, "probe", no_probe)
    second = unirt.load(conv, backend="fake-faithful")
    assert second.verification.cached
    assert "cached verdict: verified" in second.route[0].reason
    assert "cached verdict" in second.explain()


def test_engine_version_model_bytes_and_corruption_reverify(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt.plugin.backend import Availability
    from unirt.plugin.registry import get_registry
    from unirt.store.cache import ArtifactCache

    v1 = unirt.load(conv, backend="fake-faithful").verification
    assert not v1.cached
    # a new engine version: another key, measured again
    be = get_registry().backend("fake-faithful")
    monkeypatch.setattr(be, "_availability", Availability(True, "0.1-test", devices=("cpu",)))
    v2 = unirt.load(conv, backend="fake-faithful").verification
    assert not v2.cached and v2.key != v1.key
    # one changed byte of the model (another weight): measured again
    proto = M.conv_net()
    proto.graph.initializer[0].raw_data = b"\0" * len(proto.graph.initializer[0].raw_data)
    M.save(proto, conv)
    v3 = unirt.load(conv, backend="fake-faithful").verification
    assert not v3.cached and v3.key not in (v1.key, v2.key)
    # a truncated verdict: detected by the entry's checksum and rebuilt, never trusted
    entry = ArtifactCache().entry_path(verify_mod.CACHE_SECTION, v3.key)
    (entry / verify_mod.VERDICT_FILE).write_text('{"status": "verif')
    v4 = unirt.load(conv, backend="fake-faithful").verification
    assert not v4.cached and v4.status == "verified" and v4.key == v3.key


def test_unverified_when_the_reference_cannot_run(conv: Path, fake_engines: None,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def no_reference(info, backend, *a, **k):
        return ProbeResult(backend, NO_REFERENCE, "the reference (onnxruntime) cannot run it")

    monkeypatch.setattr(verify_mod, "probe", no_reference)
    with caplog.at_level("WARNING", logger="unirt"):
        sess = unirt.load(conv, backend="fake-faithful", rewrite=False)
    assert sess.verification.status == "unverified"
    assert "unverified: the reference (onnxruntime) cannot run it" in sess.route[0].reason
    assert "fake-faithful runs conv.onnx unverified: the reference (onnxruntime) cannot run " \
           "it" in caplog.text
    with pytest.raises(BackendError, match="fake-faithful was rejected .* unverified"):
        unirt.load(conv, backend="fake-faithful", verify="always")


def test_probe_shapes_cover_two_sizes_of_dynamic_dims() -> None:
    info = unirt.read_model(M.dynamic_batch())
    assert verify_mod.probe_shapes(info.inputs) == [{"x": (1, 8)}, {"x": (2, 8)}]
    assert verify_mod.probe_shapes(info.inputs, {"x": (4, 8)}) == [{"x": (4, 8)}]
    assert verify_mod.probe_shapes(unirt.read_model(M.add()).inputs) == [
        {"x": (2, 3), "y": (2, 3)}]


def test_bad_verify_arguments(conv: Path) -> None:
    with pytest.raises(unirt.UnirtError, match="verify must be one of auto, always, never"):
        unirt.load(conv, verify="sometimes")
    with pytest.raises(unirt.UnirtError, match="tolerance must be a positive number"):
        unirt.load(conv, tolerance=-1)


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_real_engines_precision_is_measured(tmp_path: Path, precision: str) -> None:
    from unirt.plugin.registry import get_registry

    path = M.save(M.resnet_like(), tmp_path / "resnet.onnx")
    for name, be in get_registry().backends.items():
        if name == "onnxruntime" or not be.available().available:
            continue
        try:
            sess = unirt.load(path, backend=name, precision=precision)
        except BackendError as exc:  # rejected: then the reason names it
            assert name in str(exc)
            continue
        v = sess.verification
        assert v is not None and v.status == "verified", v
        assert set(sess.precision.max_abs) == {"logits"}
        if precision == "exact":
            assert sess.precision.max_abs["logits"] <= 1e-4
        else:
            assert sess.precision.describe().startswith(str(sess.precision))
        sess.close()


def test_a_real_model_an_engine_gets_wrong_is_rejected_by_verification() -> None:
    """The onnx wheel's light SqueezeNet: the route must agree with what the engine really
    returns. OpenVINO 2026.4.1 returns softmax outputs off by 0.12 (outputs are ~1e-3) without
    any error; verification must reject it and fall back to a backend with the right numbers."""
    from unirt.plugin.registry import get_registry
    from unirt.testing.real_models import light_case

    be = get_registry().backend("openvino")
    if not be.available().available:
        pytest.skip(f"openvino not available: {be.available().reason}")
    path, feeds, expected = light_case("squeezenet")
    raw = be.open(unirt.read_model(path)).run(feeds, ["softmaxout_1"])[0]
    engine_is_right = bool(np.allclose(raw, expected, atol=1e-4, rtol=1e-3))
    sess = unirt.load(path, prefer="openvino", device="cpu")
    step = next(s for s in sess.route if s.backend == "openvino")
    if engine_is_right:  # a fixed engine version: then it must be accepted
        assert sess.backend == "openvino" and "verified" in step.reason
    else:
        assert step.outcome == "rejected" and step.reason.startswith("wrong numbers: softmaxout_1")
        assert sess.backend != "openvino"
    np.testing.assert_allclose(sess.run(feeds)["softmaxout_1"], expected, atol=1e-5, rtol=1e-3)


def test_unverified_when_no_inputs_can_be_generated(fake_engines: None) -> None:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    v = verify_mod.verify(unirt.read_model(proto), "fake-faithful", "0")
    assert v.status == "unverified" and not v.cached
    assert v.result.reason.startswith("no inputs can be generated (input 'x': cannot generate")
    assert v.result.reason.endswith("; opened in a child, nothing run")


def test_no_inputs_still_means_a_child_opens_it_first(tmp_path: Path,
                                                     fake_engines: None) -> None:
    """A declared input over the size limit: no inputs can be made, but the candidate is still
    opened in a child before this process (OpenCV can segfault reading such a model in the caller's
    process). A crash there rejects it, cached; a clean open is 'unverified'."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [100000, 1000000000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [100000, 1000000000])])
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(BackendError, match=r"fake-segfault-open .*crashed \(signal SIGSEGV\)"):
        unirt.load(path, backend="fake-segfault-open")
    with pytest.raises(BackendError, match="cached verdict: crashed"):
        unirt.load(path, backend="fake-segfault-open")
    with unirt.load(path, backend="fake-faithful") as s:
        v = s.verification
        assert v is not None and v.status == verify_mod.VerifyStatus.UNVERIFIED
        assert "no inputs can be generated" in v.result.reason
        assert "opened in a child, nothing run" in v.result.reason
