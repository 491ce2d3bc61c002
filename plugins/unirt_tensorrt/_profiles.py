"""Optimization profiles: the input shape ranges a TensorRT engine is built for.

A TensorRT engine runs a dynamic input only at shapes inside one of its optimization profiles
(min/opt/max per input), fixed when the engine is built. Where the ranges come from, first that
applies:

* ``options={"tensorrt": {"profiles": [...]}}``: the user's ranges, one profile per entry; a
  feed outside every one is a :class:`~unirt.errors.ShapeLimitError` (the Session re-routes that
  shape to another engine).
* the shapes actually seen: ``input_shapes=`` at load, else each feed signature no built
  profile covers. A dynamic batch axis (axis 0) gets the range 1..max(seen, 16) so that batch
  sizes do not each cost a build; every other dynamic dim is pinned to the size seen, since
  nothing says how far it may vary (a wider range costs TensorRT memory and speed at every
  size). pnnx for ncnn works the same way, per shape.

Pure functions, no TensorRT: unit-tested without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirt.plugin import ModelInfo, UnirtError, is_static

#: Upper bound of a dynamic batch axis in a profile made from a seen shape.
DEFAULT_MAX_BATCH = 16

Shape = tuple[int, ...]
Signature = tuple[Shape, ...]


@dataclass(frozen=True)
class Range:
    """One input's shape range in one profile."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def covers(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def as_list(self) -> list[Any]:
        return [self.name, list(self.min), list(self.opt), list(self.max)]


#: One optimization profile: a range for every input with a dynamic dim, in model input order.
Profile = tuple[Range, ...]


def dynamic_inputs(model: ModelInfo) -> list[str]:
    """Names of the inputs with at least one dynamic dim (the ones a profile must range)."""
    return [t.name for t in model.inputs
            if t.shape is not None and not all(is_static(d) for d in t.shape)]


def covers(profile: Profile, shapes: Mapping[str, Sequence[int]]) -> bool:
    """Whether every ranged input's shape in ``shapes`` lies inside ``profile``."""
    return all(r.covers(shapes[r.name]) for r in profile if r.name in shapes)


def find_profile(profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]]) -> int | None:
    """The index of the first profile covering ``shapes``, or None."""
    return next((i for i, p in enumerate(profiles) if covers(p, shapes)), None)


def from_seen(model: ModelInfo, shapes: Mapping[str, Sequence[int]]) -> Profile:
    """A profile for the shapes of one feed signature (see the module docstring)."""
    ranges = []
    for t in model.inputs:
        if t.name not in dynamic_inputs(model):
            continue
        shape = tuple(int(s) for s in shapes[t.name])
        declared = t.shape or ()
        lo, hi = list(shape), list(shape)
        if declared and not is_static(declared[0]):
            lo[0], hi[0] = 1, max(shape[0], DEFAULT_MAX_BATCH)
        ranges.append(Range(t.name, tuple(lo), shape, tuple(hi)))
    return tuple(ranges)


def _dims(value: Any, what: str) -> Shape:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise UnirtError(f"tensorrt option profiles: {what} must be a list of ints, not {value!r}")
    if any(d < 0 for d in value):
        raise UnirtError(f"tensorrt option profiles: {what} has a negative size: {list(value)}")
    return tuple(value)


def parse_profiles(model: ModelInfo, raw: Any) -> list[Profile]:
    """``options={"tensorrt": {"profiles": raw}}`` checked against the model.

    ``raw`` is a list of profiles; a profile maps each dynamic input to ``{"min": [...], "opt":
    [...], "max": [...]}`` or to ``[min, opt, max]``. Every dynamic input must be ranged, ranks
    and static dims must match the model, and ``min <= opt <= max`` dim by dim: each mistake is a
    :class:`~unirt.errors.UnirtError` naming the profile and the input.
    """
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise UnirtError("tensorrt option profiles must be a non-empty list of profiles, each "
                         "a dict of input name -> {min, opt, max}")
    by_name = {t.name: t for t in model.inputs}
    needed = dynamic_inputs(model)
    profiles: list[Profile] = []
    for i, entry in enumerate(raw):
        where = f"profile {i}"
        if not isinstance(entry, Mapping):
            raise UnirtError(f"tensorrt option profiles: {where} must be a dict of input name "
                             f"-> {{min, opt, max}}, not {entry!r}")
        unknown = [n for n in entry if n not in by_name]
        if unknown:
            raise UnirtError(f"tensorrt option profiles: {where} names {unknown[0]!r}, which is "
                             f"not an input of {model.name} (inputs: {', '.join(by_name)})")
        missing = [n for n in needed if n not in entry]
        if missing:
            raise UnirtError(f"tensorrt option profiles: {where} gives no range for dynamic "
                             f"input {missing[0]!r}")
        ranges = []
        for t in model.inputs:
            if t.name not in entry:
                continue
            spec = entry[t.name]
            if isinstance(spec, Mapping):
                keys = set(spec)
                if keys != {"min", "opt", "max"}:
                    raise UnirtError(f"tensorrt option profiles: {where}, input {t.name!r} "
                                     "needs exactly the keys min, opt and max")
                triple = (spec["min"], spec["opt"], spec["max"])
            elif isinstance(spec, (list, tuple)) and len(spec) == 3:
                triple = tuple(spec)  # type: ignore[assignment]
            else:
                raise UnirtError(f"tensorrt option profiles: {where}, input {t.name!r} must be "
                                 f"{{min, opt, max}} or [min, opt, max], not {spec!r}")
            lo, opt, hi = (_dims(v, f"{where}, input {t.name!r} {k}")
                           for v, k in zip(triple, ("min", "opt", "max")))
            declared = tuple(t.shape or ())
            for shape in (lo, opt, hi):
                if len(shape) != len(declared):
                    raise UnirtError(f"tensorrt option profiles: {where}, input {t.name!r} has "
                                     f"rank {len(declared)}, not {len(shape)}")
                for axis, (d, s) in enumerate(zip(declared, shape)):
                    if is_static(d) and d != s:
                        raise UnirtError(f"tensorrt option profiles: {where}, input {t.name!r} "
                                         f"dim {axis} is fixed at {d} in the model, not {s}")
            if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise UnirtError(f"tensorrt option profiles: {where}, input {t.name!r} needs "
                                 f"min <= opt <= max in every dim, got {list(lo)}, {list(opt)}, "
                                 f"{list(hi)}")
            ranges.append(Range(t.name, lo, opt, hi))
        profiles.append(tuple(r for r in ranges if r.name in needed))
    return profiles


def describe(profiles: Sequence[Profile]) -> str:
    """Profiles on one line for messages: ``x:[1,3]..[16,3]; x:[32,3]..[32,3]``."""
    def fmt(s: Shape) -> str:
        return "[" + ",".join(map(str, s)) + "]"

    return "; ".join(", ".join(f"{r.name}:{fmt(r.min)}..{fmt(r.max)}" for r in p) or "static"
                     for p in profiles) or "static"
