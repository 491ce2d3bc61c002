"""The TensorRT backend: its logic, tested without TensorRT.

No TensorRT and no NVIDIA GPU exist where these tests run, so the backend is tested two ways:
unavailable as it really is here (reason, install hint, fallback, ``backend=`` raising), and
against ``tests/fake_tensorrt``, a test double of ``tensorrt`` and ``cuda.bindings.runtime``
that follows their documented signatures (put on ``sys.path`` by the ``fake_tensorrt`` fixture,
for build children too). What the double shows is that unirt drives the documented API as
intended; it says nothing about TensorRT's numbers or speed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from unirt_tensorrt import _build, _profiles, describe_parse_errors

import unirt
from unirt.errors import BackendError, BackendUnavailableError, ShapeLimitError, UnirtError
from unirt.model.info import read_model
from unirt.plugin.backend import OpenOptions
from unirt.plugin.registry import get_registry
from unirt.testing import models as M
from unirt.testing.contract import BackendContract

FAKE = Path(__file__).resolve().parents[1] / "fake_tensorrt"


def _forget_fakes() -> None:
    for name in list(sys.modules):
        if name == "tensorrt" or name == "cuda" or name.startswith(("tensorrt.", "cuda.")):
            del sys.modules[name]


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The test doubles on sys.path (this process and its children); returns the build log."""
    log = tmp_path / "builds.jsonl"
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.setenv("FAKE_TRT_BUILD_LOG", str(log))
    for var in ("FAKE_TRT_VERSION", "FAKE_TRT_UNSUPPORTED", "FAKE_TRT_BUILD_SLEEP",
                "FAKE_TRT_CRASH", "FAKE_CUDA_DEVICES", "FAKE_CUDA_GPU", "FAKE_CUDA_CC"):
        monkeypatch.delenv(var, raising=False)
    _forget_fakes()
    yield log
    _forget_fakes()


def builds(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _info(proto: onnx.ModelProto, tmp_path: Path, name: str = "m"):
    return read_model(M.save(proto, tmp_path / f"{name}.onnx"))


def _two_dyn() -> onnx.ModelProto:
    """x: float32[batch, 3, h, 5] (h dynamic, not the batch), s: float32[2] static."""
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "two_dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", 5]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", 5])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


# -- on this machine: unavailable, with the reason -------------------------------------------
def test_unavailable_here_with_reason_and_hint() -> None:
    status = get_registry().backend("tensorrt").available()
    assert not status.available
    assert status.reason == "the tensorrt package is not installed"
    assert 'unirt[tensorrt]' in (status.install_hint or "")


def test_prefer_tensorrt_falls_back_with_one_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = M.save(M.add(), tmp_path / "add.onnx")
    with caplog.at_level(logging.WARNING, logger="unirt"):
        sess = unirt.load(path, prefer="tensorrt", verify="never")
    assert sess.backend != "tensorrt"
    warnings = [r.getMessage() for r in caplog.records if "tensorrt" in r.getMessage()]
    assert len(warnings) == 1 and "not installed" in warnings[0]
    step = next(s for s in sess.route if s.backend == "tensorrt")
    assert step.outcome == "unavailable" and "not installed" in step.reason
    sess.close()


def test_backend_tensorrt_raises_unavailable(tmp_path: Path) -> None:
    path = M.save(M.add(), tmp_path / "add.onnx")
    with pytest.raises(BackendUnavailableError, match="tensorrt is not available: the "
                                                      "tensorrt package is not installed"):
        unirt.load(path, backend="tensorrt")


def test_backends_cli_lists_tensorrt_with_why_not() -> None:
    from click.testing import CliRunner

    from unirt.cli.main import cli

    data = json.loads(CliRunner().invoke(cli, ["backends", "--json"]).stdout)
    trt = next(b for b in data["backends"] if b["name"] == "tensorrt")
    assert trt["available"] is False and "not installed" in trt["reason"]
    assert trt["install_hint"]


def test_import_of_the_plugin_imports_no_tensorrt() -> None:
    assert "tensorrt" not in sys.modules or "fake_tensorrt" in str(
        getattr(sys.modules["tensorrt"], "__file__", ""))


# -- profiles ------------------------------------------------------------------------------------
def test_profile_from_seen_ranges_the_batch_and_pins_other_dims(tmp_path: Path) -> None:
    info = _info(_two_dyn(), tmp_path)
    assert _profiles.dynamic_inputs(info) == ["x"]
    (r,) = _profiles.from_seen(info, {"x": (2, 3, 7, 5), "s": (2,)})
    assert (r.name, r.min, r.opt, r.max) == ("x", (1, 3, 7, 5), (2, 3, 7, 5), (16, 3, 7, 5))
    (big,) = _profiles.from_seen(info, {"x": (40, 3, 7, 5), "s": (2,)})
    assert big.max[0] == 40
    assert _profiles.find_profile([(r,)], {"x": (16, 3, 7, 5)}) == 0
    assert _profiles.find_profile([(r,)], {"x": (1, 3, 8, 5)}) is None


def test_explicit_profiles_parsed_in_both_forms(tmp_path: Path) -> None:
    info = _info(_two_dyn(), tmp_path)
    got = _profiles.parse_profiles(info, [
        {"x": {"min": [1, 3, 8, 5], "opt": [4, 3, 16, 5], "max": [8, 3, 32, 5]}},
        {"x": [[9, 3, 8, 5], [9, 3, 8, 5], [32, 3, 8, 5]], "s": [[2], [2], [2]]}])
    assert [p[0].max for p in got] == [(8, 3, 32, 5), (32, 3, 8, 5)]
    assert all(len(p) == 1 for p in got)  # the static input is not ranged


@pytest.mark.parametrize("raw, match", [
    ([], "non-empty list"),
    ([{"nope": [[1], [1], [1]]}], "'nope', which is not an input"),
    ([{"s": [[2], [2], [2]]}], "no range for dynamic input 'x'"),
    ([{"x": [[1, 3, 8], [1, 3, 8], [1, 3, 8]]}], "rank 4, not 3"),
    ([{"x": [[1, 4, 8, 5], [1, 4, 8, 5], [1, 4, 8, 5]]}], "dim 1 is fixed at 3"),
    ([{"x": [[2, 3, 8, 5], [1, 3, 8, 5], [4, 3, 8, 5]]}], "min <= opt <= max"),
    ([{"x": {"min": [1, 3, 8, 5], "max": [1, 3, 8, 5]}}], "exactly the keys"),
    ([{"x": [[1, 3, 8.5, 5], [1, 3, 8, 5], [1, 3, 8, 5]]}], "list of ints"),
    ([{"x": "big"}], r"\{min, opt, max\} or \[min, opt, max\]"),
], ids=["empty", "unknown", "missing", "rank", "static", "order", "keys", "float", "type"])
def test_bad_profiles_are_clear_errors(tmp_path: Path, raw: object, match: str) -> None:
    info = _info(_two_dyn(), tmp_path)
    with pytest.raises(UnirtError, match=match):
        _profiles.parse_profiles(info, raw)


# -- precision per version -------------------------------------------------------------------
def test_precision_choice_per_version() -> None:
    exact10 = _build.plan_precision(10, "exact", (9, 0), False)
    assert exact10.label == "fp32" and exact10.clear_flags == ("TF32",)
    assert not exact10.strongly_typed and not exact10.set_flags
    assert _build.plan_precision(10, "fast", (9, 0), False).set_flags == ("FP16", "BF16")
    assert _build.plan_precision(10, "fast", (7, 5), False).set_flags == ("FP16",)
    exact11 = _build.plan_precision(11, "exact", (9, 0), True)
    assert exact11.strongly_typed and exact11.clear_flags == ("TF32",) and exact11.label == "fp32"
    fast11 = _build.plan_precision(11, "fast", (9, 0), True)
    assert fast11.convert_fp16 and fast11.strongly_typed and not fast11.set_flags
    assert fast11.label == "fp16"
    bare11 = _build.plan_precision(11, "fast", (9, 0), False)
    assert bare11.label == "tf32" and not bare11.convert_fp16 and "onnxconverter" in bare11.note
    assert _build.plan_precision(11, "fast", (7, 5), False).label == "fp32"


# -- parser errors -------------------------------------------------------------------------------
def test_parser_errors_name_node_and_op(tmp_path: Path) -> None:
    info = _info(M.conv_net(), tmp_path)
    main = [n for n in info.nodes if n.graph == ""]
    errors = [{"code": "ErrorCode.UNSUPPORTED_NODE", "desc": "No importer for op",
               "node": 1, "node_name": "", "op": ""},
              {"code": "", "desc": "bad attr", "node": -1, "node_name": "named", "op": "Foo"}]
    text = describe_parse_errors(errors, info)
    assert f"node {_build.node_label(main, 1)!r} ({main[1].op_type}): UNSUPPORTED_NODE" in text
    assert "node 'named' (Foo): bad attr" in text
    assert describe_parse_errors([], info) == "the parser gave no reason"


# -- with the test double ------------------------------------------------------------------------
def test_available_with_the_double(fake_tensorrt: Path) -> None:
    status = get_registry().backend("tensorrt").available()
    assert status.available and status.version == "10.13.0.35"
    assert status.devices == ("cuda:0",)


@pytest.mark.parametrize("env, reason", [
    ({"FAKE_CUDA_DEVICES": "0"}, "CUDA finds no device"),
    ({"FAKE_TRT_VERSION": "8.6.1"}, "TensorRT 8.6.1 is not supported"),
])
def test_unavailable_reasons_with_the_double(fake_tensorrt: Path, monkeypatch: pytest.MonkeyPatch,
                                             env: dict, reason: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    status = get_registry().backend("tensorrt").available()
    assert not status.available and reason in (status.reason or "")


def test_static_model_builds_once_then_loads_from_cache(fake_tensorrt: Path,
                                                        tmp_path: Path) -> None:
    proto = M.conv_net()
    path = M.save(proto, tmp_path / "conv.onnx")
    sess = unirt.load(path, backend="tensorrt", verify="never")
    feeds = unirt.evidence.inputs.make_inputs(sess.inputs, seed=1)
    want = M.reference(proto, feeds)
    got = sess.run(feeds)
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-5, atol=1e-6)
    assert sess.precision == "fp32"
    assert sess.details["engines"][0]["cached"] is False
    assert sess.details["device"] == "cuda:0 (Fake GPU, sm_90)"
    (settings,) = builds(fake_tensorrt)
    assert "TF32" not in settings["flags"] and not settings["strongly_typed"]
    assert settings["profiles"] == []
    sess.close()
    again = unirt.load(path, backend="tensorrt", verify="never")
    assert again.details["engines"][0]["cached"] is True
    assert len(builds(fake_tensorrt)) == 1  # not built again
    assert builds(fake_tensorrt)[0]["timing_entries_before"] == 0
    np.testing.assert_allclose(again.run(feeds)["probs"], want["probs"], rtol=1e-5, atol=1e-6)
    again.close()


def test_timing_cache_is_kept_across_models(fake_tensorrt: Path, tmp_path: Path) -> None:
    for i, proto in enumerate((M.add(), M.tiny())):
        unirt.load(M.save(proto, tmp_path / f"m{i}.onnx"), backend="tensorrt",
                   verify="never").close()
    assert [b["timing_entries_before"] for b in builds(fake_tensorrt)] == [0, 1]


def test_fast_on_10_sets_fp16_flags(fake_tensorrt: Path, tmp_path: Path) -> None:
    sess = unirt.load(M.save(M.add(), tmp_path / "a.onnx"), backend="tensorrt",
                      precision="fast", verify="never")
    assert sess.precision == "fp16"
    (settings,) = builds(fake_tensorrt)
    assert {"FP16", "BF16", "TF32"} <= set(settings["flags"])
    sess.close()


def test_fast_on_11_without_converter_builds_as_declared_and_says_so(
        fake_tensorrt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRT_VERSION", "11.4.0")
    sess = unirt.load(M.save(M.add(), tmp_path / "a.onnx"), backend="tensorrt",
                      precision="fast", verify="never")
    assert sess.precision == "tf32" and "onnxconverter-common" in sess.details["note"]
    (settings,) = builds(fake_tensorrt)
    assert settings["strongly_typed"] and not settings["fp16_model"]
    assert "FP16" not in settings["flags"]
    sess.close()


def test_cache_keys_separate_version_gpu_precision_and_profiles(
        fake_tensorrt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = M.save(M.add(), tmp_path / "a.onnx")
    entries = set()
    for env in ({}, {"FAKE_CUDA_GPU": "Other GPU"}, {"FAKE_CUDA_CC": "8.6"},
                {"FAKE_TRT_VERSION": "10.14.1"}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        _forget_fakes()
        registry = unirt.plugin.registry.Registry()
        for precision in ("exact", "fast"):
            sess = unirt.load(path, backend="tensorrt", precision=precision, verify="never",
                              registry=registry)
            entries.add(sess.details["engines"][0]["entry"])
            sess.close()
    assert len(entries) == 8 and len(builds(fake_tensorrt)) == 8


def test_an_engine_of_another_gpu_is_never_deserialized(
        fake_tensorrt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = M.save(M.add(), tmp_path / "a.onnx")
    sess = unirt.load(path, backend="tensorrt", verify="never")
    entry = Path(sess.details["engines"][0]["entry"])
    sess.close()
    # An entry whose record was altered (another GPU's engine planted under this key) fails the
    # cache's signed manifest: removed and built again, never deserialized.
    record = json.loads((entry / "engine.json").read_text())
    (entry / "engine.json").write_text(json.dumps({**record, "gpu": "Someone else's GPU"}))
    again = unirt.load(path, backend="tensorrt", verify="never")
    assert again.details["engines"][0]["cached"] is False and len(builds(fake_tensorrt)) == 2
    assert "corrupt or was altered" in caplog.text
    again.close()
    # And the plugin's own check, behind the cache's: a verified entry recorded for another
    # GPU than this one (as if the key had collided) is refused before deserialization.
    import unirt_tensorrt

    monkeypatch.setattr(unirt_tensorrt.TensorRtSession, "_identity",
                        lambda self: {"tensorrt": self.version, "gpu": "Another GPU",
                                      "compute_capability": "9.0"})
    with pytest.raises(BackendError, match="built for another TensorRT or GPU .gpu 'Fake GPU', "
                                           "here 'Another GPU'.; it is not loaded"):
        unirt.load(path, backend="tensorrt", verify="never")


def test_explicit_profiles_and_shape_limit(fake_tensorrt: Path, tmp_path: Path) -> None:
    proto = M.dynamic_batch()
    path = M.save(proto, tmp_path / "d.onnx")
    profiles = [{"x": [[1, 8], [2, 8], [4, 8]]}, {"x": [[8, 8], [8, 8], [8, 8]]}]
    sess = unirt.load(path, backend="tensorrt", verify="never",
                      options={"tensorrt": {"profiles": profiles}})
    for batch in (1, 4, 8):
        feeds = {"x": np.random.default_rng(batch).standard_normal((batch, 8), np.float32)}
        np.testing.assert_allclose(sess.run(feeds)["y"], M.reference(proto, feeds)["y"],
                                   rtol=1e-5, atol=1e-5)
    impl = sess._impl if hasattr(sess, "_impl") else None
    assert len(builds(fake_tensorrt)) == 1 and len(builds(fake_tensorrt)[0]["profiles"]) == 2
    backend = get_registry().backend("tensorrt")
    raw = backend.open(read_model(path), OpenOptions(extra={"profiles": profiles}))
    with pytest.raises(ShapeLimitError, match="outside every optimization profile"):
        raw.run({"x": np.zeros((6, 8), np.float32)}, ["y"])
    raw.close()
    del impl
    sess.close()


def test_feeds_outside_the_profiles_go_to_another_backend(fake_tensorrt: Path,
                                                          tmp_path: Path) -> None:
    proto = M.dynamic_batch()
    path = M.save(proto, tmp_path / "d.onnx")
    sess = unirt.load(path, prefer="tensorrt", verify="never",
                      options={"tensorrt": {"profiles": [{"x": [[1, 8], [1, 8], [2, 8]]}]}})
    assert sess.backend == "tensorrt"
    feeds = {"x": np.ones((5, 8), np.float32)}
    np.testing.assert_allclose(sess.run(feeds)["y"], M.reference(proto, feeds)["y"], rtol=1e-5)
    assert any(s.outcome == "shape fallback" for s in sess.route)
    sess.close()


def test_seen_shapes_build_lazily_and_stop_at_max_engines(fake_tensorrt: Path,
                                                          tmp_path: Path) -> None:
    proto = _two_dyn()
    path = M.save(proto, tmp_path / "t.onnx")
    backend = get_registry().backend("tensorrt")
    sess = backend.open(read_model(path), OpenOptions(extra={"max_engines": 2}))
    assert builds(fake_tensorrt) == []  # nothing to build for until a shape is seen
    s = np.zeros(2, np.float32)
    for batch, h in ((1, 4), (7, 4), (2, 9)):  # batch 7 at h=4 fits the first engine
        x = np.random.default_rng(h).standard_normal((batch, 3, h, 5)).astype(np.float32)
        (y,) = sess.run({"x": x, "s": s}, ["y"])
        np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert len(builds(fake_tensorrt)) == 2
    with pytest.raises(ShapeLimitError, match="max_engines"):
        sess.run({"x": np.zeros((1, 3, 11, 5), np.float32), "s": s}, ["y"])
    sess.close()


def test_input_shapes_build_at_open(fake_tensorrt: Path, tmp_path: Path) -> None:
    path = M.save(M.dynamic_batch(), tmp_path / "d.onnx")
    sess = unirt.load(path, backend="tensorrt", verify="never", input_shapes={"x": (3, 8)})
    (settings,) = builds(fake_tensorrt)
    assert settings["profiles"] == [{"x": [[1, 8], [3, 8], [16, 8]]}]
    sess.close()


def test_parser_refusal_names_node_and_op(fake_tensorrt: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRT_UNSUPPORTED", "Gemm")
    path = M.save(M.dynamic_batch(), tmp_path / "d.onnx")
    with pytest.raises(BackendError, match=r"tensorrt cannot parse d.onnx: node 'fc' \(Gemm\): "
                                           r"UNSUPPORTED_NODE: No importer"):
        unirt.load(path, backend="tensorrt", verify="never", input_shapes={"x": (1, 8)})


def test_query_is_the_parsers_answer(fake_tensorrt: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    info = _info(M.conv_net(), tmp_path)
    backend = get_registry().backend("tensorrt")
    assert backend.query(info) == set()
    monkeypatch.setenv("FAKE_TRT_UNSUPPORTED", "Relu")
    main = [n for n in info.nodes if n.graph == ""]
    relus = {_build.node_label(main, i) for i, n in enumerate(main) if n.op_type == "Relu"}
    assert relus and backend.query(info) == relus


def test_build_timeout_in_the_child(fake_tensorrt: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRT_BUILD_SLEEP", "60")
    path = M.save(M.add(), tmp_path / "a.onnx")
    with pytest.raises(BackendError, match="timed out after 2 s .option build_timeout"):
        unirt.load(path, backend="tensorrt", verify="never",
                   options={"tensorrt": {"build_timeout": 2}})


def test_a_parser_crash_costs_a_verdict_not_the_process(fake_tensorrt: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRT_CRASH", "1")
    path = M.save(M.add(), tmp_path / "a.onnx")
    with pytest.raises(BackendError, match="crashed"):
        unirt.load(path, backend="tensorrt", verify="never")


def test_data_dependent_output_is_refused(fake_tensorrt: Path, tmp_path: Path) -> None:
    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"], name="nz")], "nz",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [1, None])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = unirt.load(M.save(proto, tmp_path / "nz.onnx"), backend="tensorrt",
                      verify="never", check=False)
    with pytest.raises(BackendError, match="data-dependent shape"):
        sess.run({"x": np.ones(4, np.float32)})
    sess.close()


@pytest.mark.parametrize("options, match", [
    ({"nope": 1}, "unknown tensorrt option 'nope'"),
    ({"build_timeout": "long"}, "build_timeout must be a non-negative number"),
    ({"device": "gpu7"}, "device must be a CUDA device index"),
])
def test_bad_options(fake_tensorrt: Path, tmp_path: Path, options: dict, match: str) -> None:
    path = M.save(M.add(), tmp_path / "a.onnx")
    with pytest.raises(UnirtError, match=match):
        unirt.load(path, backend="tensorrt", verify="never", options={"tensorrt": options})


def test_missing_device_is_unavailable(fake_tensorrt: Path, tmp_path: Path) -> None:
    path = M.save(M.add(), tmp_path / "a.onnx")
    with pytest.raises(BackendUnavailableError, match="CUDA device 3 is not available"):
        unirt.load(path, backend="tensorrt", verify="never",
                   options={"tensorrt": {"device": "cuda:3"}})


class TestContractOnTheDouble(BackendContract):
    """The contract kit, run on the double: unirt's side of the TensorRT backend (buffers,
    profiles, output conforming, threads, close) keeps the contract. Where TensorRT exists the
    same kit runs on it from tests/test_contract.py."""

    @pytest.fixture
    def backend_name(self, fake_tensorrt: Path) -> str:
        return "tensorrt"


def test_non_numeric_inputs_are_refused_by_check_and_open_alike(fake_tensorrt: Path) -> None:
    """A string input and a sequence output: ``check`` names both, ``open`` refuses the first
    in the same words before any engine is built."""
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    g = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["s"], name="mk"),
         helper.make_node("Identity", ["t"], ["u"], name="id")], "g",
        [helper.make_tensor_value_info("t", TensorProto.STRING, [1]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("u", TensorProto.STRING, [1]), seq])
    info = read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    backend = get_registry().backend("tensorrt")
    messages = [r.message for r in backend.rules(info)]
    assert messages == [
        "input 't' is a object tensor: TensorRT has no string type",
        "output 'u' is a object tensor: TensorRT has no string type",
        "output 's' is not a tensor: TensorRT takes and gives tensors only"]
    with pytest.raises(BackendError) as refused:
        backend.open(info, OpenOptions())
    assert str(refused.value) == f"tensorrt cannot run {info.name}: {messages[0]}"
