"""``unirt compare``: the same inputs on several backends, judged against ONNX Runtime CPU.

Every backend, the reference included, runs in a child process (:mod:`unirt.process.isolation`): an
engine that segfaults or hangs on the model becomes a row in the report, and the other backends
still complete. ``layerwise`` (:mod:`unirt.tools.layerwise`) finds the node where a failing backend
diverges and whether it is to blame.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unirt import progress
from unirt.errors import UnirtError
from unirt.evidence.agreement import Tolerance
from unirt.evidence.hints import hinted_feeds
from unirt.evidence.probe import (
    DEFAULT_TIMEOUT,
    ProbeResult,
    probe,
    reference_name,
    reference_outputs,
)
from unirt.model.info import ModelInfo, ModelSource, read_model
from unirt.tools.layerwise import LayerStep, LayerwiseReport, layerwise

logger = logging.getLogger("unirt")

__all__ = ["CompareReport", "LayerStep", "LayerwiseReport", "compare", "default_backends",
           "layerwise"]


@dataclass
class CompareReport:
    model: str
    reference: str
    precision: str
    inputs: dict[str, tuple[list[int], str]]
    results: list[ProbeResult]

    @property
    def passed(self) -> bool:
        """True when every compared backend is within tolerance."""
        return all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reference": self.reference, "precision": self.precision,
                "inputs": {k: {"shape": s, "dtype": d} for k, (s, d) in self.inputs.items()},
                "passed": self.passed, "results": [r.as_dict() for r in self.results]}


def default_backends(exclude_reference: bool = True) -> list[str]:
    """Every available backend (the reference left out: it would compare with itself)."""
    from unirt.plugin.inventory import backends

    return [b.name for b in backends() if b.available
            and not (exclude_reference and b.name == reference_name())]


def compare(
    model: ModelSource | ModelInfo,
    backends: Sequence[str] | None = None,
    feeds: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    precision: str = "exact",
    atol: Tolerance = None,
    rtol: Tolerance = None,
    timeout: float = DEFAULT_TIMEOUT,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    ranges: Mapping[str, Sequence[float]] | None = None,
) -> CompareReport:
    """Run the same inputs on ``backends`` (default: every available one) and the reference.

    ``atol``/``rtol``: one figure, or a dict of output name -> figure (outputs not named get
    the precision mode's default). ``ranges``: input name -> (LO, HI) of generated values.
    ``feeds``: one feed dict, or several (every set of a ``--load-inputs`` folder), each run on
    every backend; inputs a set does not give are generated.
    """
    from unirt.evidence.values import check_ranges
    from unirt.plugin.registry import get_registry

    info = read_model(model)
    registry = get_registry()
    names = list(backends) if backends else default_backends()
    for n in names:
        registry.backend(n)  # unknown names: an error listing the registered ones
    atol, rtol = check_tolerance(info, atol, "atol"), check_tolerance(info, rtol, "rtol")
    checked = check_ranges(info.inputs, ranges, "ranges") if ranges else None
    if feeds is None and seed == 0 and atol is None and rtol is None and not options:
        return _compare_as_verification(info, names, shapes, precision, timeout, checked)
    given = [feeds] if feeds is None or isinstance(feeds, Mapping) else list(feeds)
    sets = [hinted_feeds(info, f, shapes, seed + i, checked) for i, f in enumerate(given)]
    all_feeds = sets[0]
    labels = [f"input set {i + 1} of {len(sets)}" for i in range(len(sets))] \
        if len(sets) > 1 else None
    with progress.step(progress.Step.REFERENCE, reference_name(), info.name):
        ref_open, reference = reference_outputs(info.source(), sets, timeout=timeout,
                                                labels=labels)
    if not ref_open.ok or reference[0].outputs is None:
        why = ref_open.describe() if not ref_open.ok else reference[0].outcome.describe()
        raise UnirtError(f"the reference ({reference_name()}) could not run {info.name}: "
                         f"{why}")
    results = []
    for name in names:
        with progress.step(progress.Step.COMPARE, name, info.name) as running:
            results.append(probe(info, name, sets, precision, (options or {}).get(name),
                                 atol, rtol, timeout, reference=reference, labels=labels))
            running.detail = str(results[-1].status)
    return CompareReport(info.name, reference_name(), precision,
                         {k: (list(np.shape(v)), str(np.asarray(v).dtype))
                          for k, v in all_feeds.items()}, results)


def check_tolerance(info: ModelInfo, value: Any, what: str) -> Tolerance:
    """``atol``/``rtol`` as given: None, a number >= 0, or a dict naming outputs of the model,
    each a number >= 0; else an error naming what is wrong, before anything runs."""
    import math

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and v >= 0

    if value is None:
        return None
    if isinstance(value, Mapping):
        outputs = [t.name for t in info.outputs]
        for name, v in value.items():
            if name not in outputs:
                raise UnirtError(f"--{what} names {name!r}, which is not an output of "
                                 f"{info.name}; outputs: {', '.join(outputs)}")
            if not number(v):
                raise UnirtError(f"--{what} {name}={v!r}: a tolerance is a number >= 0")
        return {k: float(v) for k, v in value.items()}
    if not number(value):
        raise UnirtError(f"--{what} {value!r}: a tolerance is a number >= 0 (or a dict of "
                         "output name -> number)")
    return float(value)


def _compare_as_verification(info: ModelInfo, names: list[str],
                             shapes: Mapping[str, Sequence[int]] | None, precision: str,
                             timeout: float,
                             ranges: Mapping[str, tuple[float, float]] | None = None
                             ) -> CompareReport:
    """``compare`` on generated inputs is a verification: the same inputs and shape sets as
    ``load`` runs, and the verdicts written where ``load`` and ``capabilities`` read them."""
    from unirt.evidence.verify import feed_sets, verify
    from unirt.plugin.registry import get_registry

    registry = get_registry()
    labels, _, all_sets = feed_sets(info, shapes, ranges)
    with progress.step(progress.Step.REFERENCE, reference_name(), info.name):
        ref_open, reference = reference_outputs(info.source(), all_sets, timeout=timeout,
                                                labels=labels)
    if not ref_open.ok or reference[0].outputs is None:
        why = ref_open.describe() if not ref_open.ok else reference[0].outcome.describe()
        raise UnirtError(f"the reference ({reference_name()}) could not run {info.name}: "
                         f"{why}")
    results = [verify(info, name, registry.backend(name).available().version, precision, {},
                      shapes, "always", timeout=timeout, reference=reference,
                      ranges=ranges).result
               for name in names]
    return CompareReport(info.name, reference_name(), precision,
                         all_sets[0].signature(), results)
