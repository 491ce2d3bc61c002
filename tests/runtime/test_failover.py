"""A preferred engine is never the end of the route: an engine error at run time hands the call,
and the session, to the reference; an engine unirt could not check is not opened in place of a
reference that opens the model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import unirt
from unirt.errors import BackendError
from unirt.testing import models as M


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    return M.save(M.conv_net(batch="N"), tmp_path / "conv.onnx")


def _batch(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {"input": rng.standard_normal((n, 3, 16, 16)).astype(np.float32)}


def test_an_engine_error_at_run_time_moves_the_session_to_the_reference(
        conv: Path, fake_engines: None, caplog: pytest.LogCaptureFixture) -> None:
    sess = unirt.load(conv, prefer="fake-fragile", verify_live=False)
    assert sess.backend == "fake-fragile", sess.explain()
    ref = unirt.load(conv, backend="onnxruntime")
    np.testing.assert_allclose(sess.run(_batch(1))["probs"], ref.run(_batch(1))["probs"],
                               rtol=1e-5)
    with caplog.at_level(logging.WARNING, logger="unirt"):
        out = sess.run(_batch(4))
    np.testing.assert_allclose(out["probs"], ref.run(_batch(4))["probs"], rtol=1e-5)
    assert sess.backend == "onnxruntime"
    failed = [s for s in sess.route if s.backend == "fake-fragile" and s.outcome == "failed"]
    assert failed and "failed at run time at input=4x3x16x16" in failed[-1].reason
    assert "only 5D block layout is supported" in failed[-1].reason
    assert (sess.route[-1].backend, sess.route[-1].outcome) == ("onnxruntime", "swapped")
    assert "fake-fragile failed running conv.onnx at input=4x3x16x16" in caplog.text
    assert "the session now runs on onnxruntime" in caplog.text
    sess.run(_batch(1))  # and later calls stay there
    assert sess.backend == "onnxruntime"


def test_backend_equals_still_raises_the_engine_error(conv: Path, fake_engines: None) -> None:
    sess = unirt.load(conv, backend="fake-fragile")
    with pytest.raises(BackendError, match="only 5D block layout is supported"):
        sess.run(_batch(4))
    assert sess.backend == "fake-fragile"


def test_an_input_the_reference_refuses_too_raises_the_engine_error(
        tmp_path: Path, fake_engines: None) -> None:
    # Reshape to (-1, 7): a length that is no multiple of 7 fails on every engine.
    path = _reshape7(tmp_path)
    sess = unirt.load(path, prefer="fake-faithful", input_shapes={"x": (1, 21)})
    assert sess.backend == "fake-faithful", sess.explain()
    with pytest.raises(BackendError):
        sess.run({"x": np.zeros((1, 20), np.float32)})


def _reshape7(tmp_path: Path) -> Path:
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("s", TensorProto.INT64, [2], [-1, 7])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "reshape7.onnx"
    onnx.save(model, path)
    return path


def test_an_unverifiable_engine_is_not_opened_in_place_of_the_reference(
        tmp_path: Path, fake_engines: None, no_hints: None) -> None:
    """Without hints, every generated length (32, 64) fails on the reference, which opens the
    model: that is unirt's inputs failing, not the reference, so the preferred engine is not
    opened unverified over it."""
    path = _reshape7(tmp_path)
    sess = unirt.load(path, prefer="fake-faithful")
    assert sess.backend == "onnxruntime", sess.explain()
    step = sess.route[0]
    assert (step.backend, step.outcome) == ("fake-faithful", "rejected")
    assert "the reference (onnxruntime) opens the model and cannot run these inputs" \
        in step.reason
    assert "give input_shapes= or inputs=" in step.reason
    np.testing.assert_allclose(sess.run({"x": np.arange(21, dtype=np.float32)[None]})["y"],
                               np.arange(21, dtype=np.float32).reshape(3, 7))
    # At a length the model takes, it is verified and opened.
    right = unirt.load(path, prefer="fake-faithful", input_shapes={"x": (1, 21)})
    assert right.backend == "fake-faithful", right.explain()
    # backend= insists: opened unverified, with a warning.
    forced = unirt.load(path, backend="fake-faithful")
    assert forced.backend == "fake-faithful"
    assert forced.verification is not None and forced.verification.status == "unverified"
