"""Rewrites through the public API: models that fail on an engine as exported run
there after a rewrite, with the numbers of ONNX Runtime on the original.

The pool-rank model on every engine, and a rewrite that changes the numbers being discarded,
are in tests/test_rewrite.py. Each engine is skipped, with the reason, where it is not installed.
Each test has its own cache (conftest), so each load below pays the rewrite, the verification
and the engine's conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import unirt
from unirt.plugin.registry import Registry
from unirt.testing import rewrite_models as rm
from unirt.testing.models import save

ATOL, RTOL = 1e-4, 1e-3


def _needs(backend: str) -> None:
    reg = Registry(entry_points=False)
    if backend not in reg.backends:
        pytest.skip(f"{backend}: no plugin registered")
    status = reg.backend(backend).available()
    if not status.available:
        pytest.skip(f"{backend} unavailable: {status.reason}")


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Raw ONNX Runtime on the original file (these tiny models are known safe in-process)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_focus_runs_on_ncnn_after_rewrite(tmp_path: Path) -> None:
    _needs("ncnn")
    path = save(rm.focus(), tmp_path / "focus.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    sess = unirt.load(path, backend="ncnn")
    try:
        chosen = sess.route[-1]
        assert chosen.outcome == "chosen", sess.route
        assert chosen.reason.startswith("after rewrite:") and "focus_slice" in chosen.reason
        assert "verified" in chosen.reason
        np.testing.assert_allclose(sess.run({"x": x})["y"], _reference(path, {"x": x})[0],
                                   atol=ATOL, rtol=RTOL)
    finally:
        sess.close()


def test_c3d_runs_on_opencv_after_rewrite(tmp_path: Path) -> None:
    """Conv3d, MaxPool3d (1,2,2), 3-D global average pool, Flatten, Gemm: end to end."""
    _needs("opencv")
    path = save(rm.c3d(), tmp_path / "c3d.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 16, 16)).astype(np.float32)
    sess = unirt.load(path, backend="opencv")
    try:
        chosen = sess.route[-1]
        assert chosen.outcome == "chosen", sess.route
        assert "global_pool" in chosen.reason and "verified" in chosen.reason
        got = sess.run({"x": x})["y"]
        assert got.shape == (1, 5)
        np.testing.assert_allclose(got, _reference(path, {"x": x})[0], atol=ATOL, rtol=RTOL)
    finally:
        sess.close()


def test_cli_rewrite_for_ncnn_writes_a_file_both_engines_run(tmp_path: Path) -> None:
    import onnxruntime as ort

    from unirt.cli.main import cli

    _needs("ncnn")
    path = save(rm.focus(), tmp_path / "focus.onnx")
    out = tmp_path / "focus_ncnn.onnx"
    res = CliRunner().invoke(cli, ["rewrite", str(path), "--for", "ncnn", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "focus_slice" in res.output and out.exists()
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    want = _reference(path, {"x": x})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got[0], want, atol=ATOL, rtol=RTOL)
    raw = unirt.load(out, backend="ncnn", verify="never", rewrite=False)
    try:
        assert raw.route[-1].outcome == "chosen" and "rewrite" not in raw.route[-1].reason
        np.testing.assert_allclose(raw.run({"x": x})["y"], want, atol=ATOL, rtol=RTOL)
    finally:
        raw.close()
