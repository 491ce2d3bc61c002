"""Making and reading inputs for a model: shape strings, seeded random feeds, .npy files.

Shared by ``unirt run`` and everything later that needs inputs a model will accept (compare,
bench, verification probes), so all of them generate the same feeds for the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError, UnirtError
from .tensor import TensorInfo, is_static, normalize_dim

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .model import ModelInfo

#: The size given to a dynamic dimension the user did not set.
DEFAULT_DYNAMIC_DIM = 1


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` (or ``"1,3,224,224"``) -> ``(1, 3, 224, 224)``; ``""`` is a scalar."""
    text = text.strip().strip("[]()")
    if not text:
        return ()
    parts = text.replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise UnirtError(f"bad shape {text!r}: write it as 1x3x224x224") from None
    if any(d < 0 for d in dims):
        raise UnirtError(f"bad shape {text!r}: dimensions must be >= 0")
    return dims


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}`` (split at the last ``=``)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise UnirtError(f"bad {what} {item!r}: write it as NAME=VALUE")
        out[name] = value
    return out


def resolve_shape(info: TensorInfo, given: Sequence[int] | None = None) -> tuple[int, ...]:
    """The concrete shape to use for ``info``: ``given`` (checked against static dims) or the
    declared shape with dynamic dims set to :data:`DEFAULT_DYNAMIC_DIM`.

    Dynamic dims are whatever :func:`~unirt.tensor.is_static` rejects, so a ``-1`` or ``"?"``
    left in a hand-built TensorInfo gets a size too. ``given`` is checked here, where the input's
    name is known, because a negative or non-integer size would otherwise reach numpy and come
    out as a bare ``ValueError`` that names no input.
    """
    if given is not None:
        given = _check_given(info, given)
    if info.shape is None:
        if given is None:
            raise InputError(f"input {info.name!r} has no declared shape: give one with --shape")
        return given
    if given is None:
        return tuple(d if is_static(d) else DEFAULT_DYNAMIC_DIM for d in info.shape)
    declared = info.describe().split(": ", 1)[1]
    if len(given) != len(info.shape):
        raise InputError(f"input {info.name!r}: the shape must have rank {len(info.shape)} "
                         f"({declared}), got {'x'.join(map(str, given)) or 'a scalar'}")
    for axis, (want, got) in enumerate(zip(info.shape, given)):
        if is_static(want) and want != got:
            raise InputError(f"input {info.name!r}: dimension {axis} is fixed at {want}, "
                             f"got {got} (declared {declared})")
    return given


def _check_given(info: TensorInfo, given: Sequence[int]) -> tuple[int, ...]:
    """``given`` as a tuple of ints >= 0, or an InputError naming the input (a string, a float
    or a ``-1`` passed through the Python API must not reach numpy)."""
    import operator

    if isinstance(given, (str, bytes)):
        raise InputError(f"input {info.name!r}: a shape is a sequence of ints, got {given!r} "
                         "(parse '1x3x224x224' with unirt.inputs.parse_shape)")
    try:
        dims = tuple(operator.index(d) for d in given)
    except TypeError:
        raise InputError(f"input {info.name!r}: a shape is a sequence of ints, "
                         f"got {given!r}") from None
    if any(d < 0 for d in dims):
        declared = info.describe().split(": ", 1)[1]
        raise InputError(f"input {info.name!r}: bad shape {'x'.join(map(str, dims))} for "
                         f"{declared}: sizes must be >= 0 (give each dynamic dim a size)")
    return dims


def random_array(info: TensorInfo, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Seeded values in a range every op accepts: N(0,1) floats, small non-negative ints."""
    import numpy as np

    dtype = info.dtype
    if dtype is None:
        raise InputError(f"input {info.name!r} is not a tensor: unirt cannot generate it")
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 4, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind in "OUS":
        return np.full(shape, "a", dtype=object)
    raise InputError(f"input {info.name!r}: cannot generate values of {dtype}")


def make_inputs(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded random feeds for every input, at ``shapes`` where given."""
    import numpy as np

    shapes = dict(shapes or {})
    unknown = set(shapes) - {i.name for i in inputs}
    if unknown:
        raise InputError(f"--shape names unknown input(s) {', '.join(sorted(unknown))}; inputs: "
                         f"{', '.join(i.name for i in inputs)}")
    rng = np.random.default_rng(seed)
    return {i.name: random_array(i, resolve_shape(i, shapes.get(i.name)), rng) for i in inputs}


def load_npy(path: str | Path, name: str) -> np.ndarray:
    """Read one input from a .npy file (pickles refused), naming the input on failure."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(f"input {name!r}: file not found: {path}")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"input {name!r}: {path} is not a readable .npy file ({exc})") from exc


def feeds_for(info: ModelInfo, feeds: Mapping[str, np.ndarray] | None,
              shapes: Mapping[str, Sequence[int]] | None, seed: int) -> dict[str, np.ndarray]:
    """The given feeds, completed with seeded random ones (at ``shapes``) for the rest."""
    given = dict(feeds or {})
    unknown = set(given) - {t.name for t in info.inputs}
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(sorted(unknown))}; inputs: "
                         f"{', '.join(t.name for t in info.inputs)}")
    generated = make_inputs([t for t in info.inputs if t.name not in given],
                            {k: v for k, v in (shapes or {}).items() if k not in given}, seed)
    return {t.name: (given[t.name] if t.name in given else generated[t.name])
            for t in info.inputs}


#: Sizes given to dynamic dimensions: the base probe, and the other size that shows whether a
#: declared-dynamic axis really is dynamic. Axis 0 is taken for a batch axis; others for sizes.
BATCH_SIZES = (1, 2)
OTHER_SIZES = (32, 64)


def shape_sets(inputs: Sequence[TensorInfo], declared: Mapping[str, Sequence[int]] | None = None
               ) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    """(label, shapes) to probe: ``base`` (declared shapes; dynamic dims at batch 1 / size 32),
    then one set per dynamic dimension symbol at its other size (``T=64``), so that a model that
    declares an axis dynamic but works at one size only is caught. An unnamed dim (``None``, or
    a placeholder such as ``-1`` or ``"?"`` in a hand-built TensorInfo) is varied on its own
    (``x[2]=64``): two ``"?"`` dims are not declared equal."""
    declared = {k: tuple(v) for k, v in (declared or {}).items()}
    symbols: dict[str, tuple[int, int]] = {}
    where: dict[str, list[tuple[str, int]]] = {}
    for t in inputs:
        if t.shape is None or t.dtype is None or t.name in declared:
            continue
        for axis, d in enumerate(t.shape):
            if is_static(d):
                continue
            # A placeholder ("?", "-1", a negative size) names nothing: each such dim is its own.
            named = normalize_dim(d)
            sym = named if isinstance(named, str) else f"{t.name}[{axis}]"
            symbols.setdefault(sym, BATCH_SIZES if axis == 0 else OTHER_SIZES)
            where.setdefault(sym, []).append((t.name, axis))

    def build(values: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for t in inputs:
            if t.shape is None or t.dtype is None:
                continue
            if t.name in declared:
                out[t.name] = resolve_shape(t, declared[t.name])
                continue
            dims = [d if is_static(d) else 0 for d in t.shape]
            for sym, places in where.items():
                for name, axis in places:
                    if name == t.name:
                        dims[axis] = values[sym]
            out[t.name] = tuple(dims)
        return out

    base = {s: b for s, (b, _) in symbols.items()}
    sets = [("base", build(base))]
    sets += [(f"{sym}={alt}", build({**base, sym: alt})) for sym, (_, alt) in symbols.items()]
    return sets
