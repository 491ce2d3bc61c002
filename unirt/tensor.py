"""TensorInfo: how a model input or output is described to users, the same for every backend.

Descriptions come from the ONNX graph, not from the engine, so ``sess.inputs`` reads the same
whichever backend runs the model; a dynamic dimension is its symbolic name (``"batch"``) or
``None`` when the model leaves it unnamed.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

Dim = Union[int, str, None]


class TensorInfo(NamedTuple):
    """Name, shape and numpy dtype of one graph input or output.

    ``dtype`` is a ``numpy.dtype``; for inputs that are not tensors (sequences, optionals, maps)
    it is ``None`` and ``shape`` is ``None``: unirt passes those through unchecked.
    """

    name: str
    shape: tuple[Dim, ...] | None
    dtype: Any  # numpy.dtype | None; typed loosely so this module does not import numpy

    @property
    def is_dynamic(self) -> bool:
        """True when some dimension is not a fixed integer (or the rank is unknown)."""
        return self.shape is None or any(not isinstance(d, int) for d in self.shape)

    def describe(self) -> str:
        """``name: float32[batch,3,224,224]`` — the form used in messages and tables."""
        dt = "?" if self.dtype is None else str(self.dtype)
        if self.shape is None:
            return f"{self.name}: {dt}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {dt}[{dims}]"
