"""The operating point: the inputs an application actually sends a model.

A verdict, a timing and a route are only as good as the inputs behind them. Generated N(0,1)
values at guessed shapes let a quantized model's sigmoid saturate on every engine, so two engines
that differ by 29% on real audio look alike. So the user's own inputs (``load(inputs=...)``,
``--load-inputs DIR``, ``-i NAME=FILE.npy``, a serve config's ``inputs``) are the first source of
evidence: verification, tuning, capability probes and the serving plan run on them, at their
shapes, and their digest is part of every verdict's cache key, so a verdict on generated inputs
is never taken for one on the user's.

:class:`InputSets` is that evidence: one or more feed dicts, checked against the model once,
thinned to at most :data:`MAX_SETS` (evenly: a folder of 500 recorded frames must not cost 500
child runs per candidate), and named by a digest of their content. A tuning result remembers its
input sets by digest; :func:`remember` keeps small ones in the artifact cache so that a later
plain ``load(path)`` can verify the tuned winner on the same arrays (:func:`recall`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.errors import InputError, UnirtError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from unirt.model.info import ModelInfo

logger = logging.getLogger("unirt")

#: The most input sets one verification runs; more are thinned evenly (the first and the last
#: kept), and the digest is of the sets kept, so it names exactly what was judged.
MAX_SETS = 16
#: Input sets at most this large (bytes, all sets together) are kept in the cache with a tuning
#: result, so that the remembered operating point can be verified again on them.
REMEMBER_BYTES = 64 << 20
#: The cache section holding remembered input sets, keyed by digest.
CACHE_SECTION = "inputs"
#: How a digest is shown (its first characters; the whole one is in keys and files).
SHORT_DIGEST = 12


def shape_text(shapes: Mapping[str, Sequence[int]]) -> str:
    """``x=1x3x48x192, sr=scalar``: how every command prints a set of input shapes."""
    return ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in shapes.items())


@dataclass(frozen=True, eq=False)
class InputSets:
    """Input sets a user gave, checked against the model (every input present, dtypes, ranks
    and static dims as declared, each set within the size limit).

    ``sets``: feed dicts in the model's input order; ``digest``: sha256 of their names, dtypes,
    shapes and bytes; ``origin``: where they came from, for messages (``inputs=``,
    ``--load-inputs DIR``); ``given``: how many sets the user gave before thinning."""

    sets: tuple[dict[str, np.ndarray], ...]
    digest: str
    origin: str
    given: int

    @property
    def shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The shapes of each set, in order."""
        return [{k: tuple(v.shape) for k, v in s.items()} for s in self.sets]

    @property
    def first_shapes(self) -> dict[str, tuple[int, ...]]:
        """The first set's shapes: what an engine that is built per shape is built for."""
        return self.shapes[0]

    @property
    def distinct_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """Each different shape signature once, in first-seen order."""
        seen: list[dict[str, tuple[int, ...]]] = []
        for s in self.shapes:
            if s not in seen:
                seen.append(s)
        return seen

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(a, "nbytes", 0)) for s in self.sets for a in s.values())

    def labels(self) -> list[str]:
        """One label per set, as verification names what it ran."""
        n = len(self.sets)
        return [f"input set {i + 1} of {n}" if n > 1 else "your input"
                for i in range(n)]

    def short(self) -> str:
        """``your inputs (3 sets, 1a2b3c4d5e6f)``: what a verdict was measured on."""
        sets = f"{len(self.sets)} set{'s' if len(self.sets) != 1 else ''}"
        thinned = f" of {self.given}" if self.given != len(self.sets) else ""
        return f"your inputs ({sets}{thinned}, {self.digest[:SHORT_DIGEST]})"

    def describe(self) -> str:
        """``your inputs (3 sets, 1a2b…) from inputs= at x=1x3x48x192``."""
        at = "; ".join(shape_text(s) for s in self.distinct_shapes[:3])
        more = f" and {len(self.distinct_shapes) - 3} more shapes" \
            if len(self.distinct_shapes) > 3 else ""
        return f"{self.short()} from {self.origin} at {at}{more}"


def inputs_digest(sets: Sequence[Mapping[str, Any]]) -> str:
    """sha256 over each set's input names, dtypes, shapes and bytes, in order: equal only for
    the same arrays, whatever object holds them (a folder read back, a list in memory)."""
    import numpy as np

    h = hashlib.sha256(b"unirt-inputs-1")
    for i, feeds in enumerate(sets):
        h.update(f"\0set{i}".encode())
        for name in sorted(feeds):
            a = np.asarray(feeds[name])
            h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
            if a.dtype.hasobject:
                h.update(repr(a.tolist()).encode())
            else:
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _thin(count: int, most: int) -> list[int]:
    """The indexes of at most ``most`` of ``count`` sets, evenly spaced, the first and the last
    kept."""
    if count <= most:
        return list(range(count))
    step = (count - 1) / (most - 1)
    return [round(i * step) for i in range(most)]


def _check_set(info: ModelInfo, feeds: Any, where: str) -> dict[str, Any]:
    """One feed dict as arrays in the model's input order, or an InputError naming ``where``
    (``input set 2 of inputs=``) and the input."""
    import numpy as np

    from unirt.evidence.inputs import check_sizes
    from unirt.tensor import is_static

    if not isinstance(feeds, Mapping):
        raise InputError(f"{where}: an input set is a dict of input name -> array, got "
                         f"{type(feeds).__name__}")
    names = [t.name for t in info.inputs]
    unknown = [n for n in feeds if n not in names]
    if unknown:
        raise InputError(f"{where}: {', '.join(map(repr, unknown))} "
                         f"{'is not an input' if len(unknown) == 1 else 'are not inputs'} of "
                         f"{info.name}; inputs: {', '.join(names)}")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"{where}: missing input{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}: give every input of {info.name} "
                         "(verification judges an engine on exactly the arrays given)")
    out: dict[str, Any] = {}
    for t in info.inputs:
        value = feeds[t.name]
        if t.dtype is None:
            raise InputError(f"{where}: input {t.name!r} is not a tensor; unirt cannot verify "
                             "on given sequences or maps")
        try:
            a = np.asarray(value)
        except Exception as exc:
            raise InputError(f"{where}: input {t.name!r} is not an array ({exc})") from exc
        if a.dtype != t.dtype:
            raise InputError(f"{where}: input {t.name!r} is {a.dtype}, the model takes "
                             f"{t.dtype}; convert with .astype(np.{t.dtype})")
        if t.shape is not None:
            declared = t.describe().split(": ", 1)[1]
            if a.ndim != len(t.shape):
                raise InputError(f"{where}: input {t.name!r} has shape "
                                 f"{'x'.join(map(str, a.shape)) or 'scalar'}, the model "
                                 f"declares {declared}")
            for axis, d in enumerate(t.shape):
                if is_static(d) and a.shape[axis] != d:
                    raise InputError(f"{where}: input {t.name!r} dimension {axis} is "
                                     f"{a.shape[axis]}, the model fixes it at {d} ({declared})")
        out[t.name] = a
    check_sizes(info.inputs, {k: v.shape for k, v in out.items()})
    return out


def as_input_sets(info: ModelInfo, value: Any, origin: str = "inputs=") -> InputSets:
    """What ``load(inputs=...)`` accepts, checked against ``info``: an :class:`InputSets`, one
    feed dict, a list of them, or a folder written by
    :func:`unirt.evidence.input_files.save_inputs`. Raises ``InputError`` naming the set and the
    input for anything the model would not take."""
    from unirt.evidence.input_files import load_input_sets

    if isinstance(value, InputSets):
        return value
    if isinstance(value, (str, os.PathLike)):
        raw: list[Any] = load_input_sets(os.fspath(value), origin)
        origin = f"{origin} {os.fspath(value)}" if origin == "inputs=" else origin
    elif isinstance(value, Mapping):
        raw = [value]
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        raw = list(value)
    else:
        raise InputError(f"{origin} takes a dict of input name -> array, a list of them, or a "
                         f"folder written by unirt.evidence.input_files.save_inputs; got "
                         f"{type(value).__name__}")
    if not raw:
        raise InputError(f"{origin}: no input sets given")
    given = len(raw)
    sets = tuple(_check_set(info, raw[i], f"input set {i + 1} of {origin}"
                            if given > 1 else origin) for i in _thin(given, MAX_SETS))
    if given > MAX_SETS:
        logger.info("unirt: %d input sets given for %s; verification runs %d of them, evenly "
                    "spaced", given, info.name, MAX_SETS)
    return InputSets(sets, inputs_digest(sets), origin, given)


def remember(sets: InputSets) -> bool:
    """Keep ``sets`` in the artifact cache under their digest (when at most
    :data:`REMEMBER_BYTES`), so that a remembered operating point can be verified again without
    the user's files. Returns whether they are kept."""
    if sets.nbytes > REMEMBER_BYTES:
        logger.info("unirt: input sets of %d MB are not kept with the tuning result (limit "
                    "%d MB): a later load verifies at their shapes on generated values",
                    sets.nbytes >> 20, REMEMBER_BYTES >> 20)
        return False
    from unirt.evidence.input_files import save_input_sets
    from unirt.store.cache import ArtifactCache

    cache = ArtifactCache()
    if cache.lookup(CACHE_SECTION, sets.digest) is not None:
        return True

    def build(tmp: Path) -> dict[str, Any]:
        save_input_sets(tmp, list(sets.sets))
        return {"kind": "input sets", "sets": len(sets.sets)}

    entry, _ = cache.get_or_build(CACHE_SECTION, sets.digest, build)
    cache.release(entry)
    return True


def recall(digest: str, origin: str = "the tuning result") -> InputSets | None:
    """The input sets :func:`remember` kept under ``digest``, or None (never kept, evicted, or
    no longer matching their digest)."""
    from unirt.evidence.input_files import load_input_sets
    from unirt.store.cache import ArtifactCache

    if not digest or not all(c in "0123456789abcdef" for c in digest):
        return None
    entry = ArtifactCache().lookup(CACHE_SECTION, digest)
    if entry is None:
        return None
    try:
        sets = tuple(load_input_sets(entry))
    except UnirtError as exc:
        logger.warning("unirt: remembered input sets %s unreadable (%s)", digest[:12], exc)
        return None
    if inputs_digest(sets) != digest:
        return None
    return InputSets(sets, digest, origin, len(sets))


#: Ops that make a model quantized: its engines round, saturate and fuse integer arithmetic each
#: their own way, so agreement on generated values says little about agreement on real data.
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QAttention",
    "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearAdd",
    "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax", "MatMulNBits",
})


def is_quantized(info: ModelInfo) -> bool:
    """Whether ``info`` computes in integers somewhere (:data:`QUANTIZED_OPS`)."""
    return any(op.rpartition("::")[2] in QUANTIZED_OPS for op in info.op_counts)
