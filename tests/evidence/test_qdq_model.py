"""The property :func:`unirt.testing.models.qdq_saturating` stands for, which later tests rely
on: OpenVINO (exact precision, as unirt opens it) agrees with ONNX Runtime within unirt's exact
tolerance on the N(0,1) feeds unirt verifies on, and differs far beyond it on realistic
(log-mel-like) feeds, because its sigmoid output saturates on the first and not on the second.

What unirt concludes from it is not asserted here: these tests pin the model, so that a test of
the verdict can trust it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import unirt
from unirt.evidence.agreement import tolerance
from unirt.evidence.inputs import make_inputs
from unirt.model.info import read_model
from unirt.plugin.registry import get_registry
from unirt.testing import models as M

pytest.importorskip("onnxruntime.quantization", reason="the model is built by ONNX Runtime's "
                    "quantizer")


@pytest.fixture(scope="module")
def model() -> bytes:
    return M.qdq_saturating().SerializeToString()


def _realistic() -> list[dict[str, np.ndarray]]:
    return M.qdq_saturating_inputs(16, seed=1)


def _normal(model: bytes) -> list[dict[str, np.ndarray]]:
    """Feeds as unirt's verification makes them (seeded N(0,1) floats), several seeds."""
    info = read_model(model)
    return [make_inputs(info.inputs, seed=s) for s in range(16)]


def _outputs(model: bytes, backend: str, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    with unirt.load(model, backend=backend, verify="never") as sess:
        return np.concatenate([sess.run(f)["prob"] for f in feeds])


def _worst(actual: np.ndarray, reference: np.ndarray) -> float:
    """The largest |actual - reference| in units of unirt's exact tolerance for it."""
    atol, rtol = tolerance("exact", reference)
    return float((np.abs(actual - reference) / (atol + rtol * np.abs(reference))).max())


def _need(backend: str) -> None:
    status = get_registry().backend(backend).available()
    if not status.available:
        pytest.skip(f"{backend} not available: {status.reason}")


def test_the_same_bytes_on_every_build(model: bytes) -> None:
    assert M.qdq_saturating().SerializeToString() == model
    assert M.qdq_saturating(seed=1).SerializeToString() != model
    ops = {n.op_type for n in onnx.load_from_string(model).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Softmax", "Erf"} <= ops


def test_the_sigmoid_saturates_on_normal_feeds_and_not_on_realistic_ones(model: bytes) -> None:
    _need("onnxruntime")
    normal = _outputs(model, "onnxruntime", _normal(model))
    real = _outputs(model, "onnxruntime", _realistic())
    assert normal.min() > 0.98, normal.min()
    assert real.max() < 0.99 and real.min() > 0.01, (real.min(), real.max())  # [0.22, 0.96]
    assert np.mean((real > 0.1) & (real < 0.9)) > 0.9  # mostly mid-range


def test_openvino_differs_on_realistic_feeds_and_agrees_on_normal_ones(model: bytes) -> None:
    _need("onnxruntime")
    _need("openvino")
    real, normal = _realistic(), _normal(model)
    ref_real, ref_normal = (_outputs(model, "onnxruntime", f) for f in (real, normal))
    ov_real, ov_normal = (_outputs(model, "openvino", f) for f in (real, normal))
    assert _worst(ov_normal, ref_normal) <= 1.0  # measured: ~0.01
    assert _worst(ov_real, ref_real) > 10.0  # measured: ~150
    assert np.abs(ov_real - ref_real).max() > 0.02  # measured: ~0.1
