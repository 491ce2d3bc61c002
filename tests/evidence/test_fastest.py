"""prefer="fastest": measured once on the model, wrong backends never ranked, then cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt.evidence import timing as fastest
from unirt.testing import models as M


def test_fastest_ranks_only_backends_that_pass_and_is_cached(
        tmp_path: Path, fake_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIRT_VERIFY_TIMEOUT", "20")
    path = M.save(M.conv_net(), tmp_path / "conv.onnx")
    sess = unirt.load(path, prefer="fastest", device="cpu", exclude=["fake-hang"])
    first = sess.route[0]
    assert first.outcome == "chosen" and first.backend == sess.backend
    assert first.reason.startswith("preferred: fastest #1 of ")
    assert "fake-approx" not in first.reason.split(";")[0]  # wrong numbers are never ranked
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = unirt.load(path, backend="onnxruntime")
    np.testing.assert_allclose(sess(x), ref(x), atol=1e-4)

    def no_measuring(*a, **k):
        raise AssertionError("a cached ranking must not measure again")

    monkeypatch.setattr(fastest, "_measure", no_measuring)
    again = unirt.load(path, prefer="fastest", device="cpu", exclude=["fake-hang"])
    assert again.backend == sess.backend and "(cached)" in again.route[0].reason


def test_ranking_rejects_wrong_numbers_and_crashes(tmp_path: Path, fake_engines: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    info = unirt.read_model(M.save(M.conv_net(), tmp_path / "conv.onnx"))
    names = ["onnxruntime", "fake-approx", "fake-segfault", "fake-faithful"]
    ranking = fastest.rank(info, names, {n: "test" for n in names}, "exact", {})
    assert sorted(ranking.order) == ["fake-faithful", "onnxruntime"]
    assert ranking.rejected["fake-approx"].startswith("wrong numbers: probs")
    assert ranking.rejected["fake-segfault"].startswith("crashed (signal SIGSEGV)")
    assert all(ranking.median_s[n] > 0 for n in ranking.order)
    assert "fastest #1 of 2 that pass" in ranking.describe(ranking.order[0])


def test_fastest_is_only_a_prefer_value(tmp_path: Path) -> None:
    path = M.save(M.tiny(), tmp_path / "tiny.onnx")
    with pytest.raises(unirt.BackendNotFoundError, match="unknown backend 'fastest'"):
        unirt.load(path, backend="fastest")
