"""Making inputs for a model: shape strings, size limits, seeded random feeds, the shape sets a
verification runs. The values they take are :mod:`unirt.evidence.values`; input sets on disk are
:mod:`unirt.evidence.input_files`.

Shared by ``unirt run`` and everything later that needs inputs a model will accept (compare,
bench, verification probes), so all of them generate the same feeds for the same seed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unirt.errors import InputError, UnirtError
from unirt.evidence.values import DEFAULT_INT_RANGE, Values, ValueSpec, check_ranges
from unirt.tensor import TensorInfo, is_static, normalize_dim

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from unirt.model.info import ModelInfo


logger = logging.getLogger("unirt")

#: The size given to a dynamic dimension the user did not set.
DEFAULT_DYNAMIC_DIM = 1

#: Overrides the size limit on generated inputs: the most elements one input set may have.
MAX_ELEMENTS_ENV = "UNIRT_MAX_ELEMENTS"
#: The byte limit per input set when the available memory cannot be read (no /proc/meminfo).
FALLBACK_LIMIT_BYTES = 2 << 30
#: The share of the available memory one generated input set may take.
MEMORY_SHARE = 4


@dataclass(frozen=True)
class SizeLimit:
    """The most one generated input set may hold: ``amount`` elements or bytes (``unit``), and
    where the figure comes from (for the message that refuses a shape).

    Why a limit at all: a model of 89 bytes can declare a 1x3x200000x200000 input, and a shape
    typed on the command line can be as large; numpy would try to allocate it (894 GiB) and the
    caller's process would die of it, or of the OOM killer, instead of hearing which input is too
    large. The default follows the machine (a quarter of MemAvailable): a robot with 1 GiB free
    and a workstation with 100 GiB need different figures, and neither needs a constant."""

    amount: int
    unit: str  # "elements" or "bytes"
    origin: str

    def describe(self) -> str:
        figure = (f"{self.amount:,} elements" if self.unit == "elements"
                  else _bytes_text(self.amount))
        return f"{figure} per input set ({self.origin})"


def _bytes_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover - the loop returns


def _mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where there is none (macOS)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def size_limit() -> SizeLimit:
    """The limit in force now: ``UNIRT_MAX_ELEMENTS`` when set, else a quarter of the available
    memory (read each time: what is free changes), else 2 GiB."""
    raw = os.environ.get(MAX_ELEMENTS_ENV, "").strip()
    if raw:
        try:
            amount = int(raw.replace("_", ""))
        except ValueError:
            amount = -1
        if amount <= 0:
            raise UnirtError(f"{MAX_ELEMENTS_ENV}={raw!r}: write a positive number of elements")
        return SizeLimit(amount, "elements", f"{MAX_ELEMENTS_ENV}")
    available = _mem_available()
    if available is None:
        return SizeLimit(FALLBACK_LIMIT_BYTES, "bytes",
                         f"the available memory is unknown; set {MAX_ELEMENTS_ENV} to change it")
    return SizeLimit(max(1, available // MEMORY_SHARE), "bytes",
                     f"a quarter of the available memory; set {MAX_ELEMENTS_ENV} to change it")


def _itemsize(info: TensorInfo) -> int:
    """Bytes per generated element (an object array holds a pointer per element)."""
    dtype = info.dtype
    return 8 if dtype is None or dtype.kind in "OUS" else int(dtype.itemsize)


def check_sizes(inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]],
                limit: SizeLimit | None = None) -> None:
    """Refuse, before anything is allocated, a set of inputs larger than :func:`size_limit`,
    with an InputError naming the largest input, its shape and the limit. Sizes are Python ints
    (``math.prod``): a product that overflows int64 in numpy must not wrap to a small one."""
    by_name = {t.name: t for t in inputs}
    sized = [(by_name[n], tuple(s)) for n, s in shapes.items() if n in by_name]
    if not sized:
        return
    limit = limit or size_limit()
    counts = [(t, s, math.prod(s), math.prod(s) * _itemsize(t)) for t, s in sized]
    total = sum(c[2] if limit.unit == "elements" else c[3] for c in counts)
    if total <= limit.amount:
        return
    t, s, elements, size = max(counts, key=lambda c: c[3])
    dtype = "?" if t.dtype is None else str(t.dtype)
    what = (f"input {t.name!r}: shape {'x'.join(map(str, s)) or 'scalar'} is {elements:,} "
            f"elements ({_bytes_text(size)} of {dtype})")
    if len(counts) > 1 and (elements if limit.unit == "elements" else size) <= limit.amount:
        what += f", and the inputs together {total:,} {limit.unit}"
    raise InputError(f"{what}: over unirt's limit of {limit.describe()}")


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
    out as a bare ``ValueError`` that names no input; so is its size (:func:`check_sizes`), since
    every path that takes a shape (``load(input_shapes=)``, ``capabilities --shape``, ``run
    --shape``, input generation) comes through here before anything is allocated.
    """
    if given is not None:
        given = _check_given(info, given)
    if info.shape is None:
        if given is None:
            raise InputError(f"input {info.name!r} has no declared shape: give one with --shape")
        check_sizes([info], {info.name: given})
        return given
    if given is None:
        shape = tuple(d if is_static(d) else DEFAULT_DYNAMIC_DIM for d in info.shape)
        check_sizes([info], {info.name: shape})
        return shape
    declared = info.describe().split(": ", 1)[1]
    if len(given) != len(info.shape):
        raise InputError(f"input {info.name!r}: the shape must have rank {len(info.shape)} "
                         f"({declared}), got {'x'.join(map(str, given)) or 'a scalar'}")
    for axis, (want, got) in enumerate(zip(info.shape, given)):
        if is_static(want) and want != got:
            raise InputError(f"input {info.name!r}: dimension {axis} is fixed at {want}, "
                             f"got {got} (declared {declared})")
    check_sizes([info], {info.name: given})
    return given


def _check_given(info: TensorInfo, given: Sequence[int]) -> tuple[int, ...]:
    """``given`` as a tuple of ints >= 0, or an InputError naming the input (a string, a float
    or a ``-1`` passed through the Python API must not reach numpy)."""
    import operator

    if isinstance(given, (str, bytes)):
        raise InputError(f"input {info.name!r}: a shape is a sequence of ints, got {given!r} "
                         "(parse '1x3x224x224' with unirt.evidence.inputs.parse_shape)")
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


def random_array(info: TensorInfo, shape: Sequence[int], rng: np.random.Generator,
                 value_range: ValueSpec | None = None, *, seed: int = 0) -> np.ndarray:
    """Seeded values in a range every op accepts: N(0,1) floats, small non-negative ints
    (:data:`DEFAULT_INT_RANGE`); with ``value_range`` (checked by :func:`check_ranges`), floats
    uniform in [LO, HI) and ints uniform in LO..HI, both ends included, or, for a
    :class:`Values`, each element one of its values (:meth:`Values.draw`: a scalar at ``seed``
    0 gets the first, the value a graph compares with first)."""
    import numpy as np

    dtype = info.dtype
    if dtype is None:
        raise InputError(f"input {info.name!r} is not a tensor: unirt cannot generate it")
    if isinstance(value_range, Values):
        return value_range.draw(shape, rng, seed).astype(dtype)
    if value_range is not None and dtype.kind == "f":
        lo, hi = value_range
        return rng.uniform(lo, hi, size=shape).astype(dtype)
    if value_range is not None and dtype.kind in "iu":
        lo, hi = (int(v) for v in value_range)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        lo, hi = DEFAULT_INT_RANGE
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind in "OUS":
        return np.full(shape, "a", dtype=object)
    raise InputError(f"input {info.name!r}: cannot generate values of {dtype}")


def check_shapes(info: ModelInfo, shapes: Mapping[str, Any], what: str) -> None:
    """Shapes a caller gives for a model's inputs (``load(input_shapes=)``, ``--shape``): each
    names an input, is a sequence of non-negative integers and fits the declaration; else an
    error naming ``what`` and the input, before any work starts."""
    by_name = {t.name: t for t in info.inputs}
    for name, shape in shapes.items():
        if name not in by_name:
            raise UnirtError(f"{what} names {name!r}, which is not an input of {info.name}; "
                             f"inputs: {', '.join(by_name) or 'none'}")
        if isinstance(shape, (str, bytes)) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0
                for d in _as_sequence(shape)):
            raise UnirtError(f"{what}[{name!r}] must be a sequence of non-negative integers, "
                             f"not {shape!r}")
        resolve_shape(by_name[name], tuple(shape))


def _as_sequence(value: Any) -> Sequence[Any]:
    try:
        return list(value)
    except TypeError:
        return [value, None]  # not iterable: fails the element check


def _resolve_all(inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]] | None
                 ) -> dict[str, tuple[int, ...]]:
    """Every input's concrete shape (given ones checked against the declaration); a name that
    is no input is an error naming the inputs."""
    given = dict(shapes or {})
    unknown = set(given) - {i.name for i in inputs}
    if unknown:
        raise InputError(f"--shape names unknown input(s) {', '.join(sorted(unknown))}; inputs: "
                         f"{', '.join(i.name for i in inputs)}")
    return {i.name: resolve_shape(i, given.get(i.name)) for i in inputs}


def make_inputs(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0,
    ranges: Mapping[str, ValueSpec] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random feeds for every input, at ``shapes`` where given, values in ``ranges``
    where given (:func:`check_ranges`).

    Every shape is resolved and the whole set checked against :func:`size_limit` before the
    first array is made: a set refused for its size allocates nothing."""
    import numpy as np

    resolved = _resolve_all(inputs, shapes)
    ranges = check_ranges(inputs, ranges or {}, "--input-range") if ranges else {}
    check_sizes(inputs, resolved)
    rng = np.random.default_rng(seed)
    return {i.name: random_array(i, resolved[i.name], rng, ranges.get(i.name), seed=seed)
            for i in inputs}


def generated_dtype(info: TensorInfo) -> Any:
    """The dtype :func:`random_array` makes for ``info``, or the InputError it would raise:
    lets the parent of a verification know that a child can build the inputs without building
    them itself."""
    import numpy as np

    dtype = info.dtype
    if dtype is None:
        raise InputError(f"input {info.name!r} is not a tensor: unirt cannot generate it")
    if dtype.kind in "fiuc":
        return dtype
    if dtype.kind == "b":
        return np.dtype(bool)
    if dtype.kind in "OUS":
        return np.dtype(object)
    raise InputError(f"input {info.name!r}: cannot generate values of {dtype}")


#: Values planted in a float input by :func:`plant_nonfinite`, in this order.
NONFINITE_VALUES = (float("nan"), float("inf"), float("-inf"))
#: How many values are planted in each float input (fewer when it is smaller).
NONFINITE_COUNT = 6


def plant_nonfinite(feeds: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """``feeds`` with a few NaN, +inf and -inf at seeded positions of every float input (in
    place; returned for convenience). Integer, bool and string inputs are left as they are.

    Why: a verification that feeds only finite numbers cannot see an engine that turns a NaN
    into a finite number (measured: OpenVINO in 3 cases and ncnn in 2 where ONNX Runtime returns
    NaN), and a depth camera's invalid pixels are NaN."""
    import numpy as np

    rng = np.random.default_rng([seed, 0x4E414E])  # its own stream: the base values stay put
    for name in sorted(feeds):
        array = feeds[name]
        if array.dtype.kind not in "fc" or array.size == 0:
            continue
        count = min(array.size, NONFINITE_COUNT)
        where = rng.choice(array.size, size=count, replace=False)
        flat = array.reshape(-1)  # a view: the arrays made here are contiguous
        for i, pos in enumerate(sorted(int(p) for p in where)):
            flat[pos] = NONFINITE_VALUES[i % len(NONFINITE_VALUES)]
    return feeds


@dataclass(frozen=True)
class FeedRecipe:
    """A set of seeded inputs described rather than made: what :func:`make_inputs` takes
    (the input infos, their shapes, the seed), plus whether NaN/inf are planted.

    Why: verification sends this to the reference's child and to the backend's child, and each
    builds the same arrays (same seed: bit-identical), so the caller's process never allocates
    probe inputs (an 89-byte model can declare a 200 MB input) and no input crosses a pipe.
    Hashable, so a child that runs the same recipe again (a timing loop) builds it once.
    ``shapes`` are resolved (one per input, in the model's order) when the recipe is made, in
    the parent, so a shape that is wrong or too large is refused there, before any child starts.
    """

    inputs: tuple[TensorInfo, ...]
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    seed: int = 0
    nonfinite: bool = False
    #: (input name, (LO, HI) or :class:`Values`) for inputs whose values are drawn from a given
    #: range or set, by name: the reference's child and the backend's child must draw alike.
    ranges: tuple[tuple[str, ValueSpec], ...] = ()

    @classmethod
    def make(cls, inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]] | None = None,
             seed: int = 0, nonfinite: bool = False,
             ranges: Mapping[str, ValueSpec] | None = None) -> FeedRecipe:
        """A recipe checked as :func:`make_inputs` would check it (names, shapes, dtypes,
        size, ranges), so that building it in a child cannot fail where making it here did
        not."""
        resolved = _resolve_all(inputs, shapes)
        for i in inputs:
            generated_dtype(i)
        checked = check_ranges(inputs, ranges) if ranges else {}
        check_sizes(inputs, resolved)
        return cls(tuple(inputs), tuple(resolved.items()), seed, nonfinite,
                   tuple(sorted(checked.items())))

    @property
    def shape_of(self) -> dict[str, tuple[int, ...]]:
        """Input name -> the shape it is built at."""
        return dict(self.shapes)

    @property
    def has_float(self) -> bool:
        """Whether some input is a float tensor (where NaN/inf can be planted)."""
        return any(i.dtype is not None and i.dtype.kind in "fc"
                   and math.prod(dict(self.shapes)[i.name]) > 0 for i in self.inputs)

    def with_nonfinite(self) -> FeedRecipe:
        """The same inputs with NaN/inf planted (:func:`plant_nonfinite`)."""
        return FeedRecipe(self.inputs, self.shapes, self.seed, True, self.ranges)

    def signature(self) -> dict[str, tuple[list[int], str]]:
        """Input name -> (shape, dtype) of what :meth:`build` makes, without making it."""
        return {i.name: (list(dict(self.shapes)[i.name]), str(generated_dtype(i)))
                for i in self.inputs}

    def build(self) -> dict[str, np.ndarray]:
        """The arrays (what ``make_inputs(inputs, shapes, seed)`` returns, NaN/inf planted when
        asked)."""
        feeds = make_inputs(self.inputs, dict(self.shapes), self.seed, dict(self.ranges))
        return plant_nonfinite(feeds, self.seed) if self.nonfinite else feeds


def feeds_for(info: ModelInfo, feeds: Mapping[str, np.ndarray] | None,
              shapes: Mapping[str, Sequence[int]] | None, seed: int,
              ranges: Mapping[str, ValueSpec] | None = None, *,
              hints: Any = None) -> dict[str, np.ndarray]:
    """The given feeds, completed with seeded random ones (at ``shapes``, values in
    ``ranges``) for the rest; ``hints`` (an :class:`unirt.evidence.hints.InputHints`): what the
    graph says its inputs accept fills what the caller left unsaid
    (:func:`unirt.evidence.hints.hinted_feeds` passes them)."""
    given = dict(feeds or {})
    unknown = set(given) - {t.name for t in info.inputs}
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(sorted(unknown))}; inputs: "
                         f"{', '.join(t.name for t in info.inputs)}")
    todo = [t for t in info.inputs if t.name not in given]
    checked = check_ranges(info.inputs, ranges, "--input-range") if ranges else {}
    sizes = None
    if hints is not None and todo:
        checked, sizes = hints.under(checked), hints.sizes()
    wanted = fill_dynamic(todo, {k: v for k, v in (shapes or {}).items() if k not in given},
                          sizes=sizes)
    generated = make_inputs(todo, wanted, seed,
                            {k: v for k, v in checked.items() if k not in given})
    return {t.name: (given[t.name] if t.name in given else generated[t.name])
            for t in info.inputs}


def fill_dynamic(inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]] | None,
                 warn: bool = True, *, sizes: Mapping[str, tuple[int, int]] | None = None
                 ) -> dict[str, tuple[int, ...]]:
    """``shapes`` completed for every input with a dynamic dim it does not set: the sizes
    verification measures first (batch 1, other axes 32: an image model takes 32x32, where 1x1
    breaks a detector's strides; ``sizes`` as :func:`shape_sets` takes them), each said out loud
    (``warn``): a guessed size is the usual reason a model "fails" on every engine. ``run``,
    ``compare``, ``bench``, ``tune`` and ``capabilities --probe`` all guess the same way."""
    wanted = {k: tuple(v) for k, v in (shapes or {}).items()}
    unset = [t for t in inputs if t.name not in wanted and t.shape is not None
             and not all(is_static(d) for d in t.shape)]
    if unset:
        base = shape_sets(unset, sizes=sizes)[0][1]
        for t in unset:
            if t.name not in base:
                continue
            wanted[t.name] = base[t.name]
            if warn:
                logger.warning("%s", unset_dims_warning(t, base[t.name]))
    return wanted


def unset_dims_warning(info: TensorInfo, shape: Sequence[int]) -> str:
    """``input 'x': dim 0 ('batch') not given, using 1; set it with --shape x=1x8``: which
    dynamic dims of ``info`` got which size in ``shape``, and the flag that sets them."""
    axes = [(axis, d) for axis, d in enumerate(info.shape or ()) if not is_static(d)]
    names = ", ".join(f"{axis} ({normalize_dim(d)!r})" if isinstance(normalize_dim(d), str)
                      else f"{axis} (unnamed)" for axis, d in axes)
    sizes = ", ".join(str(shape[axis]) for axis, _ in axes)
    many = len(axes) > 1
    return (f"input {info.name!r}: dim{'s' if many else ''} {names} not given, using {sizes}; "
            f"set {'them' if many else 'it'} with --shape {info.name}="
            f"{'x'.join(map(str, shape))}")


#: Sizes given to dynamic dimensions: the base probe, and the other size that shows whether a
#: declared-dynamic axis really is dynamic. Axis 0 is taken for a batch axis; others for sizes.
BATCH_SIZES = (1, 2)
OTHER_SIZES = (32, 64)


def dynamic_dims(info: TensorInfo) -> list[tuple[int, str]]:
    """(axis, symbol) of each dynamic dim of ``info``: its name, or ``input[axis]`` for a
    placeholder ("?", "-1", a negative size), which names nothing: each such dim is its own."""
    out = []
    for axis, d in enumerate(info.shape or ()):
        if is_static(d):
            continue
        named = normalize_dim(d)
        out.append((axis, named if isinstance(named, str) else f"{info.name}[{axis}]"))
    return out


def shape_sets(inputs: Sequence[TensorInfo], declared: Mapping[str, Sequence[int]] | None = None,
               *, sizes: Mapping[str, tuple[int, int]] | None = None
               ) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    """(label, shapes) to probe: ``base`` (declared shapes; dynamic dims at batch 1 / size 32),
    then one set per dynamic dimension symbol at its other size (``T=64``), so that a model that
    declares an axis dynamic but works at one size only is caught. An unnamed dim (``None``, or
    a placeholder such as ``-1`` or ``"?"`` in a hand-built TensorInfo) is varied on its own
    (``x[2]=64``): two ``"?"`` dims are not declared equal. ``sizes``: symbol (or
    ``"input[axis]"``) -> (base, other) where the graph says the defaults do not fit
    (:meth:`unirt.evidence.hints.InputHints.sizes`); inputs in ``declared`` keep their shapes. A
    set over :func:`size_limit` is an InputError here, before a child is started for it."""
    declared = {k: tuple(v) for k, v in (declared or {}).items()}
    symbols: dict[str, tuple[int, int]] = {}
    where: dict[str, list[tuple[str, int]]] = {}
    for t in inputs:
        if t.shape is None or t.dtype is None or t.name in declared:
            continue
        for axis, sym in dynamic_dims(t):
            symbols.setdefault(sym, (sizes or {}).get(sym)
                               or (BATCH_SIZES if axis == 0 else OTHER_SIZES))
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
    limit = size_limit()
    for _, shapes in sets:  # before any child is started or any input made
        check_sizes(inputs, shapes, limit)
    return sets


