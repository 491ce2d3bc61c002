"""Opt-in rewrites named in ``load(rewrite=[...])`` apply before routing: the case of a
"dynamic" export whose Reshape bakes the traced size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import unirt
from unirt.errors import BackendError
from unirt.plugin.route import RouteOutcome
from unirt.testing import models
from unirt.tools.lint import lint


def _baked(path: Path) -> Path:
    """x: [1, T, 4] traced at T=16, reshaped to the constant [1, 16, 2, 2]: fails at any T != 16
    on every engine."""
    return models.save(models.baked_split(), path)


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
        tmp_path: Path, fake_engines: None, no_hints: None) -> None:
    """The reference refuses the baked model at every generated size (T=32, 64); verification
    compares at the traced size (T=16) instead of opening the candidate on no evidence: a wrong
    engine is rejected, a right one verified (an engine 0.99 off must not pass as 'unverified')."""
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


def _baked_twice(path: Path) -> Path:
    """x: [1, T, 8] traced at T=16, split into heads by Reshape [1, 16, 2, 4], softmax per head,
    merged back by Reshape [1, 16, 8]: two baked Reshapes, the second hidden behind the first
    (its input is static once the first has baked 16)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s1"], ["h"], name="split_heads"),
         helper.make_node("Softmax", ["h"], ["p"], axis=-1, name="softmax"),
         helper.make_node("Reshape", ["p", "s2"], ["y"], name="merge_heads")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 8])],
        [numpy_helper.from_array(np.array([1, 16, 2, 4], np.int64), "s1"),
         numpy_helper.from_array(np.array([1, 16, 8], np.int64), "s2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _heads_softmax(x: np.ndarray) -> np.ndarray:
    h = x.reshape(1, x.shape[1], 2, 4)
    e = np.exp(h - h.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).reshape(x.shape)


def test_lint_names_a_baked_reshape_hidden_behind_another(tmp_path: Path) -> None:
    report = lint(_baked_twice(tmp_path / "m.onnx"), backends=())
    baked = {f.node: f for f in report.findings if f.code == "baked-dynamic-dim"}
    assert set(baked) == {"split_heads", "merge_heads"}
    hidden = baked["merge_heads"]
    assert hidden.detail["after"] == ["split_heads"] and hidden.detail["value"] == 16
    assert "the constant shape [1, 16, 8] bakes it to 16 too" in hidden.message
    assert "hidden behind the baked Reshape 'split_heads'" in hidden.message


def test_unbaking_frees_every_baked_reshape(tmp_path: Path) -> None:
    with unirt.load(_baked_twice(tmp_path / "m.onnx"), backend="onnxruntime",
                    rewrite=["unbake_reshape"]) as s:
        assert "unbake_reshape (verified, max abs 0) at x=1x16x8" in s.route[0].reason
        for t in (16, 9, 32):
            x = np.random.default_rng(t).standard_normal((1, t, 8)).astype(np.float32)
            np.testing.assert_allclose(s.run({"x": x})["y"], _heads_softmax(x), atol=1e-6)


def test_cli_verifies_an_opt_in_rewrite_at_the_traced_size(tmp_path: Path) -> None:
    """Without --shape, `unirt rewrite --only unbake_reshape` verifies where the original runs
    (T=16), as load(rewrite=[...]) does, and the written file runs at any T on raw ONNX
    Runtime."""
    import onnxruntime as ort
    from click.testing import CliRunner

    from unirt.cli.main import cli

    out = tmp_path / "free.onnx"
    res = CliRunner().invoke(cli, ["rewrite", "-q", str(_baked_twice(tmp_path / "m.onnx")),
                                   "--for", "onnxruntime", "--only", "unbake_reshape", "-o",
                                   str(out)])
    assert res.exit_code == 0, res.output
    assert "unbake_reshape: Reshape 'split_heads': shape [1, 16, 2, 4] -> [1, 0, 2, 4]" \
        in res.stdout
    assert "unbake_reshape: Reshape 'merge_heads': shape [1, 16, 8] -> [1, 0, 8]" in res.stdout
    assert "onnxruntime: unbake_reshape (verified, max abs 0) at x=1x16x8" in res.stdout
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], _heads_softmax(x), atol=1e-6)
