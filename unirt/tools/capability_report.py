"""The capability report: per backend, the table's prediction, the engine's own answer and the
measured outcome, then the final verdict and which evidence decided it.

Built above the router and the verifier: measured outcomes are the verification verdicts that
``load`` writes and reads (the same cache key), so ``load``, ``capabilities`` and ``compare``
tell one story. Where a measured run is wrong, the layerwise search names the first diverging
node, so a measured failure still gets a node-level explanation.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unirt.capability.features import op_key
from unirt.capability.judge import merge_query, refused_by_engine, settle
from unirt.capability.table import CaseStatus
from unirt.capability.verdict import UNAVAILABLE, UNSUPPORTED, Evidence, Reason, Verdict
from unirt.errors import UnirtError
from unirt.process import timeouts
from unirt.process.isolation import OutcomeStatus

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.inputs import FeedRecipe
    from unirt.evidence.operating import InputSets
    from unirt.evidence.probe import ProbeResult, RunSet
    from unirt.evidence.verify import Verification
    from unirt.model.info import ModelInfo, ModelSource
    from unirt.plugin.registry import Registry, RegistrySpec
    from unirt.process.isolation import Worker
    from unirt.tools.lint import Finding, LintReport

logger = logging.getLogger("unirt")


@dataclass
class CapabilityReport:
    """What ``unirt.capabilities`` returns: the model's summary, a verdict per backend (with its
    prediction, engine answer and measured outcome), and the op x backend matrix of the model's
    own ops as the tables see them."""

    model: dict[str, Any]
    verdicts: dict[str, Verdict]
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What ``unirt lint`` finds on the model (in place of refusing a model the ONNX checker
    #: rejects: the verdicts still say which engine runs it anyway).
    lint: LintReport | None = None

    @property
    def lint_findings(self) -> list[Finding]:
        """The lint errors and warnings (infos are ``unirt lint``'s only)."""
        from unirt.tools.lint import Severity

        return [] if self.lint is None else list(self.lint.of(Severity.ERROR,
                                                              Severity.WARNING))

    @property
    def op_matrix(self) -> dict[str, dict[str, str]]:
        """op -> backend -> ``supported`` / ``conditional`` / ``unsupported`` / ``unknown``
        (``unavailable`` for a backend that is not installed): the table's prediction."""
        out: dict[str, dict[str, str]] = {}
        for op in self.model["op_counts"]:
            out[op] = {name: ("unavailable" if v.status == UNAVAILABLE
                              else v.ops.get(op, "unknown"))
                       for name, v in self.verdicts.items()}
        return out

    def as_dict(self) -> dict[str, Any]:
        lint = None if self.lint is None else {
            "ok": self.lint.ok, "counts": self.lint.counts(),
            "findings": [f.as_dict() for f in self.lint_findings]}
        return {"model": self.model, "lint": lint,
                "verdicts": {k: v.as_dict() for k, v in self.verdicts.items()},
                "op_matrix": self.op_matrix, "probes": self.probes}

    def __str__(self) -> str:
        lines = [str(f) for f in self.lint_findings]
        lines.append(f"{self.model['name']}: " + ", ".join(
            f"{op} x{n}" for op, n in self.model["op_counts"].items()))
        lines += [str(v) for v in self.verdicts.values()]
        for name, p in self.probes.items():
            lines.append(f"{name} measured: {p['status']} {p.get('detail') or ''}".rstrip())
        return "\n".join(lines)


def model_summary(model: ModelInfo) -> dict[str, Any]:
    """The facts ``unirt capabilities`` prints before any verdict."""
    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "dtype": None if t.dtype is None else str(t.dtype),
                "shape": None if t.shape is None else list(t.shape),
                "dynamic": [] if t.shape is None else [
                    d if d is not None else f"axis{i}" for i, d in enumerate(t.shape)
                    if not isinstance(d, int)]}

    counts: Counter[str] = Counter(op_key(n.op_type, n.domain) for n in model.nodes)
    return {"name": model.name, "path": str(model.path) if model.path else None,
            "ir_version": model.ir_version, "opsets": dict(model.opsets),
            "nodes": len(model.nodes), "op_counts": dict(counts.most_common()),
            "inputs": [tensor(t) for t in model.inputs],
            "outputs": [tensor(t) for t in model.outputs],
            "custom_domains": list(model.custom_domains), "size_bytes": model.size_bytes,
            "external_data": [str(p) for p in model.external_data],
            "shape_inference_error": model.shape_inference_error}


def capabilities(
    model: ModelSource | ModelInfo,
    *,
    backends: Sequence[str] | None = None,
    probe: bool = False,
    query: bool = True,
    shapes: Mapping[str, Sequence[int]] | None = None,
    timeout: float = 120.0,
    registry: Registry | None = None,
    layerwise: bool = True,
    query_timeout: float | None = None,
    feeds: Mapping[str, Any] | None = None,
    ranges: Mapping[str, Sequence[float]] | None = None,
    inputs: Any = None,
) -> CapabilityReport:
    """The capability matrix for one model: for every registered backend (or ``backends``), the
    table's prediction, the engine's own answer (``query``), the measured outcome (the cached
    verification verdict, or measured now with ``probe=True``), and the final verdict with the
    evidence that decided it. ``shapes``: the base shapes of dynamic inputs, as ``load``'s
    ``input_shapes=`` (the same verdicts are read and written). ``query_timeout``: seconds an
    engine's own answer may take (default ``UNIRT_QUERY_TIMEOUT``, else 30 s); it is asked in a
    child process, so a query that does not end in time is a note, never a hung caller.
    ``ranges``: input name -> (LO, HI) of generated values (as ``load(input_ranges=)``: the
    same verdicts). ``inputs``: the user's input sets (as ``load(inputs=)``: a feed dict, a
    list of them, a folder): probes run on exactly those, and the verdicts are the ones ``load``
    reads and writes for them. ``feeds``: one feed dict (``--input``), completed with generated
    values for inputs it does not give, taken as ``inputs``. With none of shapes, ranges and
    inputs, the verdicts shown are those at the model's tuned operating point, when it has one
    (:func:`unirt.evidence.timing.recall_point`), as ``load`` opens it.
    """
    from unirt.evidence.inputs import check_shapes
    from unirt.evidence.values import check_ranges
    from unirt.model.info import read_model
    from unirt.plugin.registry import get_registry
    from unirt.tools.lint import lint

    registry = registry or get_registry()
    info = read_model(model)
    names = list(backends) if backends else list(registry.backends)
    for name in names:
        registry.backend(name)  # an unknown name: an error listing the known ones, before work
    check_shapes(info, shapes or {}, "--shape")
    checked = check_ranges(info.inputs, ranges, "--input-range") if ranges else None
    from unirt.evidence.operating import as_input_sets

    if feeds:
        from unirt.evidence.hints import hinted_feeds

        inputs = as_input_sets(info, hinted_feeds(info, feeds, shapes, 0, checked), "--input")
    elif inputs is not None:
        inputs = as_input_sets(info, inputs)
    if not shapes and not checked and inputs is None:
        from unirt.evidence.timing import recall_point

        point = recall_point(info)
        if point is not None:
            shapes, checked, inputs = point
    # The ONNX checker's and shape inference's complaints are findings here, not a refusal:
    # a model every engine is said to reject (a pooling kernel of the wrong rank) is exactly
    # the one whose verdicts and repairs the user came to see.
    linted = lint(info, backends=names, registry=registry)
    verdicts: dict[str, Verdict] = {}
    querier = _Querier(registry, query_timeout_default() if query_timeout is None
                       else query_timeout)
    try:
        for name in names:
            be = registry.backend(name)
            v = verdicts[name] = be.check(info)
            if v.status == UNAVAILABLE:
                continue
            if query:
                querier.ask(v, info, name)
            if not be.is_reference and not probe:
                from unirt.evidence.verify import lookup

                cached = lookup(info, name, v.engine_version, "exact", {}, shapes, None,
                                checked, inputs)
                if cached is not None:
                    apply_measurement(v, cached)
    finally:
        querier.close()
    report = CapabilityReport(model_summary(info), verdicts, lint=linted)
    if probe:
        _measure(report, info, registry, shapes, timeout, layerwise, checked, inputs)
    for name, v in verdicts.items():
        settle(v, reference=registry.backend(name).is_reference)
        if v.measured is not None:
            report.probes[name] = v.measured
        v.fixable_by = fixable_by(v, info, registry, shapes)
    return report


#: Measured outcomes that say the backend ran the model right, or say nothing about it.
_NOT_FAILED = frozenset({CaseStatus.PASS, CaseStatus.UNVERIFIED, CaseStatus.HARNESS})


def fixable_by(verdict: Verdict, info: ModelInfo, registry: Registry,
               shapes: Mapping[str, Sequence[int]] | None = None) -> list[str]:
    """The rewrites ``load`` would try on a refused backend that address what refused it: when
    the verdict is UNSUPPORTED on decisive evidence, or a measured run failed, the available
    non-opt-in rewrites (:func:`unirt.runtime.fit.select`) whose ``ops`` include an op named by
    the deciding reasons (their ``op``, or a node or op type of the model their message names,
    as an engine's error does: "Node (p1) Op (MaxPool)"). Cheap: no child, no engine; whether
    the rewrite then runs right is for ``load`` (or ``unirt rewrite``) to measure. Each
    candidate is applied to a copy in this process (graph edits only) and listed when it changed
    something: a MaxPool rewrite for 3-D kernels says nothing about a 2-D pool's problem."""
    from unirt.runtime.fit import select

    measured = verdict.measured
    failed = (measured is not None and not measured.get("verified")
              and measured.get("status") not in _NOT_FAILED)
    if failed:
        deciding = [r for r in verdict.reasons if r.evidence == Evidence.MEASURED]
    elif verdict.status == UNSUPPORTED:
        deciding = [r for r in verdict.decisive if r.evidence != Evidence.AVAILABILITY]
    else:
        return []
    ops = {op for r in deciding for op in _ops_named(r, info)}
    if not ops:
        return []
    candidates = [r for r in select(registry, info, verdict.backend) if r.ops & ops]
    return [r.name for r in candidates if _changes(r, info, verdict.backend, shapes)]


def _changes(rewrite: Any, info: ModelInfo, backend: str,
             shapes: Mapping[str, Sequence[int]] | None) -> bool:
    """Whether ``rewrite`` changes the model (applied to a fresh copy of it)."""
    from unirt.model.info import load_proto
    from unirt.plugin.rewrite import RewriteContext
    from unirt.runtime.fit import apply

    proto = load_proto(info, weights=True)
    changes, _ = apply(proto, [rewrite], RewriteContext(backend=backend,
                                                        input_shapes=dict(shapes or {})))
    return bool(changes)


def _ops_named(reason: Reason, info: ModelInfo) -> set[str]:
    """The model's op types a reason is about: its ``op``, else those its message names."""
    if reason.op:
        return {reason.op}
    words = set(re.findall(r"[A-Za-z_][\w./:-]*", reason.message))
    found = {n.op_type for n in info.nodes if n.name and n.name in words}
    return found | (words & set(info.op_counts))


#: Seconds an engine's own answer (``Backend.query``) may take; ``UNIRT_QUERY_TIMEOUT``
#: overrides. OpenVINO's ``query_model`` is exponential in If nesting (depth 16: 1.3 s, depth
#: 20: 19 s, depth 25: minutes): a report must not wait for it.
QUERY_TIMEOUT = timeouts.QUERY.seconds


def query_timeout_default() -> float:
    """``UNIRT_QUERY_TIMEOUT`` or :data:`QUERY_TIMEOUT`."""
    return timeouts.seconds(timeouts.QUERY)


def _child_query(source: ModelSource, backend: str, spec: RegistrySpec | None
                 ) -> set[str] | None:
    """``Backend.query`` in a child (run by :func:`unirt.process.isolation.run_isolated`): the
    model read here and the parent's plugin registry rebuilt from ``spec``, as the probe's children
    do, so the engine asked is the one the parent would have asked."""
    from unirt.model.info import read_model
    from unirt.plugin.registry import Registry, get_registry

    registry = get_registry() if spec is None else Registry.from_spec(spec)
    return registry.backend(backend).query(read_model(source))


class _Querier:
    """Asks each engine for its own answer on the model, bounded in time.

    Every backend but the reference is asked in a child process with a timeout: an engine's
    query is code that has not yet been seen to end on this model (OpenVINO's ``query_model``
    runs for minutes on a 25-deep If nest, and a crash there would end the caller). A time-out,
    a crash or unirt failing to start the child is a note on the verdict, never a refusal: it
    says how the question went, not whether the engine runs the model. The reference is asked
    in this process (see :func:`capabilities`)."""

    def __init__(self, registry: Registry, timeout: float) -> None:
        self.registry = registry
        self.timeout = timeout
        self._worker: Worker | None = None

    def ask(self, verdict: Verdict, info: ModelInfo, name: str) -> None:
        from unirt.errors import HarnessError
        from unirt.evidence.probe import HARNESS_ERRORS
        from unirt.process.isolation import CRASHED, HARNESS, TIMEOUT, Worker

        be = self.registry.backend(name)
        if be.is_reference:
            # ONNX Runtime's answer is creating a session (graph optimisations off: 0.04 s on
            # a 25-deep If nest, import included; in a child 0.55-0.6 s), and the default
            # route opens it in this process anyway: a child would bound nothing load does not.
            try:
                merge_query(verdict, info, be.query(info))
            except UnirtError as exc:
                refused_by_engine(verdict, str(exc))
            return
        try:
            spec = self.registry.spec()
        except HarnessError as exc:
            verdict.notes.append(f"engine query not asked: {exc}")
            return
        if self._worker is None:
            self._worker = Worker()
        from unirt.process.child import call_plain

        outcome = self._worker.call(call_plain, _child_query, info.source(), name, spec,
                                    timeout=self.timeout)
        if outcome.ok:
            merge_query(verdict, info, outcome.value)
        elif outcome.status == TIMEOUT:
            logger.info("%s: the engine query on %s timed out after %g s", name, info.name,
                        self.timeout)
            verdict.notes.append(f"engine query timed out after {self.timeout:g} s")
        elif outcome.status == HARNESS or outcome.error_type in HARNESS_ERRORS:
            verdict.notes.append(f"engine query not asked: unirt could not measure: "
                                 f"{outcome.describe()}")
        elif outcome.status == CRASHED:
            verdict.notes.append(f"engine query {outcome.describe()}")
        else:  # the engine raised: its message, as Backend.query raised it
            verdict.notes.append(f"engine query failed: {outcome.describe().split(': ', 1)[-1]}")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def apply_measurement(verdict: Verdict, verification: Verification) -> None:
    """Fold a verification verdict (measured now or cached) into a capability verdict."""
    from unirt.evidence.verify import VerifyStatus

    summary = probe_summary(verification.result)
    summary["cached"] = verification.cached
    # What load decides on: verified is SUPPORTED even where some shapes are refused (limits
    # the run-time fallback takes), as the route opens it.
    summary["verified"] = verification.status == VerifyStatus.VERIFIED
    verdict.measured = summary
    result = verification.result
    if verification.status == VerifyStatus.REFUSED:
        refused_by_engine(verdict, result.reason)
    elif verification.status == VerifyStatus.REJECTED:
        verdict.reasons.append(Reason(result.reason, "measured", evidence=Evidence.MEASURED))
    elif verification.status == VerifyStatus.UNVERIFIED:
        verdict.notes.append(f"not measured: {result.reason}")
    if result.nonfinite:  # a note, not a reason: it decides nothing (see unirt.evidence.probe)
        verdict.notes.append(result.nonfinite)
    settle(verdict)


def _measure(report: CapabilityReport, info: ModelInfo, registry: Registry,
             shapes: Mapping[str, Sequence[int]] | None, timeout: float,
             layerwise: bool, ranges: Mapping[str, tuple[float, float]] | None = None,
             inputs: InputSets | None = None) -> None:
    """Measure every available backend now: one reference run shared by all, each backend's
    verdict written where ``load`` reads it (for the user's ``inputs`` too: keyed by their
    digest, so ``load(inputs=)``, ``tune`` and ``compare`` on the same arrays agree)."""
    from unirt import progress
    from unirt.evidence.probe import ProbeStatus, reference_outputs
    from unirt.evidence.verify import feed_sets, verify

    runnable = [n for n, v in report.verdicts.items() if v.status != UNAVAILABLE]
    try:
        labels, _, feeds = feed_sets(info, shapes, ranges, inputs)
    except UnirtError as exc:
        for name in runnable:
            report.verdicts[name].notes.append(f"not measured: no inputs can be generated "
                                               f"({exc})")
        return
    with progress.step(progress.Step.REFERENCE, registry.reference, info.name):
        opened, reference = reference_outputs(info.source(), feeds, timeout=timeout,
                                              labels=labels, registry=registry)
    for name in runnable:
        v = report.verdicts[name]
        if registry.backend(name).is_reference:
            v.measured = _reference_summary(reference, opened.ok)
            if v.measured["status"] == CaseStatus.RUN_FAIL:
                # It opened the model: a failure at the sizes probed is the sizes' doing as
                # often as the model's (silero-vad refuses 32 samples), never a refusal.
                v.notes.append(f"opened the model, failed running it at the sizes probed "
                               f"({v.measured['detail']}); give its real sizes with --shape")
            elif v.measured["status"] not in (CaseStatus.PASS, CaseStatus.DYNAMIC_FAIL):
                refused_by_engine(v, v.measured["detail"] or v.measured["status"])
            continue
        ver = verify(info, name, v.engine_version, "exact", {}, shapes, "always",
                     timeout=timeout, registry=registry, reference=reference, runs=10,
                     ranges=ranges, inputs=inputs)
        apply_measurement(v, ver)
        if layerwise and inputs is None and ver.result.status == ProbeStatus.FAIL:
            _explain_divergence(v, info, name, ver.result, labels, feeds, timeout)


def _reference_summary(reference: list[RunSet], opened: bool = False) -> dict[str, Any]:
    """The reference measured on its own inputs: it passes by definition when it runs."""
    import statistics

    ran = [r for r in reference if r.outputs is not None]
    times = [t for r in ran for t in r.times]
    if ran:
        limited = {r.label: r.outcome.describe() for r in reference if r.outputs is None}
        status, detail = CaseStatus.PASS, "the reference"
        if limited:
            status = CaseStatus.RUN_FAIL if reference[0].outputs is None \
                else CaseStatus.DYNAMIC_FAIL
            detail = ("declared dynamic, fails at " if status == CaseStatus.DYNAMIC_FAIL
                      else "") + \
                "; ".join(f"{k}: {v}" for k, v in limited.items())
        return {"status": status, "detail": detail, "precision": "fp32",
                "median_ms": statistics.median(times) * 1e3 if times else None,
                "max_abs": 0.0, "max_rel": 0.0, "shapes": [r.label for r in reference],
                "limited": limited, "cached": False}
    first = reference[0].outcome if reference else None
    fallback = CaseStatus.RUN_FAIL if opened else CaseStatus.LOAD_FAIL
    status = {OutcomeStatus.CRASHED: CaseStatus.CRASH, OutcomeStatus.TIMEOUT: CaseStatus.TIMEOUT
              }.get(first.status, fallback) if first else fallback
    return {"status": status, "detail": first.describe() if first else "nothing ran",
            "precision": None, "median_ms": None, "max_abs": None, "max_rel": None,
            "shapes": [], "limited": {}, "cached": False}


def _explain_divergence(verdict: Verdict, info: ModelInfo, backend: str, result: ProbeResult,
                        labels: list[str], feeds: list[FeedRecipe], timeout: float) -> None:
    """Name the first node whose output diverges, on the inputs where the run was wrong."""
    from unirt.evidence.probe import set_label
    from unirt.tools.compare import layerwise
    from unirt.tools.layerwise import LayerStatus

    index = next((i for i, (label, f) in enumerate(zip(labels, feeds))
                  if f" at {set_label(label, f)}" in result.reason), 0)
    try:
        # A diagnosis after a mismatch, on arrays: the recipe is built here for it.
        lw = layerwise(info.source(), backend, feeds=feeds[index].build(), timeout=timeout)
    except UnirtError as exc:
        verdict.notes.append(f"layerwise search failed: {exc}")
        return
    if lw.status != LayerStatus.DIVERGES or lw.first is None:
        verdict.notes.append(f"layerwise search: {lw.status}"
                             + (f" ({lw.reason})" if lw.reason else ""))
        return
    first = lw.first
    outs = "; ".join(first.tensors[k].text() for k in first.output_errors
                     if k in first.tensors)
    ins = "; ".join(first.tensors[k].text() for k in first.input_errors if k in first.tensors)
    verdict.reasons.insert(0, Reason(
        f"first diverging node: {outs or '?'} at its output"
        + (f", {ins} at its inputs" if ins else "")
        + (f"; {lw.verdict}" if lw.verdict else "")
        + (f"; ill-conditioned: {lw.ill_conditioned}" if lw.ill_conditioned else ""),
        "diverges", first.node, first.op, UNSUPPORTED, Evidence.MEASURED))


def probe_summary(result: ProbeResult) -> dict[str, Any]:
    """A :class:`~unirt.evidence.probe.ProbeResult` as the matrix shows it: ``status`` is a
    :class:`~unirt.capability.table.CaseStatus`. ``nonfinite``: how the backend treats NaN/inf
    inputs where it differs from the reference (``hides NaN/inf: ...``), empty otherwise."""
    from unirt.evidence.probe import CRASHED, ERROR, FAIL, HARNESS, NO_REFERENCE, PASS, TIMEOUT

    out: dict[str, Any] = {"status": CaseStatus.PASS, "detail": None, "precision": result.precision,
                           "median_ms": None if result.run_s is None else result.run_s * 1e3,
                           "max_abs": max((o.max_abs for o in result.outputs), default=None),
                           "max_rel": max((o.max_rel for o in result.outputs), default=None),
                           "shapes": result.shapes, "limited": result.limited,
                           "nonfinite": result.nonfinite, "evidence": result.evidence,
                           "weak": result.weak}
    if result.status == CRASHED:
        out.update(status=CaseStatus.CRASH, detail=result.reason)
    elif result.status == TIMEOUT:
        out.update(status=CaseStatus.TIMEOUT, detail=result.reason)
    elif result.status == HARNESS:
        out.update(status=CaseStatus.HARNESS, detail=result.reason)
    elif result.status == ERROR and not result.opened:
        out.update(status=CaseStatus.LOAD_FAIL, detail=result.reason)
    elif result.status == FAIL:
        out.update(status=CaseStatus.MISMATCH, detail=result.reason)
    elif result.status == NO_REFERENCE:
        out.update(status=CaseStatus.UNVERIFIED, detail=result.reason)
    elif result.limited:
        base = result.shapes[0] if result.shapes else None
        if result.status == ERROR or (base in result.limited and result.status != PASS):
            out.update(status=CaseStatus.RUN_FAIL, detail="; ".join(
                f"{k}: {v}" for k, v in result.limited.items()))
        else:  # it ran right at some sizes (verified there): a limit, not a failure
            ran = [s for s in result.shapes if s not in result.limited]
            out.update(status=CaseStatus.DYNAMIC_FAIL,
                       detail=(f"passes at {', '.join(ran)}; " if ran else "")
                       + "fails at " + ", ".join(f"{k}: {v}" for k, v in
                                                result.limited.items()))
    return out
