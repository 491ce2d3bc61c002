"""Opt-in rewrites named in ``load(rewrite=[...])`` apply before routing: the acceptance case of
issue 14, a "dynamic" export whose Reshape bakes the traced size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import unirt
from unirt.errors import BackendError
from unirt.lint import lint
from unirt.route import RouteOutcome


def _baked(path: Path) -> Path:
    """x: [1, T, 4] traced at T=16, reshaped to the constant [1, 16, 2, 2]: fails at any T != 16
    on every engine."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="split_last")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 2, 2])],
        [numpy_helper.from_array(np.array([1, 16, 2, 2], np.int64), "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_lint_names_the_baked_node_and_value(tmp_path: Path) -> None:
    report = lint(_baked(tmp_path / "m.onnx"), backends=())
    baked = [f for f in report.findings if f.code == "baked-dynamic-dim"]
    assert len(baked) == 1
    assert baked[0].node == "split_last" and baked[0].detail["value"] == 16
    assert "input 'x' dim 1 is declared dynamic ('T')" in baked[0].message


def test_without_the_rewrite_other_sizes_fail(tmp_path: Path) -> None:
    with unirt.load(_baked(tmp_path / "m.onnx"), backend="onnxruntime") as s, \
            pytest.raises(BackendError, match="Reshape"):
        s.run({"x": np.ones((1, 32, 4), np.float32)})


def test_unbaking_asked_for_runs_at_other_sizes(tmp_path: Path) -> None:
    with unirt.load(_baked(tmp_path / "m.onnx"), rewrite=["unbake_reshape"]) as s:
        first = s.route[0]
        assert first.outcome == RouteOutcome.REWRITTEN
        assert "unbake_reshape (verified, max abs 0) at x=1x16x4" in first.reason
        for t in (16, 32, 7):
            x = np.random.default_rng(t).standard_normal((1, t, 4)).astype(np.float32)
            np.testing.assert_array_equal(s.run({"x": x})["y"], x.reshape(1, t, 2, 2))


def test_an_opt_in_rewrite_that_does_not_apply_is_skipped(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    from unirt.testing import models

    path = models.save(models.tiny(), tmp_path / "tiny.onnx")
    with caplog.at_level("WARNING", logger="unirt"):
        s = unirt.load(path, rewrite=["unbake_reshape"])
    assert "no rewrite applies" in caplog.text
    assert all(step.outcome != RouteOutcome.REWRITTEN for step in s.route)
    s.close()



def test_verification_compares_at_the_traced_size_when_generated_sizes_fail(
        tmp_path: Path, fake_engines: None) -> None:
    """The reference refuses the baked model at every generated size (T=32, 64); verification
    compares at the traced size (T=16) instead of opening the candidate on no evidence: a wrong
    engine is rejected, a right one verified (a tester's ncnn was 0.99 off, 'unverified')."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
         helper.make_node("Relu", ["b"], ["c"]),  # fake-approx makes this one leaky
         helper.make_node("Reshape", ["c", "s"], ["y"], name="split_last")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 2, 2])],
        [numpy_helper.from_array(np.array([1, 16, 2, 2], np.int64), "s")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(BackendError, match=r"wrong numbers: y at x=1x16x4"):
        unirt.load(path, backend="fake-approx", rewrite=False)
    with unirt.load(path, backend="fake-faithful", rewrite=False) as s:
        assert s.verification is not None and s.verification.status == "verified"
        assert "compared at the traced size x=1x16x4" in s.verification.describe()
