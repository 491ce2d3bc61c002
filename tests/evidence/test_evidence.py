"""Measurement decides, the table explains: predictions never refuse a backend, the engine's own
answer and measured runs do, verdicts are repeatable and only verdicts about engines are cached."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from unirt.capability.verdict import SUPPORTED, UNKNOWN, UNSUPPORTED, Evidence
from unirt.errors import HarnessError, UnirtError
from unirt.evidence import verify as verify_mod
from unirt.evidence.probe import (
    CRASHED,
    ERROR,
    FAIL,
    HARNESS,
    NO_REFERENCE,
    PASS,
    TIMEOUT,
    ProbeResult,
)
from unirt.evidence.verify import Verification, VerifyStatus
from unirt.plugin.registry import Registry
from unirt.testing import models as M

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    return M.save(M.conv_net(), tmp_path / "conv.onnx")


def _failing_table(tmp_path: Path, backend: str, version: str, ops: list[str]) -> None:
    """A table in which every conformance case of ``ops`` fails: a prediction of UNSUPPORTED."""
    table = {"format": 1, "backend": backend, "version": version, "limits": {}, "summary": {},
             "features": [[op, {}] for op in ops],
             "cases": [{"n": f"test_{op.lower()}", "s": "mismatch", "e": "boom", "f": [i]}
                       for i, op in enumerate(ops)]}
    (tmp_path / f"{backend}-{version}.json").write_text(json.dumps(table))


@pytest.fixture
def relu_predicted_to_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fake-faithful's table says every Relu case fails: conv_net is predicted UNSUPPORTED."""
    tables = tmp_path / "tables"
    tables.mkdir()
    _failing_table(tables, "fake-faithful", "0.0-test", ["Relu"])
    monkeypatch.setenv("UNIRT_OPTABLES", str(tables))


def test_a_predicted_unsupported_backend_is_measured_and_chosen(
        conv: Path, fake_engines: None, relu_predicted_to_fail: None) -> None:
    sess = unirt.load(conv, prefer="fake-faithful", device="cpu")
    assert sess.backend == "fake-faithful"
    chosen = sess.route[0]
    assert "predicted unsupported" in chosen.reason and "verified" in chosen.reason
    # backend= is not refused on the table's word either (ncnn was, on a model it runs exactly).
    assert unirt.load(conv, backend="fake-faithful").backend == "fake-faithful"
    report = unirt.capabilities(conv, backends=["fake-faithful"])
    v = report.verdicts["fake-faithful"]
    # load's measured verdict is what capabilities shows: one cache, one story.
    assert v.prediction == UNSUPPORTED and v.status == SUPPORTED
    assert v.decided_by == Evidence.MEASURED and v.measured and v.measured["cached"]


def test_the_default_order_puts_predicted_failures_last(
        conv: Path, fake_engines: None, relu_predicted_to_fail: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The first candidate fails; only then are the others ordered (lazily: the first one, usually
    # the reference, opens without any static verdict or engine import).
    monkeypatch.setenv("UNIRT_BACKEND_ORDER", "fake-segfault,fake-faithful,onnxruntime")
    sess = unirt.load(conv, device="cpu")
    names = [s.backend for s in sess.route]
    assert sess.backend == "onnxruntime"
    assert names.index("fake-faithful") > names.index("onnxruntime")
    step = next(s for s in sess.route if s.backend == "fake-faithful")
    assert step.outcome == "not tried" and "predicted unsupported" in step.reason


def test_a_decisive_rule_still_refuses(conv: Path) -> None:
    # ncnn's rule (float32 inputs only) is evidence about any model: no child is needed.
    reg = Registry()
    if not reg.backend("ncnn").available().available:
        pytest.skip("ncnn is not installed")
    ints = M.save(M.int_inputs(), conv.parent / "ints.onnx")
    v = reg.backend("ncnn").check(unirt.read_model(ints))
    assert v.status == UNSUPPORTED and v.decided_by == Evidence.RULE
    with pytest.raises(UnirtError, match="ncnn cannot run ints.onnx: .*int64"):
        unirt.load(ints, backend="ncnn")


def test_a_registry_given_to_load_reaches_the_verification_child(
        conv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    import tests.fake_engines as fakes

    reg = Registry()
    reg.register(fakes, name="fakes")  # through the API: no entry point a child could find
    sess = unirt.load(conv, backend="fake-faithful", registry=reg)
    assert sess.verification is not None and sess.verification.status == "verified"


def test_a_plugin_that_cannot_travel_is_a_harness_failure_never_cached(
        conv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    import tests.fake_engines as fakes

    class Local(fakes.Faithful):  # defined in a function: a child cannot import it
        name = "fake-local"

    class LocalPlugin:
        @staticmethod
        @unirt.hookimpl
        def register_backends(register: Any) -> None:
            register(Local)

    reg = Registry()
    reg.register(LocalPlugin(), name="local")
    with pytest.raises(HarnessError, match="cannot be rebuilt in a verification child"):
        reg.spec()
    with pytest.raises(UnirtError, match="unirt could not .*cannot be rebuilt"):
        unirt.load(conv, backend="fake-local", registry=reg)
    from unirt.store.cache import ArtifactCache

    assert list(ArtifactCache().entries(verify_mod.CACHE_SECTION)) == []
    assert unirt.load(conv, backend="fake-local", registry=reg, verify="never").backend == \
        "fake-local"


def test_a_verdict_is_repeatable_when_a_refused_call_breaks_the_engine(
        tmp_path: Path, fake_engines: None) -> None:
    model = M.save(M.conv_net("N"), tmp_path / "dyn.onnx")
    for _ in range(2):
        v = verify_mod.verify(unirt.read_model(model), "fake-poisoned", "0.0-test",
                              mode="always")
        assert v.status == VerifyStatus.REJECTED
        assert "again, after a refused call" in v.result.reason, v.result.reason


def test_a_set_refused_from_the_start_is_a_shape_limit_not_a_broken_engine(
        tmp_path: Path, fake_engines: None) -> None:
    # The base set (batch 1) is refused, batch 2 runs right, and runs right again after the
    # refusals: verified with the base shape limited, never rejected.
    model = M.save(M.conv_net("N"), tmp_path / "dyn.onnx")
    v = verify_mod.verify(unirt.read_model(model), "fake-picky", "0.0-test", mode="always")
    assert v.status == VerifyStatus.VERIFIED, v.result.reason
    assert any("batch 1" in why for why in v.result.limited.values())
    assert any("again, after a refused call" in label for label in v.result.shapes)
    # capabilities tells the same story as the route: verified (with a refused shape) is
    # SUPPORTED, decided by the measurement.
    verdict = unirt.capabilities(model, backends=["fake-picky"]).verdicts["fake-picky"]
    assert verdict.status == SUPPORTED and verdict.decided_by == Evidence.MEASURED


@pytest.mark.parametrize("bad, match", [
    ({"precision": "fp8"}, "precision must be one of"),
    ({"device": "tpu"}, "device must be one of"),
    ({"verify": "sometimes"}, "verify must be one of"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"tolerance": -1}, "tolerance must be a positive number"),
    ({"prefer": "nosuch"}, "unknown backend 'nosuch'"),
    ({"exclude": ["nosuch"]}, "unknown backend 'nosuch'"),
    ({"input_shapes": {"nope": (1, 3)}}, "not an input of conv.onnx"),
    ({"input_shapes": {"input": (1, 3, 16)}}, "rank"),
    ({"fallback": "yes"}, "fallback must be True or False"),
])
def test_every_argument_is_checked_before_any_child_or_cache_entry(
        conv: Path, monkeypatch: pytest.MonkeyPatch, bad: dict[str, Any], match: str) -> None:
    def no_child(*a: Any, **k: Any) -> Any:
        raise AssertionError("no child may start for a bad argument")

    monkeypatch.setattr(verify_mod, "probe", no_child)
    start = time.perf_counter()
    with pytest.raises(UnirtError, match=match):
        unirt.load(conv, prefer="fastest", **bad) if "prefer" not in bad else \
            unirt.load(conv, **bad)
    assert time.perf_counter() - start < 5
    from unirt.store.cache import ArtifactCache

    assert ArtifactCache().info()["entries"] == 0


def _verification(status: VerifyStatus, probe_status: str, reason: str = "",
                  opened: bool = True) -> Verification:
    return Verification(status, ProbeResult("x", probe_status, reason, opened=opened), False, "k")


@pytest.mark.parametrize("v, cached", [
    (_verification(VerifyStatus.VERIFIED, PASS), True),
    (_verification(VerifyStatus.REJECTED, FAIL, "wrong numbers: y"), True),
    (_verification(VerifyStatus.REFUSED, ERROR, "no kernel", opened=False), True),
    (_verification(VerifyStatus.REJECTED, CRASHED, "crashed (signal SIGSEGV) running x"), True),
    (_verification(VerifyStatus.REJECTED, CRASHED, "crashed (signal SIGKILL)"), False),
    (_verification(VerifyStatus.REJECTED, TIMEOUT, "timed out after 120 s"), False),
    (_verification(VerifyStatus.UNVERIFIED, NO_REFERENCE, "the reference cannot run it"),
     False),
    (_verification(VerifyStatus.UNVERIFIED, HARNESS, "unirt could not measure"), False),
])
def test_only_verdicts_about_the_engine_are_cached(v: Verification, cached: bool) -> None:
    assert v.about_engine is cached


def test_a_harness_failure_of_the_reference_is_not_a_verdict(
        conv: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import unirt.evidence.probe as probe_mod
    from unirt.process.isolation import Outcome

    def broken_reference(source: Any, feed_sets: Any, **kw: Any) -> Any:
        outcome = Outcome("harness", error="the child interpreter could not start")
        return outcome, [probe_mod.RunSet("base", outcome) for _ in feed_sets]

    healthy = probe_mod.reference_outputs
    monkeypatch.setattr(probe_mod, "reference_outputs", broken_reference)
    with pytest.raises(UnirtError, match="unirt could not"):
        unirt.load(conv, backend="fake-faithful")
    monkeypatch.setattr(probe_mod, "reference_outputs", healthy)
    sess = unirt.load(conv, backend="fake-faithful")  # healthy now: measured, not a stale verdict
    assert sess.verification.status == "verified" and not sess.verification.cached


def test_capabilities_reports_a_wrong_run_with_its_first_diverging_node(
        conv: Path, fake_engines: None) -> None:
    report = unirt.capabilities(conv, backends=["onnxruntime", "fake-approx"], probe=True,
                                timeout=60)
    v = report.verdicts["fake-approx"]
    assert v.status == UNSUPPORTED and v.decided_by == Evidence.MEASURED
    first = v.ordered_reasons()[0]
    assert first.kind == "diverges" and first.op in ("LeakyRelu", "Relu"), first
    ref = report.verdicts["onnxruntime"]
    assert ref.status == SUPPORTED
    faithful = unirt.capabilities(conv, backends=["fake-faithful"]).verdicts["fake-faithful"]
    assert faithful.status == UNKNOWN and faithful.measured is None  # nothing measured yet


def test_run_after_the_fix_is_right(conv: Path) -> None:
    x = np.zeros((1, 3, 16, 16), np.float32)
    assert unirt.load(conv, backend="onnxruntime")(x).shape == (1, 10)


def test_ncnn_is_not_refused_for_a_constant_node_pnnx_crashed_on_alone(tmp_path: Path) -> None:
    # The shipped table recorded pnnx crashing on test_constant (a harness failure): a model
    # with a Constant node must still be measured, and runs exactly.
    from onnx import TensorProto, helper, numpy_helper

    reg = Registry()
    if not reg.backend("ncnn").available().available:
        pytest.skip("ncnn is not installed")
    bias = numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=bias, name="const"),
         helper.make_node("Add", ["x", "c"], ["s"], name="add"),
         helper.make_node("Clip", ["s"], ["y"], name="clip")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = M.save(m, tmp_path / "const.onnx")
    v = reg.backend("ncnn").check(unirt.read_model(path))
    assert v.status != UNSUPPORTED, v
    sess = unirt.load(path, backend="ncnn")
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_allclose(sess(x), x + 0.5, atol=1e-6)


def test_a_script_without_main_guard_verifies_in_a_fresh_child(tmp_path: Path) -> None:
    import subprocess
    import sys

    if not Registry().backend("openvino").available().available:
        pytest.skip("openvino is not installed")
    model = M.save(M.conv_net(), tmp_path / "conv.onnx")
    log = tmp_path / "ran.txt"
    script = tmp_path / "user_script.py"
    script.write_text(
        "import unirt\n"
        f"open({str(log)!r}, 'a').write('top level ran\\n')\n"
        f"s = unirt.load({str(model)!r}, prefer='openvino')\n"
        "print(s.backend, s.verification.status)\n")
    env = {**__import__("os").environ, "UNIRT_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["openvino", "verified"]
    assert log.read_text() == "top level ran\n"  # the child did not re-run the script
