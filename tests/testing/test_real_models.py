"""The onnx wheel's nine real models through unirt on ONNX Runtime, against shipped outputs."""

from __future__ import annotations

import numpy as np
import pytest

import unirt
from unirt.testing.real_models import LIGHT_MODELS, light_case


@pytest.mark.parametrize("name", sorted(LIGHT_MODELS))
def test_light_model_matches_shipped_output(name: str) -> None:
    path, feeds, expected = light_case(name)
    rtol, atol = LIGHT_MODELS[name]
    with unirt.load(path, backend="onnxruntime") as sess:
        assert [t.name for t in sess.inputs] == list(feeds)
        out = sess.run(feeds)
    first = next(iter(out.values()))
    np.testing.assert_allclose(first, expected, rtol=rtol, atol=max(atol, 1e-5))
