"""TensorInfo: how a model input or output is described to users, the same for every backend.

Descriptions come from the ONNX graph, not from the engine, so ``sess.inputs`` reads the same
whichever backend runs the model; a dynamic dimension is its symbolic name (``"batch"``) or
``None`` when the model leaves it unnamed or declares it with a placeholder (see
:func:`normalize_dim`): a negative ``dim_value`` as PaddlePaddle writes, or a ``dim_param`` such
as ``"?"``, ``"-1"``, ``"None"`` or ``""``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeGuard, Union

Dim = Union[int, str, None]

#: ``dim_param`` words exporters write for "unknown" rather than as a name (compared lower-cased;
#: ``str(None)`` from Python exporters, ``null`` from JSON-minded ones).
PLACEHOLDER_WORDS = frozenset({"none", "null", "nil", "nan", "undefined", "unknown"})


def is_placeholder_param(param: str) -> bool:
    """True for a ``dim_param`` that names nothing: empty, a placeholder word (``"None"``,
    ``"null"``), or made only of digits, signs and punctuation (``"-1"``, ``"?"``, ``"*"``).

    Why: a real symbolic name (``"batch"``, ``"N"``, ``"unk__12"``, ``"2*seq_len"``) ties the
    dims that share it, and unirt varies it as one when probing; two ``"?"`` dims are not meant
    to be the same size, so a placeholder must read as an unnamed dim. A name needs a letter.
    """
    text = param.strip()
    return not any(c.isalpha() for c in text) or text.lower() in PLACEHOLDER_WORDS


def normalize_dim(dim: Dim) -> Dim:
    """One declared dimension as unirt represents it: a size ``>= 0``, a symbolic name, or
    ``None`` (anonymous dynamic).

    A negative size (PaddlePaddle's ``-1``) and a placeholder name (:func:`is_placeholder_param`)
    become ``None``: ONNX Runtime and OpenVINO accept any size there (measured on ORT 1.32 and
    OpenVINO 2026.4, which report such a dim as dynamic and run any batch), so unirt's checks
    must too. A size of ``0`` stays ``0``, though the spec-minded might call it a placeholder
    too: both engines treat it as fixed (they refuse any other size on an input declared so),
    and on an output it is a legal empty tensor, so unirt mirrors them.
    """
    if isinstance(dim, bool):  # not a size, though bool is an int
        return None
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    if isinstance(dim, str):
        return None if is_placeholder_param(dim) else dim
    return None


def is_static(dim: Dim) -> TypeGuard[int]:
    """True when ``dim`` is a fixed size every feed must match (an int ``>= 0``): the one test
    feed checks and input generation use, so that a ``TensorInfo`` built by hand with ``-1``
    (as some tools write) is read as dynamic too."""
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


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
        return self.shape is None or any(not is_static(d) for d in self.shape)

    def describe(self) -> str:
        """``name: float32[batch,3,224,224]`` — the form used in messages and tables."""
        dt = "?" if self.dtype is None else str(self.dtype)
        if self.shape is None:
            return f"{self.name}: {dt}[?]"
        dims = ",".join("?" if normalize_dim(d) is None else str(d) for d in self.shape)
        return f"{self.name}: {dt}[{dims}]"
