"""Making a lock: measuring, on the machine that decides, the backend a model ships with, and
gathering what :class:`unirt.runtime.lock.Lock` records (the verdict, the ranking, the engines,
the machine). Reading, checking and resolving a lock at load time is :mod:`unirt.runtime.lock`;
this module runs ``unirt.load`` to measure, so it sits above the runtime.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from unirt.errors import LockError, UnirtError
from unirt.evidence.verify import Verification
from unirt.runtime.lock import Lock, LockedFigures, LockedModel, RankEntry

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.operating import InputSets
    from unirt.evidence.timing import Ranking
    from unirt.model.info import ModelInfo, ModelSource
    from unirt.plugin.registry import Registry


def _worst(max_abs: Mapping[str, float]) -> float | None:
    return max(max_abs.values()) if max_abs else None


def _machine() -> dict[str, Any]:
    from unirt.process.machine import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def make_lock(model: ModelSource | ModelInfo, backend_name: str,
              ranking: Ranking | Sequence[RankEntry] | None = None,
              verification: Verification | None = None,
              shapes: Mapping[str, Sequence[int]] | None = None, precision: str = "exact",
              registry: Registry | None = None, inputs: InputSets | None = None) -> Lock:
    """Gather what a lock records for ``backend_name`` on ``model``. Measures nothing.

    ``inputs``: the user's input sets the choice was measured on: the lock records their
    first set's shapes (where ``shapes`` does not say) and their digest.

    ``verification``: the locked backend's verdict (``Session.verification`` of a load that
    verified); when None, the cached verdict is used, and a backend other than the reference
    with no verified verdict cannot be locked (a lock ships trust, so it needs a measurement).
    ``ranking``: ``prefer="fastest"``'s :class:`~unirt.evidence.timing.Ranking` (each ranked
    backend's error is read from the verdict cache) or ready :class:`RankEntry` rows.
    """
    from unirt.evidence.verify import VerifyStatus, lookup, probe_shapes, verdict_key
    from unirt.model.info import read_model
    from unirt.plugin.backend import PRECISIONS
    from unirt.plugin.registry import get_registry
    from unirt.store.cache import file_sha256, model_digest
    from unirt.version import __version__

    registry = registry or get_registry()
    info = read_model(model)
    if precision not in PRECISIONS:
        raise UnirtError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    be = registry.backend(backend_name)
    avail = be.available()
    if not avail.available:
        raise LockError(f"cannot lock {backend_name}: it is not available on this machine "
                        f"({avail.reason})")
    shape_map = {k: [int(d) for d in v] for k, v in (shapes or {}).items()}
    if inputs is not None:
        shape_map = {**{k: list(v) for k, v in inputs.first_shapes.items()}, **shape_map}
    unknown = sorted(set(shape_map) - {t.name for t in info.inputs})
    if unknown:  # a lock must name shapes the verification could have used
        raise UnirtError(f"shapes names {', '.join(map(repr, unknown))}, not an input of "
                         f"{info.name}; inputs: {', '.join(t.name for t in info.inputs)}")
    engines = {n: b.available().version for n, b in registry.backends.items()
               if b.available().available}
    keys: dict[str, str] = {}
    try:
        sets = probe_shapes(info.inputs, shape_map)
    except UnirtError:
        sets = None  # no inputs can be generated: nothing was verified, no key
    figures = None
    if not be.is_reference:
        v = verification
        if v is None:
            v = lookup(info, backend_name, avail.version, precision, {}, shape_map,
                       inputs=inputs)
        if v is None:
            raise LockError(f"cannot lock {backend_name} for {info.name}: no verification of it "
                            f"is cached; measure it: unirt lock {info.name} --backend "
                            f"{backend_name}")
        if v.status != VerifyStatus.VERIFIED:
            raise LockError(f"cannot lock {backend_name} for {info.name}: its verification is "
                            f"{v.status}: {v.describe()}")
        figures = LockedFigures(v.status.value, v.result.precision, dict(v.result.max_abs),
                                v.result.summary())
        if inputs is not None:
            keys["verification"] = verdict_key(info, backend_name, avail.version, precision, {},
                                               inputs.shapes, None, None, inputs.digest)
        elif sets is not None:
            keys["verification"] = verdict_key(info, backend_name, avail.version, precision, {},
                                               sets, None)
    entries: list[RankEntry] = []
    rejected: dict[str, str] = {}
    if ranking is not None and not isinstance(ranking, Sequence):  # a fastest.Ranking
        rejected = dict(ranking.rejected)
        for name in ranking.order:
            if name == backend_name:
                err = 0.0 if figures is None else _worst(figures.max_abs)
            elif name in registry.backends and registry.backend(name).is_reference:
                err = 0.0
            else:
                cached = lookup(info, name, engines.get(name), precision, {}, shape_map,
                                inputs=inputs)
                ok = cached is not None and cached.status == VerifyStatus.VERIFIED
                err = _worst(cached.result.max_abs) if ok and cached is not None else None
            entries.append(RankEntry(name, round(ranking.median_s[name] * 1e3, 4), err))
    elif ranking is not None:
        entries = list(ranking)
    digest = model_digest(info)
    return Lock(
        model=LockedModel(info.name, digest,
                          file_sha256(info.path) if info.path is not None else None,
                          info.size_bytes),
        backend=backend_name, precision=precision, shapes=shape_map,
        reference=registry.reference, engines=engines, ranking=entries, rejected=rejected,
        verification=figures, keys=keys, machine=_machine(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        unirt_version=__version__, inputs=inputs.digest if inputs is not None else "")


def measure_lock(model: ModelSource, backend: str | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None, precision: str = "exact",
                 registry: Registry | None = None, inputs: InputSets | None = None,
                 ranges: Mapping[str, Any] | None = None) -> Lock:
    """Measure now and return the lock: ``backend=`` verified afresh (``verify="always"``), or
    ``prefer="fastest"`` with its ranking and each ranked backend's verdict. Starts child
    processes; what ``unirt lock`` and ``unirt tune --lock`` run on the machine that decides.
    ``inputs``: the user's input sets, verified and timed on (:mod:`unirt.evidence.operating`);
    ``ranges``: the values generated inputs take (``load(input_ranges=)``)."""
    from unirt.model.info import read_model
    from unirt.plugin.registry import get_registry
    from unirt.runtime.router import load

    registry = registry or get_registry()
    info = read_model(model)
    shape_map = dict(shapes or {})
    source: Any = info  # load reads a ModelInfo as it is: the model is parsed once
    ranking = None
    if backend is not None:
        sess = load(source, backend=backend, input_shapes=shape_map or None, precision=precision,
                    verify="always", registry=registry, inputs=inputs, input_ranges=ranges)
    else:
        sess = load(source, prefer="fastest", input_shapes=shape_map or None,
                    precision=precision, verify="always", registry=registry, inputs=inputs,
                    input_ranges=ranges)
        # The ranking load just measured (or read): every ranked backend was verified on the
        # way, its error is in the ranking.
        from unirt.evidence.timing import lookup

        ranking = lookup(info, precision, {}, shape_map or None, None, ranges, inputs)
    with sess:
        return make_lock(info, sess.backend, ranking, sess.verification, shape_map, precision,
                         registry, inputs)
