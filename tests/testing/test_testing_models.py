"""The model builders of :mod:`unirt.testing.models` that stand for real models: they must be
what they claim (the topology, the parameter count) and run on the reference engine, or the
figures measured on them mean nothing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from unirt.testing import models as M

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def resnet18_64() -> onnx.ModelProto:
    return M.resnet18(batch="N", size=64)


def test_resnet18_has_resnet18s_topology_and_parameters(resnet18_64: onnx.ModelProto) -> None:
    onnx.checker.check_model(resnet18_64, full_check=True)
    ops = Counter(n.op_type for n in resnet18_64.graph.node)
    # 1 stem + 4 stages x 2 blocks x 2 convs + 3 projections (stages 2-4); one Add per block
    assert ops["Conv"] == ops["BatchNormalization"] == 20
    assert (ops["Add"], ops["MaxPool"], ops["Gemm"]) == (8, 1, 1)
    # torchvision's resnet18 has 11,689,512 parameters; BN's running mean and variance are
    # buffers there and initializers here: 2 x 4,800 channels more
    count = sum(numpy_helper.to_array(t).size for t in resnet18_64.graph.initializer)
    assert count == 11_689_512 + 2 * 4_800
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (resnet18_64.graph.input[0], resnet18_64.graph.output[0])]
    assert dims == [["N", 3, 64, 64], ["N", 1000]]


def test_resnet18_is_the_same_model_on_every_build(resnet18_64: onnx.ModelProto) -> None:
    assert M.resnet18(batch="N", size=64).SerializeToString() == \
        resnet18_64.SerializeToString()


def test_resnet18_runs_on_onnxruntime_row_by_row(resnet18_64: onnx.ModelProto) -> None:
    sess = ort.InferenceSession(resnet18_64.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    (y,) = sess.run(["logits"], {"input": x})
    assert y.shape == (2, 1000) and np.isfinite(y).all()
    assert not np.allclose(y[0], y[1])  # the two images give two answers
    (alone,) = sess.run(["logits"], {"input": x[1:]})
    np.testing.assert_allclose(alone[0], y[1], rtol=1e-4, atol=1e-3)  # rows do not mix
