"""The values a generated input takes: a range (LO, HI) or a set of values, as the user states
them (``--input-range``, ``--input-values``, ``input_ranges=``) and as cache keys hold them.

Kept apart from the arrays they shape (:mod:`unirt.evidence.inputs`) because they are parsed
and checked at the edges (the CLI, ``load``'s arguments) long before anything is generated, and
because their JSON form is part of every verdict's key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unirt.errors import UnirtError
from unirt.tensor import TensorInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


#: (LO, HI) of generated values for one input; ints both ends included, floats [LO, HI).
ValueRange = tuple[float, float]


@dataclass(frozen=True)
class Values:
    """The values one generated input takes: each element is one of ``items``.

    Why a set and not a range: a sample rate is 16000 or 8000 and nothing between (a graph that
    branches on ``Equal(sr, 16000)`` fails on anything else), and an attention mask is ones. A
    distinct type rather than a tuple, so that a set of two values is never read as (LO, HI),
    in a recipe or in a cache key (:func:`spec_json`)."""

    items: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))

    def draw(self, shape: Sequence[int], rng: np.random.Generator, seed: int = 0) -> np.ndarray:
        """Members of the set at ``shape``: a one-element array (a scalar sample rate) takes
        value ``seed`` modulo the set's size, so seed 0 gets the first and the next seed the
        next (verification's sets each run one branch); larger arrays are seeded draws."""
        import numpy as np

        pool = np.asarray(self.items)
        if math.prod(shape) == 1 or pool.size == 1:
            return np.full(tuple(shape), pool[seed % pool.size])
        return pool[rng.integers(0, pool.size, size=tuple(shape))]

    def describe(self) -> str:
        return ", ".join(_number_text(v) for v in self.items)


#: What a generated input's values are drawn from: a range or a set of values.
ValueSpec = ValueRange | Values


def _number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def spec_json(spec: ValueSpec) -> Any:
    """A value spec as it goes into a cache key: a range as ``[LO, HI]`` (the form keys already
    hold), a value set as ``{"values": [...]}``, so that the two never collide."""
    if isinstance(spec, Values):
        return {"values": list(spec.items)}
    return list(spec)


def spec_from_json(doc: Any) -> ValueSpec:
    """What :func:`spec_json` wrote, back as a range or a :class:`Values` set."""
    if isinstance(doc, Mapping):
        return Values(tuple(doc["values"]))
    lo, hi = doc
    return (lo, hi)


def specs_json(specs: Mapping[str, ValueSpec]) -> dict[str, Any]:
    """Input name -> :func:`spec_json`, sorted by name."""
    return {k: spec_json(v) for k, v in sorted(specs.items())}


def parse_values(text: str, name: str = "") -> Values:
    """``"16000,8000"`` -> ``Values((16000, 8000))`` (ints stay ints; order kept, repeats
    dropped: the first is what a scalar input gets)."""
    where = f" for {name!r}" if name else ""
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(parts):
        raise UnirtError(f"bad --input-values{where} {text!r}: write it as NAME=V1,V2,... "
                         "(e.g. sr=16000,8000)")
    return Values(tuple(dict.fromkeys(_numbers(parts, f"--input-values{where} {text!r}"))))


def _numbers(parts: Sequence[str], what: str) -> list[float]:
    """Each of ``parts`` as an int where it is one, else a float; else a UnirtError naming
    ``what`` (the option, the input and the text given)."""
    values: list[float] = []
    for p in parts:
        try:
            values.append(int(p))
        except ValueError:
            try:
                values.append(float(p))
            except ValueError:
                raise UnirtError(f"bad {what}: {p!r} is not a number") from None
    return values


def check_values(info: TensorInfo, values: Any, what: str = "input_values") -> Values:
    """A value set for ``info`` checked before any work starts: at least one finite number, whole
    numbers for an integer input and inside its dtype, 0/1 for a bool input."""
    import numpy as np

    items = values.items if isinstance(values, Values) else values
    name = info.name
    if isinstance(items, (str, bytes)) or not isinstance(items, (tuple, list)) or not items \
            or not all(isinstance(v, (int, float, np.integer, np.floating, bool))
                       for v in items):
        raise UnirtError(f"{what}[{name!r}] must be one or more numbers, not {values!r}")
    if not all(math.isfinite(v) for v in items):
        raise UnirtError(f"{what}[{name!r}] = {list(items)}: values must be finite")
    dtype = info.dtype
    if dtype is None or dtype.kind not in "fiub":
        raise UnirtError(f"{what}[{name!r}]: input {name!r} is "
                         f"{'not a tensor' if dtype is None else dtype}; value sets apply to "
                         "integer, bool and float inputs")
    if dtype.kind == "f":
        return Values(tuple(dict.fromkeys(float(v) for v in items)))
    if any(float(v) != int(v) for v in items):
        raise UnirtError(f"{what}[{name!r}] = {list(items)}: input {name!r} is {dtype}; "
                         "give whole numbers")
    low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    outside = [int(v) for v in items if not low <= int(v) <= high]
    if outside:
        raise UnirtError(f"{what}[{name!r}] = {list(items)}: {outside[0]} is outside {dtype} "
                         f"({low}..{high})")
    return Values(tuple(dict.fromkeys(int(v) for v in items)))


#: Generated integers without a range: small and non-negative, so that an index, a count or a
#: shape input is valid for almost any model.
DEFAULT_INT_RANGE = (0, 3)


def parse_range(text: str, name: str = "") -> ValueRange:
    """``"0,255"`` -> ``(0, 255)``; ``"-1.5,1.5"`` -> ``(-1.5, 1.5)`` (ints stay ints)."""
    parts = [p.strip() for p in text.split(",")]
    where = f" for {name!r}" if name else ""
    if len(parts) != 2 or not all(parts):
        raise UnirtError(f"bad --input-range{where} {text!r}: write it as NAME=LO,HI "
                         "(e.g. ids=0,30521 or x=-1,1)")
    lo, hi = _numbers(parts, f"--input-range{where} {text!r}")
    return lo, hi


def check_ranges(inputs: Sequence[TensorInfo], ranges: Mapping[str, Any],
                 what: str = "input_ranges") -> dict[str, Any]:
    """Ranges a caller gives for generated inputs (``load(input_ranges=)``, ``--input-range``),
    checked before any work starts: each names a numeric input, is (LO, HI) with LO <= HI,
    finite, integral for an integer input and within its dtype, or a :class:`Values` set
    (:func:`check_values`). Returns ranges as tuples."""
    import numpy as np

    if not isinstance(ranges, Mapping):
        raise UnirtError(f"{what} must be a dict of input name -> (low, high)")
    by_name = {t.name: t for t in inputs}
    out: dict[str, ValueSpec] = {}
    for name, value in ranges.items():
        if name not in by_name:
            raise UnirtError(f"{what} names {name!r}, which is not an input; inputs: "
                             f"{', '.join(by_name) or 'none'}")
        if isinstance(value, Values):
            out[name] = check_values(by_name[name], value, what)
            continue
        pair = list(value) if isinstance(value, (tuple, list)) else None
        if pair is None or len(pair) != 2 or not all(
                isinstance(v, (int, float, np.integer, np.floating))
                and not isinstance(v, bool) for v in pair):
            raise UnirtError(f"{what}[{name!r}] must be (low, high), not {value!r}")
        lo, hi = pair
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise UnirtError(f"{what}[{name!r}] = ({lo}, {hi}): low and high must be finite "
                             "numbers with low <= high")
        dtype = by_name[name].dtype
        if dtype is None or dtype.kind not in "fiu":
            raise UnirtError(f"{what}[{name!r}]: input {name!r} is "
                             f"{'not a tensor' if dtype is None else dtype}; ranges apply to "
                             "integer and float inputs")
        if dtype.kind in "iu":
            if float(lo) != int(lo) or float(hi) != int(hi):
                raise UnirtError(f"{what}[{name!r}] = ({lo}, {hi}): input {name!r} is {dtype}; "
                                 "give whole numbers")
            limits = np.iinfo(dtype)
            if int(lo) < limits.min or int(hi) > limits.max:
                raise UnirtError(f"{what}[{name!r}] = ({lo}, {hi}): outside {dtype} "
                                 f"({limits.min}..{limits.max})")
            out[name] = (int(lo), int(hi))
        else:
            out[name] = (float(lo), float(hi))
    return out
