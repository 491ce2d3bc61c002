"""The rewrite pipeline: choose the rewrites that apply, apply them to a copy, prove the copy.

:func:`fit` is what routing, ``unirt rewrite`` and ``unirt capabilities`` share. The rewritten
model is written content-addressed in the artifact cache (the original's digest, the rewrites,
their versions and the context), so a second load finds it. It is used only after a child
process ran it on the backend and its outputs matched the reference on the *original* model, on
the same seeded inputs at two sizes of every dynamic dim, within the exact tolerance: a rewrite
is a claim about the numbers, and unirt measures it.

When the reference cannot run the original (the pool-rank model: ONNX Runtime refuses it too),
onnx's own reference evaluator runs the original in a child instead, if it can and it reads the
model as the model says: each output's shape must match the declared static dims and, for dims
undeclared or symbolic, what the reference gives on the rewritten model. Two readings of an
ill-formed model that disagree prove nothing (the evaluator reads a 3-D kernel on a rank-4 input
as a 2-D pool), so then the comparison is with the reference running the rewritten model: that
proves the engine runs the rewritten model right, not that the rewrite kept the model's meaning,
and the status says so (:attr:`FitStatus.RAN_RIGHT`). The verdict is cached like
:mod:`unirt.evidence.verify`'s: only a verdict about the engine or the rewrite, never a time-out or
unirt's own failure.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.errors import UnirtError, first_line
from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.words import Word

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from unirt.evidence.operating import InputSets
    from unirt.evidence.probe import ProbeResult, RunSet
    from unirt.model.info import ModelInfo
    from unirt.plugin.registry import Registry

logger = logging.getLogger("unirt")

#: Cache sections: rewritten models, and verdicts on them.
MODEL_SECTION = "rewrite"
VERDICT_SECTION = "rewrite-verify"
MODEL_FILE = "model.onnx"
CHANGES_FILE = "changes.json"
VERDICT_FILE = "verdict.json"
#: Bumped when what the pipeline writes or what a verdict means changes (2: the evaluator's
#: reading is checked against the reference on the rewritten model; verdicts record their basis).
VERSION = 2
#: The name results give onnx's reference evaluator.
EVALUATOR = "onnx.reference"


class FitStatus(Word):
    """What became of fitting a model to a backend."""

    VERIFIED = "verified"  # matched the original's outputs in a child: rewrite and engine proven
    RAN_RIGHT = "ran right"  # matched the reference on the rewritten model: the engine is proven,
    # the rewrite is not (the original runs nowhere); used, and said so
    DISCARDED = "discarded"  # rewritten, but the numbers changed
    REFUSED = "refused"  # rewritten, and the engine still refuses it (or crashes on it)
    UNVERIFIED = "unverified"  # rewritten and ran, nothing independent to compare with
    NOT_APPLICABLE = "not applicable"  # no rewrite applies to this model


class Basis(Word):
    """What the rewritten model's outputs on the backend were compared with."""

    ORIGINAL = "original"  # the original model's outputs (the reference, or onnx.reference)
    REWRITTEN = "rewritten"  # the reference running the rewritten model
    NONE = "none"  # nothing (the reference itself on a model only the rewrite makes runnable)


#: The usable statuses: the rewritten model may replace the original.
PROVEN = frozenset({FitStatus.VERIFIED, FitStatus.RAN_RIGHT})


@dataclass(frozen=True)
class Fitted:
    """A model fitted to a backend (or why not).

    ``rewrites``: the names of the rewrites that changed the model; ``changes`` each edit with
    the rewrite that made it; ``info``: the rewritten model (None when nothing applied);
    ``compared_with``: what the rewritten model's outputs were compared with, and ``basis``
    which kind of comparison that was; ``result``: the measurement; ``failures``: rewrites that
    raised (a bug in the rewrite, never the model's).
    """

    backend: str
    status: FitStatus
    rewrites: tuple[str, ...] = ()
    changes: tuple[tuple[str, Change], ...] = ()
    info: ModelInfo | None = None
    result: ProbeResult | None = None
    compared_with: str = ""
    reason: str = ""
    cached: bool = False
    failures: Mapping[str, str] = field(default_factory=dict)
    basis: Basis = Basis.ORIGINAL

    @property
    def usable(self) -> bool:
        """Whether the rewritten model may be opened in the user's process: verified, ran right
        against the reference on the rewritten model, or ran safely in a child with nothing
        independent to compare with."""
        from unirt.evidence.probe import ProbeStatus

        return self.info is not None and (self.status in PROVEN or (
            self.status == FitStatus.UNVERIFIED and self.result is not None
            and self.result.status == ProbeStatus.NO_REFERENCE))

    @property
    def max_abs(self) -> float | None:
        if self.result is None or not self.result.outputs:
            return None
        return max(o.max_abs for o in self.result.outputs)

    def describe(self) -> str:
        """What was proved: ``pool_rank (verified, max abs 0)``; ``pool_rank (ran right, max abs
        0 against onnxruntime on the rewritten model; the rewrite itself is unproven: ...)``;
        ``pool_rank discarded: max abs 0.31 > 0.0001 on y``."""
        names = ", ".join(self.rewrites) or "no rewrite"
        if self.status == FitStatus.NOT_APPLICABLE:
            return self.reason or "no rewrite applies"
        worst = self.max_abs
        figure = "" if worst is None else f"max abs {worst:.2g}"
        against = "" if self.compared_with.startswith("the reference on the original") \
            else f" against {self.compared_with}"
        cached = "cached verdict: " if self.cached else ""
        if self.status in PROVEN:
            return f"{names} ({cached}{self.status}, {figure}{against})"
        if self.status == FitStatus.DISCARDED:
            return f"{names} discarded: {self._excess()}" + (
                f" (against {self.compared_with})" if self.basis == Basis.REWRITTEN else "")
        return f"{names} {self.status}: {self.reason}"

    def _excess(self) -> str:
        r = self.result
        if r is None or not r.outputs:
            return self.reason
        worst = max(r.outputs, key=lambda o: o.max_abs)
        if worst.problem:
            return f"{worst.name}: {worst.problem}"
        atol = r.tolerances.get(worst.name, (None, None))[0]
        return f"max abs {worst.max_abs:.2g}" + (f" > {atol:g}" if atol is not None else "") \
            + f" on {worst.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status.value,
                "rewrites": list(self.rewrites), "compared_with": self.compared_with,
                "basis": self.basis.value, "reason": self.reason, "max_abs": self.max_abs,
                "cached": self.cached,
                "changes": [{"rewrite": n, "node": c.node, "op": c.op, "what": c.what}
                            for n, c in self.changes],
                "failures": dict(self.failures),
                "result": None if self.result is None else self.result.as_dict(),
                "path": None if self.info is None or self.info.path is None
                else str(self.info.path)}


# -- choosing ------------------------------------------------------------------------------------
def max_opset(backend: str, registry: Registry) -> int | None:
    """The highest default-domain opset ``backend`` loads, from its measured op-support table
    (:func:`unirt.plugin.inventory.engine_limits`): what ``opset_convert`` converts down to.
    None when the table says nothing (no conversion)."""
    from unirt.plugin.inventory import engine_limits

    limits = engine_limits([backend], registry)
    return limits[0].max_opset if limits else None


def check_names(registry: Registry, names: Any) -> tuple[str, ...] | None:
    """``load(rewrite=...)`` as the pipeline takes it: None for ``True`` (every applicable
    rewrite), a tuple of names for a list; raises ``UnirtError`` for anything else or an
    unknown name. ``False`` is the caller's to handle (no rewriting at all)."""
    if names is True or names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence) or not all(
            isinstance(n, str) for n in names):
        raise UnirtError(f"rewrite must be True, False or a list of rewrite names, not {names!r}")
    for name in names:
        registry.rewrite(name)  # unknown: an error listing the registered ones
    return tuple(names)


def select(registry: Registry, info: ModelInfo, backend: str | None,
           names: Sequence[str] | None = None) -> list[Rewrite]:
    """The rewrites to try on ``info`` for ``backend``: with ``names``, only those; else every
    registered one that is not opt-in and is meant for this backend. Either way, a rewrite whose
    ``ops`` the model does not contain is left out (it could not apply). No model is read."""
    if names is not None:
        chosen = [registry.rewrite(n) for n in names]
    else:
        chosen = [r for r in registry.rewrites.values() if not r.opt_in
                  and (r.backends is None or backend in r.backends)]
    ops = set(info.op_counts)
    return [r for r in chosen if not r.ops or r.ops & ops]


# -- applying ------------------------------------------------------------------------------------
def apply(model: onnx.ModelProto, rewrites: Sequence[Rewrite], context: RewriteContext
          ) -> tuple[list[tuple[str, Change]], dict[str, str]]:
    """Apply ``rewrites`` in order to ``model`` in place. Returns each change with its rewrite's
    name, and the rewrites that raised (their edits undone). Initializers that only the replaced
    nodes read are dropped."""
    import onnx

    changes: list[tuple[str, Change]] = []
    failures: dict[str, str] = {}
    for rewrite in rewrites:
        before = onnx.ModelProto()
        before.CopyFrom(model)
        try:
            made = rewrite.apply(model, context)
        except Exception as exc:
            logger.warning("rewrite %s failed: %s", rewrite.name, first_line(exc))
            failures[rewrite.name] = f"{type(exc).__name__}: {first_line(exc)}"
            model.CopyFrom(before)
            continue
        if made:
            _drop_orphans(model, before)
            changes += [(rewrite.name, c) for c in made]
        elif model != before:  # a rewrite that applied nothing must leave the model as it was
            failures[rewrite.name] = "changed the model but reported no change"
            model.CopyFrom(before)
    return changes, failures


def _drop_orphans(model: onnx.ModelProto, before: onnx.ModelProto) -> None:
    def used(m: onnx.ModelProto) -> set[str]:
        names = {i for n in m.graph.node for i in n.input}
        names |= {o.name for o in m.graph.output}
        return names

    was, now = used(before), used(model)
    keep = [t for t in model.graph.initializer if t.name in now or t.name not in was]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)


def _context_doc(context: RewriteContext) -> dict[str, Any]:
    return {"backend": context.backend, "opset": context.opset,
            "input_shapes": {k: list(v) for k, v in context.input_shapes.items()},
            "options": {k: dict(v) for k, v in context.options.items()}}


def rewritten(info: ModelInfo, rewrites: Sequence[Rewrite], context: RewriteContext
              ) -> tuple[ModelInfo | None, list[tuple[str, Change]], dict[str, str]]:
    """The rewritten model from the artifact cache, built now when missing: (its ModelInfo or
    None when nothing applied, the changes, the rewrites that failed)."""
    from unirt.model.info import load_proto, read_model
    from unirt.store.cache import ArtifactCache, artifact_key

    key = artifact_key(MODEL_SECTION, info,
                       versions={"pipeline": VERSION,
                                 "rewrites": {r.name: r.version for r in rewrites}},
                       options={"rewrites": [r.name for r in rewrites],
                                "context": _context_doc(context)})

    def build(tmp: Path) -> dict[str, Any]:
        import onnx

        proto = load_proto(info, weights=True)
        if info.path is not None and info.external_data:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(proto, str(info.path.parent))
        changes, failures = apply(proto, rewrites, context)
        if changes:
            onnx.save(proto, str(tmp / MODEL_FILE))
        (tmp / CHANGES_FILE).write_text(json.dumps({
            "changes": [{"rewrite": n, "node": c.node, "op": c.op, "what": c.what}
                        for n, c in changes], "failures": failures}, indent=1))
        return {"model": info.name, "rewrites": sorted({n for n, _ in changes})}

    entry, _ = ArtifactCache().get_or_build(MODEL_SECTION, key, build,
                                            meta={"kind": "rewritten model"})
    doc = json.loads((entry / CHANGES_FILE).read_text())
    changes = [(c["rewrite"], Change(c["node"], c["op"], c["what"])) for c in doc["changes"]]
    failures = dict(doc.get("failures", {}))
    if not changes:
        return None, changes, failures
    return read_model(entry / MODEL_FILE), changes, failures


# -- verifying -----------------------------------------------------------------------------------
def _child_evaluate(state: dict[str, Any], source: str | bytes, feeds: Any) -> dict[str, Any]:
    """onnx's reference evaluator on ``source`` (in a child: it can be slow or fail badly)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from unirt.evidence.inputs import FeedRecipe

    if "evaluator" not in state:
        model = onnx.load(source) if isinstance(source, str) else onnx.load_from_string(source)
        state["evaluator"] = ReferenceEvaluator(model)
        state["names"] = [o.name for o in model.graph.output]
    arrays = feeds.build() if isinstance(feeds, FeedRecipe) else feeds
    outs = state["evaluator"].run(None, dict(arrays))
    return {"outputs": dict(zip(state["names"], outs)), "times": []}


def _misread(info: ModelInfo, evaluated: Mapping[str, Any],
            rewritten: Mapping[str, Any] | None, ref_name: str) -> str | None:
    """Why the evaluator's ``evaluated`` outputs of the original cannot stand for it, or None.

    Each dim must be the declared one where that is static, else what the reference gives on
    the rewritten model (``rewritten``; None: it gave nothing, so an undeclared dim has nothing
    to agree with). A check against declared shapes alone passes for undeclared outputs: the
    evaluator's 2-D reading of a 3-D kernel on a rank-4 input then became the truth."""
    import numpy as np

    from unirt.tensor import is_static

    for t in info.outputs:
        if t.name not in evaluated:
            continue
        got = tuple(int(d) for d in np.shape(evaluated[t.name]))
        declared = t.shape
        if declared is not None and len(declared) != len(got):
            return f"output {t.name!r} has rank {len(got)} there, the model declares " \
                   f"{len(declared)}"
        if declared is not None and all(is_static(d) for d in declared):
            if got != tuple(declared):
                return f"output {t.name!r} has shape {list(got)} there, the model declares " \
                       f"{list(declared)}"
            continue
        if rewritten is None or t.name not in rewritten:
            return f"output {t.name!r} has shape {list(got)} there, not fully declared, and " \
                   f"{ref_name} cannot run the rewritten model to check it"
        other = tuple(int(d) for d in np.shape(rewritten[t.name]))
        want = other if declared is None or len(other) != len(got) else tuple(
            d if is_static(d) else o for d, o in zip(declared, other))
        if got != want:
            return f"output {t.name!r} has shape {list(got)} there, {list(other)} on " \
                   f"{ref_name} with the rewritten model"
    return None


def _needs_second_reading(info: ModelInfo) -> bool:
    """Whether some output's shape is undeclared or symbolic (the evaluator's reading must then
    agree with the reference on the rewritten model)."""
    return any(t.shape is None or t.is_dynamic for t in info.outputs)


def evaluator_outputs(info: ModelInfo, recipes: Sequence[Any], labels: Sequence[str],
                      timeout: float, rewritten: Sequence[RunSet] | None = None,
                      ref_name: str = "the reference") -> tuple[list[RunSet] | None, str]:
    """onnx's reference evaluator on the original, in a child: (its RunSets, "") or (None, why
    not). Outputs are trusted only where their shapes agree with the declared static dims and,
    for the rest, with ``rewritten`` (the reference on the rewritten model, set by set): the
    evaluator reads an ill-formed node its own way (a 3-D kernel on a rank-4 input as a 2-D
    pool)."""
    from unirt.evidence.child_ops import new_state
    from unirt.evidence.probe import RunSet, set_label
    from unirt.process.isolation import Worker

    sets: list[RunSet] = []
    with Worker(new_state) as w:
        for i, (label, feeds) in enumerate(zip(labels, recipes)):
            out = w.call(_child_evaluate, info.source(), feeds, timeout=timeout)
            if not out.ok:
                return None, f"{EVALUATOR} cannot run it: {out.describe()}"
            other = rewritten[i].outputs if rewritten is not None and i < len(rewritten) \
                else None
            wrong = _misread(info, out.value["outputs"], other, ref_name)
            if wrong is not None:
                return None, f"{EVALUATOR} reads it otherwise: {wrong}"
            sets.append(RunSet(set_label(label, feeds), out, out.value["outputs"], [],
                               nonfinite=getattr(feeds, "nonfinite", False)))
    return sets, ""


def _verdict_key(original: ModelInfo, fitted: ModelInfo, backend: str, version: str | None,
                 precision: str, options: Mapping[str, Any], sets: list[dict[str, tuple]],
                 tolerance: float | None, inputs: str | None = None,
                 ranges: Mapping[str, Any] | None = None) -> str:
    from unirt.evidence.values import specs_json
    from unirt.store.cache import artifact_key, model_digest

    extra: dict[str, Any] = {"inputs": inputs} if inputs else {}
    if ranges:
        extra["input_ranges"] = specs_json(ranges)
    return artifact_key(VERDICT_SECTION, fitted,
                        versions={"engine": version, "pipeline": VERSION},
                        shapes=[{k: list(v) for k, v in s.items()} for s in sets],
                        precision=precision,
                        options={"backend": backend, "options": dict(options),
                                 "tolerance": tolerance, "original": model_digest(original),
                                 **extra})


def _cached_verdict(key: str) -> tuple[ProbeResult, str, Basis] | None:
    from unirt.evidence.probe import ProbeResult
    from unirt.store.cache import ArtifactCache

    cache = ArtifactCache()
    entry = cache.lookup(VERDICT_SECTION, key)
    if entry is None:
        return None
    try:
        doc = json.loads((entry / VERDICT_FILE).read_text())
        return ProbeResult.from_dict(doc["result"]), str(doc["compared_with"]), \
            Basis(doc["basis"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("unreadable rewrite verdict %s (%s); removed", key, exc)
        cache.remove(VERDICT_SECTION, key)
        return None


def _store_verdict(key: str, result: ProbeResult, compared_with: str, basis: Basis) -> None:
    from unirt.store.cache import ArtifactCache

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / VERDICT_FILE).write_text(json.dumps(
            {"result": result.as_dict(), "compared_with": compared_with,
             "basis": basis.value}, indent=1))
        return {"backend": result.backend, "status": result.status}

    cache = ArtifactCache()
    entry, _ = cache.get_or_build(VERDICT_SECTION, key, build,
                                  meta={"kind": "rewrite verification"})
    cache.release(entry)


def _measure(original: ModelInfo, fitted: ModelInfo, backend: str, precision: str,
             options: Mapping[str, Any], shapes: Mapping[str, Sequence[int]] | None,
             tolerance: float | None, registry: Registry, timeout: float,
             inputs: InputSets | None = None, ranges: Mapping[str, Any] | None = None
             ) -> tuple[ProbeResult, str, Basis]:
    """Run ``fitted`` on ``backend`` in a child and judge it: (result, what it was compared
    with, the kind of comparison); on the user's ``inputs`` when given."""
    from unirt.evidence.probe import (
        HARNESS,
        NO_REFERENCE,
        ProbeResult,
        probe,
        reference_name,
        reference_outputs,
    )
    from unirt.evidence.verify import feed_sets

    ref_name = reference_name(registry)
    try:
        labels, _, recipes = feed_sets(original, shapes, ranges, inputs)
    except UnirtError as exc:
        return ProbeResult(backend, NO_REFERENCE, f"no inputs can be generated ({exc})"), "", \
            Basis.NONE
    opened, reference = reference_outputs(original.source(), recipes, timeout=timeout,
                                          labels=labels, registry=registry)
    if opened.ok:
        compared, basis = f"the reference on the original ({ref_name})", Basis.ORIGINAL
    elif opened.status == HARNESS:
        return ProbeResult(backend, HARNESS, f"unirt could not run the reference: "
                           f"{opened.describe()}", opened=False), "", Basis.NONE
    else:
        on_rewritten = None
        if _needs_second_reading(original):
            _, on_rewritten = reference_outputs(fitted.source(), recipes, timeout=timeout,
                                                labels=labels, registry=registry)
        evaluated, why_eval = evaluator_outputs(original, recipes, labels, timeout,
                                                on_rewritten, ref_name)
        if evaluated is not None:
            reference = evaluated
            compared, basis = f"{EVALUATOR} on the original ({ref_name} refuses it)", \
                Basis.ORIGINAL
        else:
            if on_rewritten is None:
                _, on_rewritten = reference_outputs(fitted.source(), recipes, timeout=timeout,
                                                    labels=labels, registry=registry)
            reference = on_rewritten
            nowhere = f"the original runs nowhere ({ref_name} refuses it; {why_eval})"
            logger.info("%s: %s", original.name, nowhere)
            if backend != ref_name:
                compared = f"{ref_name} on the rewritten model; the rewrite itself is " \
                           f"unproven: {nowhere}"
                basis = Basis.REWRITTEN
            else:
                compared = f"{ref_name} ran the rewritten model with nothing independent to " \
                           f"compare it with: neither its numbers nor the rewrite are " \
                           f"proven; {nowhere}"
                basis = Basis.NONE
    result = probe(fitted, backend, recipes, precision, options, atol=tolerance,
                   timeout=timeout, labels=labels, registry=registry, reference=reference)
    if basis == Basis.NONE and result.passed:
        result = ProbeResult(backend, NO_REFERENCE, compared, result.precision, result.shapes,
                             result.outputs, result.tolerances, result.limited, result.load_s,
                             result.run_s)
    return result, compared, basis


def _status(result: ProbeResult, basis: Basis) -> FitStatus:
    from unirt.evidence.probe import FAIL, HARNESS, NO_REFERENCE, PASS

    if result.status == PASS:
        return FitStatus.VERIFIED if basis == Basis.ORIGINAL else FitStatus.RAN_RIGHT
    if result.status == FAIL:
        return FitStatus.DISCARDED
    if result.status in (NO_REFERENCE, HARNESS):
        return FitStatus.UNVERIFIED
    return FitStatus.REFUSED


def fit(info: ModelInfo, backend: str, *, names: Sequence[str] | None = None,
        context: RewriteContext | None = None, registry: Registry | None = None,
        precision: str = "exact", options: Mapping[str, Any] | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None, tolerance: float | None = None,
        timeout: float | None = None, inputs: InputSets | None = None,
        ranges: Mapping[str, Any] | None = None) -> Fitted:
    """Fit ``info`` to ``backend``: the applicable rewrites applied to a copy (cached), then
    verified (cached). ``names``: only these rewrites (opt-in ones included); None: every
    applicable one that is not opt-in. Raises ``UnirtError`` for an unknown name; a rewrite that
    raises is reported in ``Fitted.failures`` and skipped. ``inputs``: the user's input sets
    (:mod:`unirt.evidence.operating`): the rewritten model is judged on them, as the original was;
    ``ranges``: the values generated inputs take (``load(input_ranges=)``)."""
    from unirt.evidence.verify import (
        Verification,
        probe_shapes,
        status_of,
        verify_timeout,
    )
    from unirt.plugin.registry import get_registry

    registry = registry or get_registry()
    if names is not None:
        names = check_names(registry, list(names))
    context = context or RewriteContext(backend=backend, input_shapes=dict(shapes or {}),
                                        opset=max_opset(backend, registry))
    chosen = select(registry, info, backend, names)
    if not chosen:
        return Fitted(backend, FitStatus.NOT_APPLICABLE, reason="no rewrite applies to "
                      f"{info.name}" + (f" among {', '.join(names)}" if names else ""))
    fitted, changes, failures = rewritten(info, chosen, context)
    if fitted is None:
        tried = ", ".join(r.name for r in chosen)
        return Fitted(backend, FitStatus.NOT_APPLICABLE, failures=failures,
                      reason=f"no rewrite applies to {info.name} (tried {tried})"
                      + "".join(f"; {n} failed: {e}" for n, e in failures.items()))
    applied = tuple(dict.fromkeys(n for n, _ in changes))
    be = registry.backend(backend)
    version = be.available().version
    if timeout is None:

        timeout = verify_timeout()
    try:
        sets = inputs.shapes if inputs is not None else probe_shapes(info.inputs, shapes)
    except UnirtError:
        sets = []
    key = _verdict_key(info, fitted, backend, version, precision, options or {}, sets,
                       tolerance, inputs.digest if inputs is not None else None, ranges)
    known = _cached_verdict(key)
    if known is not None:
        result, compared, basis = known
        cached = True
    else:
        from unirt import progress

        with progress.step(progress.Step.REWRITE, backend, info.name,
                           "+".join(applied)) as running:
            result, compared, basis = _measure(info, fitted, backend, precision, options or {},
                                               shapes, tolerance, registry, timeout, inputs,
                                               ranges)
            running.detail = f"{'+'.join(applied)}: {result.status}"
        cached = False
        if Verification(status_of(result), result, False, key).about_engine:
            _store_verdict(key, result, compared, basis)
    status = _status(result, basis)
    return Fitted(backend, status, applied, tuple(changes), fitted, result, compared,
                  result.reason, cached, failures, basis)
