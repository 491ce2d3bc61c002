"""Each built-in rewrite on a model built with onnx.helper, checked against the original's
numbers (ONNX Runtime in-process: these models are small and known safe), or against numpy
where the original runs nowhere."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from unirt.rewrite import RewriteContext
from unirt.rewrite.builtin import builtin_rewrites
from unirt.rewrite.builtin.clip_forms import ClipForms
from unirt.rewrite.builtin.decompose import Decompose
from unirt.rewrite.builtin.global_pool import GlobalPool
from unirt.rewrite.builtin.pool_rank import PoolRank
from unirt.rewrite.builtin.reduce_scalar import ReduceScalar
from unirt.rewrite.builtin.unit_kernel_axis import UnitKernelAxis
from unirt.testing import rewrite_models as rm


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _x(model: onnx.ModelProto) -> np.ndarray:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 3


def _rewrite(rewrite, model: onnx.ModelProto):
    fixed = copy.deepcopy(model)
    changes = rewrite.apply(fixed, RewriteContext())
    onnx.checker.check_model(fixed, full_check=True)
    return fixed, changes


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_rank_matches_pytorch_meaning(op: str) -> None:
    model = rm.pool_rank(op)
    x = _x(model)
    with pytest.raises(Exception, match="incorrect size"):
        _run(model, x)  # the original runs nowhere
    fixed, changes = _rewrite(PoolRank(), model)
    assert [c.op for c in changes] == [op] and "rank-4" in changes[0].what
    np.testing.assert_allclose(_run(fixed, x), rm.pool_rank_expected(x, op), atol=1e-6)


@pytest.mark.parametrize(("rewrite", "model", "atol"), [
    (UnitKernelAxis(), rm.unit_kernel_conv3d(), 1e-5),
    (UnitKernelAxis(), rm.c3d(), 1e-5),
    (GlobalPool(), rm.c3d(), 1e-6),
    (ReduceScalar(), rm.mean_to_scalar(), 1e-6),
    (ClipForms(), rm.relu6(), 0.0),
    (Decompose(), rm.unary("HardSwish"), 1e-6),
    (Decompose(), rm.unary("HardSigmoid", alpha=0.3, beta=0.4), 1e-6),
    (Decompose(), rm.unary("Mish", opset=18), 1e-5),
    (Decompose(), rm.unary("Gelu", opset=20), 1e-5),
    (Decompose(), rm.unary("Gelu", opset=20, approximate="tanh"), 1e-5),
], ids=lambda v: getattr(v, "name", None) or "")
def test_builtin_keeps_the_numbers(rewrite, model: onnx.ModelProto, atol: float) -> None:
    x = _x(model)
    fixed, changes = _rewrite(rewrite, model)
    assert changes, f"{rewrite.name} did not apply"
    assert {n.op_type for n in fixed.graph.node} != {n.op_type for n in model.graph.node}
    np.testing.assert_allclose(_run(fixed, x), _run(model, x), atol=atol, rtol=1e-5)


def test_relu6_becomes_relu_and_min() -> None:
    fixed, changes = _rewrite(ClipForms(), rm.relu6())
    assert [n.op_type for n in fixed.graph.node] == ["Relu", "Min"]
    assert "Relu + Min(6)" in changes[0].what


@pytest.mark.parametrize("rewrite", [r() for r in builtin_rewrites()], ids=lambda r: r.name)
def test_builtin_leaves_an_unrelated_model_untouched(rewrite) -> None:
    model = rm.unary("Relu")
    before = model.SerializeToString()
    assert rewrite.apply(model, RewriteContext()) == []
    assert model.SerializeToString() == before
