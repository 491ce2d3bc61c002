"""The operating point on a real model (the PP-OCR direction classifier from the pinned
rapidocr wheel): judged on the crops an application sends, tuned on them, and opened tuned.

The crops are built as rapidocr's classifier preprocessing builds them: text-line images
resized to height 48, padded to width 192, scaled to [-1, 1] with mean 0.5 and std 0.5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import unirt
from unirt.cli.main import cli
from unirt.evidence import timing as fastest
from unirt.evidence import verify as verify_mod
from unirt.evidence.input_files import save_input_sets


def _crops(n: int, seed: int) -> np.ndarray:
    """``n`` text-line crops, 3x48x192: dark strokes of glyph height on a light background,
    some lines shorter than the crop (right padding with zeros, as rapidocr pads)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 3, 48, 192), np.float32)
    for i in range(n):
        width = int(rng.integers(96, 193))
        img = np.full((48, width), 0.92, np.float32)
        x = 4
        while x < width - 10:  # glyphs: a few vertical and horizontal strokes each
            w = int(rng.integers(6, 14))
            img[12:36, x:x + 2] = 0.1
            img[int(rng.integers(12, 34)):, x:x + w][:2] = 0.1
            if rng.random() < 0.5:
                img[12:36, x + w - 2:x + w] = 0.1
            x += w + int(rng.integers(2, 6))
        img += rng.normal(0, 0.02, img.shape).astype(np.float32)
        if i % 2:
            img = img[::-1, ::-1]  # upside down: what the classifier is there to find
        out[i, :, :, :width] = (np.clip(img, 0, 1) - 0.5) / 0.5
    return out


@pytest.fixture(autouse=True)
def _short_rankings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rankings timed in fewer rounds: these tests are about where a ranking is measured and
    found, not about its figures."""
    monkeypatch.setattr(fastest, "ROUNDS", 2)
    monkeypatch.setattr(fastest, "RUNS_PER_ROUND", 2)


def _no_child(*a: Any, **k: Any) -> Any:
    raise AssertionError("no child process may start on this path")


def test_ncnn_is_judged_on_the_crops_and_right_there(corpus_models: Any) -> None:
    if not unirt.plugin.registry.get_registry().backend("ncnn").available().available:
        pytest.skip("ncnn is not installed")
    path = corpus_models.path("ppocr_mobile_cls")
    crops = {"x": _crops(2, seed=0)}
    sess = unirt.load(path, backend="ncnn", inputs=crops)
    v = sess.verification
    assert v is not None and v.status == "verified"
    assert v.result.evidence.startswith("your inputs (1 set,")
    ref = unirt.load(path, backend="onnxruntime")
    name = sess.outputs[0].name
    np.testing.assert_allclose(sess.run(crops)[name], ref.run(crops)[name], atol=1e-4)


def test_tune_on_crops_then_a_plain_load_opens_the_tuned_winner(
        corpus_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = corpus_models.path("ppocr_mobile_cls")
    save_input_sets(tmp_path / "crops", [{"x": _crops(2, seed=1)}, {"x": _crops(2, seed=2)}])
    names = [n for n in ("onnxruntime", "openvino", "opencv")
             if unirt.plugin.registry.get_registry().backend(n).available().available]
    res = CliRunner().invoke(cli, ["tune", str(path), "--backends", ",".join(names),
                                   "--load-inputs", str(tmp_path / "crops")])
    assert res.exit_code == 0, res.output
    assert "x=2x3x48x192" in res.output
    monkeypatch.setattr(verify_mod, "probe", _no_child)
    monkeypatch.setattr(fastest, "_measure", _no_child)
    sess = unirt.load(path)
    assert sess.route[0].reason.startswith("tuned: fastest #1"), sess.explain()
    assert "at x=2x3x48x192 on your inputs" in sess.route[0].reason
    crops = {"x": _crops(2, seed=3)}
    ref = unirt.load(path, backend="onnxruntime")
    name = sess.outputs[0].name
    np.testing.assert_allclose(sess.run(crops)[name], ref.run(crops)[name], atol=1e-4)
