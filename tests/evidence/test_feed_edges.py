"""Every kind of feed has a defined answer: the array forms numpy users hand in run and give the
same numbers; what cannot be a tensor of the declared dtype is an ``InputError`` naming the
input; NaN and inf pass through untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import unirt
from unirt.errors import InputError
from unirt.testing import models as M


@pytest.fixture
def sess(tmp_path: Path) -> Any:
    s = unirt.load(M.save(M.conv_net("N"), tmp_path / "conv.onnx"), backend="onnxruntime")
    yield s
    s.close()


def _x(n: int = 1) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(np.float32)


def test_array_forms_give_the_same_numbers(sess: Any) -> None:
    x = _x()
    want = sess(x)
    readonly = x.copy()
    readonly.flags.writeable = False
    fortran = np.asfortranarray(x)
    strided = np.repeat(x, 2, axis=3)[..., ::2]
    assert not strided.flags.c_contiguous
    for form in (readonly, fortran, strided, x.tolist()):
        np.testing.assert_array_equal(sess(form), want)


def test_nan_and_inf_pass_through_untouched(sess: Any) -> None:
    x = _x()
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 0, 0] = np.inf
    out = sess(x)
    raw = sess._impl.run({"input": x}, ["probs"])[0]
    np.testing.assert_array_equal(np.isnan(out), np.isnan(raw))


def test_a_zero_size_batch_has_a_defined_answer(sess: Any) -> None:
    try:
        out = sess(np.zeros((0, 3, 16, 16), np.float32))
    except unirt.UnirtError as exc:  # the engine refused it: a clear error naming the backend
        assert "onnxruntime" in str(exc)
    else:
        assert out.shape == (0, 10)


@pytest.mark.parametrize("feed, match", [
    (None, "input 'input'"),
    ("not a tensor", "input 'input'"),
    (np.zeros((1, 3, 16, 16), np.float64), "dtype"),
    (np.zeros((1, 3, 16), np.float32), "rank"),
    (np.zeros((1, 4, 16, 16), np.float32), "dimension 1"),
    ([[1, 2], [3]], "input 'input'"),
])
def test_what_cannot_be_the_declared_tensor_is_an_input_error(sess: Any, feed: Any,
                                                              match: str) -> None:
    with pytest.raises(InputError, match=match):
        sess.run({"input": feed})


def test_unknown_and_missing_inputs_are_input_errors(sess: Any) -> None:
    with pytest.raises(InputError, match="nope"):
        sess.run({"input": _x(), "nope": _x()})
    with pytest.raises(InputError, match="input"):
        sess.run({})
