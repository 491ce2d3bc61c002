"""Engines' own printing stays out of the user's terminal: what they have to say comes back as
unirt's exceptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import unirt
from tests.rewrite.test_rewrite_asked import _baked
from unirt.errors import BackendError


def test_an_engine_error_is_one_clean_exception_not_stderr_noise(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """ONNX Runtime prints its errors in colour to stderr before raising them; unirt's
    BackendError carries the message, so the engine's own print is turned off."""
    with unirt.load(_baked(tmp_path / "m.onnx"), backend="onnxruntime") as s, \
            pytest.raises(BackendError, match="cannot be reshaped"):
        s.run({"x": np.ones((1, 32, 4), np.float32)})
    err = capfd.readouterr().err
    assert "onnxruntime" not in err and "\x1b[" not in err
