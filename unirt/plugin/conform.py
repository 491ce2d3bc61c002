"""Making an engine's output array match what the model declares (shape and dtype).

Engines that are not ONNX-native hand back what their own tensor type holds: OpenCV DNN returns
``None`` for an empty tensor, float32 for a float16 output, int32 for int64 in its classic engine,
raw uint16 for bf16, and may drop or add unit axes; ncnn returns float32 blobs without the batch
axis. unirt promises every backend's outputs in the model's declared shapes and dtypes, so each
such backend needs the same conversion, done without guessing: reshape only when the element
count fits, cast only when no value changes, and otherwise raise a :class:`BackendError` that
says what the engine returned and what the model declares.

Shared by every backend whose engine is not ONNX-native (OpenCV DNN, ncnn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unirt.errors import BackendError
from unirt.tensor import Dim, TensorInfo

#: numpy dtype names (ml_dtypes) whose values engines pass around as raw 16-bit words.
RAW16_DTYPES = frozenset({"bfloat16"})


def _fmt(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def resolve_shape(
    declared: Sequence[Dim] | None, dims: Mapping[str, int]
) -> tuple[int | None, ...] | None:
    """The declared shape with symbolic dims bound from ``dims`` (sizes seen in the feeds);
    dims that stay unknown are ``None``. ``None`` when the rank itself is unknown."""
    if declared is None:
        return None
    return tuple(d if isinstance(d, int) else dims.get(d) if isinstance(d, str) else None
                 for d in declared)


def _fits(shape: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape, want))


def _target_shape(value: np.ndarray, want: tuple[int | None, ...], label: str) -> tuple[int, ...]:
    """The shape to reshape ``value`` to, where the element count decides it unambiguously."""
    unknown = [i for i, d in enumerate(want) if d is None]
    known = int(np.prod([d for d in want if d is not None], dtype=np.int64))
    if not unknown and known == value.size:
        return tuple(int(d) for d in want)  # type: ignore[arg-type]
    if len(unknown) == 1 and known and value.size % known == 0:
        shape = list(want)
        shape[unknown[0]] = value.size // known
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]
    raise BackendError(
        f"{label}: the engine returned shape {_fmt(value.shape)} ({value.size} elements), "
        f"which does not fit the declared shape {_fmt(want)}"
    )


def _cast(value: np.ndarray, dtype: np.dtype, label: str) -> np.ndarray:
    """``value`` as ``dtype``, refusing any cast that would change a value."""
    got = value.dtype
    if dtype.name in RAW16_DTYPES and got.itemsize == 2 and got.kind in "ui":
        return value.view(dtype)  # raw bit patterns, e.g. OpenCV's bf16 as uint16
    if got.kind not in "biuf" or dtype.kind not in "biuf":
        raise BackendError(f"{label}: the engine returned {got} where the model declares {dtype}")
    if value.size == 0 or np.can_cast(got, dtype, casting="safe"):
        return value.astype(dtype)
    if dtype.kind == "f":
        # A float16 output computed in float32 (or an int widened to float) must come back in
        # the declared precision: rounding to it is what the model asks for.
        return value.astype(dtype)
    if dtype.kind == "b":
        if not np.isin(value, (0, 1)).all():
            raise BackendError(f"{label}: the engine returned {got} values other than 0 and 1 "
                               "for a bool output")
        return value.astype(dtype)
    # Integer target from float or a wider/other-signed integer: every value must survive.
    if got.kind == "f" and not (np.isfinite(value).all() and (np.round(value) == value).all()):
        raise BackendError(f"{label}: the engine returned non-integer {got} values for a "
                           f"{dtype} output")
    info = np.iinfo(dtype)
    lo, hi = value.min(), value.max()
    if lo < info.min or hi > info.max:
        raise BackendError(f"{label}: the engine returned {got} values ({lo}..{hi}) outside the "
                           f"range of the declared {dtype}")
    return value.astype(dtype)


def conform(value: Any, info: TensorInfo, dims: Mapping[str, int], label: str) -> np.ndarray:
    """``value`` (an engine's output, or ``None`` for an empty one) in ``info``'s shape and dtype.

    ``dims`` binds symbolic dims of the declared shape (from the feeds' shapes), so a dynamic
    output can still be checked and an empty one rebuilt. ``label`` starts every error message
    (``"opencv: model.onnx output 'y'"``).
    """
    want = resolve_shape(info.shape, dims)
    dtype = info.dtype
    if value is None:
        if want is None or dtype is None:
            raise BackendError(f"{label}: the engine returned no tensor, and the model declares "
                               f"no shape to make an empty one from")
        unknown = [i for i, d in enumerate(want) if d is None]
        if 0 in want and not unknown:
            return np.empty(tuple(int(d) for d in want), dtype)  # type: ignore[arg-type]
        if len(unknown) == 1 and 0 not in want:
            shape = [0 if d is None else int(d) for d in want]
            return np.empty(tuple(shape), dtype)
        raise BackendError(
            f"{label}: the engine returned no tensor (an empty output), and its shape "
            f"{_fmt(want)} cannot be told from the declared {_fmt(info.shape)}"
        )
    if not isinstance(value, np.ndarray):
        value = np.asarray(value)
    if want is not None and not _fits(value.shape, want):
        value = value.reshape(_target_shape(value, want, label))
    if dtype is not None and value.dtype != dtype:
        value = _cast(value, np.dtype(dtype), label)
    return value
