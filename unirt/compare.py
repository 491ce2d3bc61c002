"""``unirt compare``: the same inputs on several backends, judged against ONNX Runtime CPU.

Every backend, the reference included, runs in a child process (:mod:`unirt.isolation`): an
engine that segfaults or hangs on the model becomes a row in the report, and the other backends
still complete. ``layerwise`` finds the first node whose output diverges, by exposing a few
intermediate tensors per round as extra graph outputs and narrowing the range (a k-ary search
along the topological order), so a big model is never asked for every tensor at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import progress
from .errors import UnirtError
from .inputs import feeds_for
from .isolation import Worker
from .metrics import Tolerance, diff, tolerance, within
from .model import ModelInfo, ModelSource, read_model
from .probe import (
    DEFAULT_TIMEOUT,
    ProbeResult,
    _child_init,
    probe,
    reference_name,
    reference_outputs,
    run_sets,
)

logger = logging.getLogger("unirt")


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
    from .inventory import backends

    return [b.name for b in backends() if b.available
            and not (exclude_reference and b.name == reference_name())]


def compare(
    model: ModelSource | ModelInfo,
    backends: Sequence[str] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
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
    """
    from .inputs import check_ranges
    from .plugins import get_registry

    info = read_model(model)
    registry = get_registry()
    names = list(backends) if backends else default_backends()
    for n in names:
        registry.backend(n)  # unknown names: an error listing the registered ones
    atol, rtol = check_tolerance(info, atol, "atol"), check_tolerance(info, rtol, "rtol")
    checked = check_ranges(info.inputs, ranges, "ranges") if ranges else None
    if feeds is None and seed == 0 and atol is None and rtol is None and not options:
        return _compare_as_verification(info, names, shapes, precision, timeout, checked)
    all_feeds = feeds_for(info, feeds, shapes, seed, checked)
    with progress.step(progress.Step.REFERENCE, reference_name(), info.name):
        ref_open, reference = reference_outputs(info.source(), [all_feeds], timeout=timeout)
    if not ref_open.ok or reference[0].outputs is None:
        why = ref_open.describe() if not ref_open.ok else reference[0].outcome.describe()
        raise UnirtError(f"the reference ({reference_name()}) could not run {info.name}: "
                         f"{why}")
    results = []
    for name in names:
        with progress.step(progress.Step.COMPARE, name, info.name) as running:
            results.append(probe(info, name, [all_feeds], precision, (options or {}).get(name),
                                 atol, rtol, timeout, reference=reference))
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
    from .plugins import get_registry
    from .verify import feed_sets, verify

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


# -- layerwise -----------------------------------------------------------------------------------
@dataclass
class LayerStep:
    """One node on the divergence path with the error at its outputs and at its inputs."""

    node: str
    op: str
    index: int
    output_errors: dict[str, float]
    input_errors: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LayerwiseReport:
    model: str
    backend: str
    status: str  # "diverges", "no divergence", "error"
    reason: str = ""
    first: LayerStep | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)  # (node index, max abs) tried
    rounds: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "status": self.status,
                "reason": self.reason, "first": self.first.as_dict() if self.first else None,
                "probes": self.probes, "rounds": self.rounds}


_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _typed_tensors(proto: Any) -> dict[str, Any]:
    """ValueInfo of every tensor whose element type is known after shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shape inference fails on some real models: use what is declared
        inferred = proto
    g = inferred.graph
    return {v.name: v for v in [*g.value_info, *g.input, *g.output]
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}


def _with_outputs(proto: Any, names: list[str], typed: dict[str, Any]) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(typed[n])
            have.add(n)
    return m


class _Prober:
    """Runs the model with extra outputs on the reference and the backend, in two children."""

    def __init__(self, info: ModelInfo, backend: str, feeds: dict[str, np.ndarray],
                 precision: str, atol: float | None, rtol: float | None, timeout: float,
                 workdir: Path) -> None:
        import onnx

        self.info, self.backend, self.feeds = info, backend, feeds
        self.precision, self.atol, self.rtol, self.timeout = precision, atol, rtol, timeout
        self.workdir = workdir
        self.proto = onnx.load(str(info.path), load_external_data=False) if info.path else \
            onnx.load_from_string(info.data or b"")
        for f in info.external_data:  # modified copies must still find their weights
            target = workdir / f.relative_to(info.path.parent) if info.path else None
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f, target)
        self.typed = _typed_tensors(self.proto)
        self.ref_worker, self.be_worker = Worker(_child_init), Worker(_child_init)
        self.count = 0

    def errors(self, tensors: list[str]) -> dict[str, tuple[float, bool]]:
        """(max abs error, within tolerance?) of each tensor; raises when a run fails."""
        import onnx

        self.count += 1
        path = self.workdir / f"probe{self.count}.onnx"
        onnx.save(_with_outputs(self.proto, tensors, self.typed), str(path))
        results = []
        ref = reference_name()
        for worker, backend, precision in ((self.ref_worker, ref, "exact"),
                                           (self.be_worker, self.backend, self.precision)):
            opened, sets = run_sets(worker, str(path), backend, [self.feeds], precision,
                                    outputs=tensors, timeout=self.timeout)
            bad = opened if not opened.ok else sets[0].outcome
            if not bad.ok:
                who = "reference" if backend == ref else backend
                raise UnirtError(f"{who} failed with extra outputs: {bad.describe()}")
            assert sets[0].outputs is not None  # an ok outcome carries outputs
            results.append(sets[0].outputs)
        ref_out, got_out = results
        out = {}
        for t in tensors:
            r, a = ref_out[t], got_out[t]
            d = diff(t, a, r)
            ok = d.problem is None and within(a, r, *tolerance(self.precision, np.asarray(r),
                                                               self.atol, self.rtol))
            out[t] = (d.max_abs, ok)
        return out

    def close(self) -> None:
        self.ref_worker.close()
        self.be_worker.close()


def layerwise(
    model: ModelSource | ModelInfo,
    backend: str,
    feeds: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    precision: str = "exact",
    atol: float | None = None,
    rtol: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    fanout: int = 8,
) -> LayerwiseReport:
    """Find the first node (in topological order) whose output diverges on ``backend``.

    Each round exposes up to ``fanout`` tensors spread over the remaining range as extra outputs,
    so the number of rounds grows as log base ``fanout + 1`` of the node count.
    """
    info = read_model(model)
    all_feeds = feeds_for(info, feeds, shapes, seed)
    workdir = Path(tempfile.mkdtemp(prefix="unirt-layerwise-"))
    prober = None
    try:
        prober = _Prober(info, backend, all_feeds, precision, atol, rtol, timeout, workdir)
        nodes = list(prober.proto.graph.node)
        # Candidate positions: main-graph nodes with a float output whose type is known.
        cands = [(i, [o for o in n.output if o in prober.typed
                      and prober.typed[o].type.tensor_type.elem_type in _FLOAT_TYPES])
                 for i, n in enumerate(nodes)]
        cands = [(i, outs[:1]) for i, outs in cands if outs]
        report = LayerwiseReport(info.name, backend, "no divergence")
        if not cands:
            report.status, report.reason = "error", "no float intermediate tensor to probe"
            return report

        def bad(errs: dict[str, tuple[float, bool]], tensor: str) -> bool:
            return not errs[tensor][1]

        # The last candidate stands for the model's end: if it agrees, nothing diverges.
        last_t = cands[-1][1][0]
        errs = prober.errors([last_t])
        report.rounds += 1
        report.probes.append({"index": cands[-1][0], "tensor": last_t,
                              "max_abs": errs[last_t][0]})
        if not bad(errs, last_t):
            return report
        lo, hi = -1, len(cands) - 1  # cands[lo] agrees (or lo = -1), cands[hi] diverges
        while hi - lo > 1:
            span = hi - lo - 1
            step = max(1, -(-span // fanout))
            picks = list(range(lo + step, hi, step))[:fanout]
            tensors = [cands[p][1][0] for p in picks]
            errs = prober.errors(tensors)
            report.rounds += 1
            for p, t in zip(picks, tensors):
                report.probes.append({"index": cands[p][0], "tensor": t,
                                      "max_abs": errs[t][0]})
            first_bad = next((p for p, t in zip(picks, tensors) if bad(errs, t)), None)
            if first_bad is None:
                lo = picks[-1]
            else:
                hi = first_bad
                earlier = [p for p in picks if p < first_bad]
                lo = earlier[-1] if earlier else lo
        idx = cands[hi][0]
        node = nodes[idx]
        out_t = [o for o in node.output if o in prober.typed]
        in_t = [i for i in node.input if i in prober.typed and i not in
                {t.name for t in prober.proto.graph.initializer}]
        errs = prober.errors(out_t + in_t)
        report.rounds += 1
        report.status = "diverges"
        report.first = LayerStep(node.name or f"#{idx}", node.op_type, idx,
                                 {t: errs[t][0] for t in out_t}, {t: errs[t][0] for t in in_t})
        return report
    except UnirtError as exc:
        return LayerwiseReport(info.name, backend, "error", str(exc))
    finally:
        if prober is not None:
            prober.close()
        shutil.rmtree(workdir, ignore_errors=True)
