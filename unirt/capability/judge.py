"""Judging: a backend's static verdict on a model, and the final verdict once evidence is in.

Pure functions over what a backend hands in (its table, its rules, its engine's answer, a
measured run): nothing here opens a model or starts a process, so routing can call them in
milliseconds and the capability report can explain every step.

The table's rule for one node (:func:`judge_node`), explainable on purpose:

1. op never seen by the table -> UNKNOWN;
2. every case of the op passes -> SUPPORTED; none passes -> UNSUPPORTED (with the first error);
3. otherwise the op is *conditional*: a discriminating value (an attribute value or dtype seen in
   failing cases and in no passing case: ``layout=1``, ``mode='cubic'``, a bf16 input) makes the
   node UNSUPPORTED, naming it; so does being identical to a failing case (every attribute,
   dtype and rank). Nothing else does: incidental ranks and near matches with a failing case
   are not evidence about a node of a real model.

Every such answer is a *prediction* (:attr:`Evidence.TABLE`): it explains and orders, and the
backend goes on to be measured. What refuses a backend on its own (:func:`settle`): a backend rule,
a node no engine of this kind can run (a custom domain it implements nothing of, an op ONNX does not
define), the engine's own answer on this model, and a measured run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from unirt.capability.features import (
    ABSENT,
    STANDARD_DOMAINS,
    UNKNOWN_VALUE,
    describe_feature,
    node_features,
    node_signature,
    op_key,
    schema_since,
)
from unirt.capability.table import CaseStatus, OpEvidence, OpTable, find_table
from unirt.capability.verdict import (
    SUPPORTED,
    UNAVAILABLE,
    UNKNOWN,
    UNSUPPORTED,
    Evidence,
    Reason,
    Status,
    Verdict,
    combine,
)
from unirt.errors import first_line

if TYPE_CHECKING:  # pragma: no cover
    from unirt.model.info import ModelInfo, NodeInfo

logger = logging.getLogger("unirt")


class _Available(Protocol):
    @property
    def available(self) -> bool: ...

    @property
    def version(self) -> str | None: ...

    @property
    def reason(self) -> str | None: ...


class Judged(Protocol):
    """What a static check asks of a backend: the part of :class:`unirt.plugin.backend.Backend`
    the prediction reads. A protocol, because the plugin contract is built on top of this layer
    (``Backend.check`` is this module's :func:`check_backend`), not beneath it."""

    @property
    def name(self) -> str: ...

    def available(self) -> _Available: ...

    def host_outputs(self, model: ModelInfo) -> set[str]: ...

    def rules(self, model: ModelInfo) -> list[Reason]: ...


@dataclass
class Judgement:
    """How one node fares against an op's evidence (a prediction)."""

    status: Status
    kind: str
    message: str


def judge_node(ev: OpEvidence, feats: dict[str, str]) -> Judgement:
    """The table's prediction for one node's features (the rule of the module docstring)."""
    if not ev.failing:
        return Judgement(SUPPORTED, "table", f"all {len(ev.passing)} cases pass")
    if not ev.passing:
        return Judgement(UNSUPPORTED, "all_fail",
                         f"no conformance case of {ev.op} passes on this engine "
                         f"({len(ev.failing)} fail; first: {ev.failing[0].ref()})")
    bad = [(k, feats.get(k, ABSENT)) for k in sorted(ev.keys | set(feats))
           if (k, feats.get(k, ABSENT)) in ev.bad_values]
    if bad:
        k, v = bad[0]
        others = list(dict.fromkeys(describe_feature(*b) for b in bad[1:]))
        more = "; also " + ", ".join(others) if others else ""
        kind = "input" if v == ABSENT else ("attribute" if k.startswith("@") else "dtype")
        return Judgement(UNSUPPORTED, kind, ev.describe_bad(k, v) + more)
    same = next((c for c in ev.failing if _identical(c.feats, feats)), None)
    if same is not None:
        return Judgement(UNSUPPORTED, "case", f"same attributes, dtypes and ranks as failing "
                                              f"case {same.ref()}")
    return Judgement(SUPPORTED, "table",
                     f"conditional: {len(ev.failing)} of {len(ev.failing) + len(ev.passing)} "
                     "cases fail, for values this node does not have")


def _identical(case: dict[str, str], node: dict[str, str]) -> bool:
    """Every feature equal, none unknown: the node *is* the failing case, as far as a table can
    tell. (A near match is not evidence; an identical one is the one prediction ranks may
    make.)"""
    keys = set(case) | set(node)
    return all(node.get(k, ABSENT) == case.get(k, ABSENT) and node.get(k) != UNKNOWN_VALUE
               for k in keys)


def _unmeasured_constants(j: Judgement, node: NodeInfo, const: tuple[int, ...]) -> Judgement:
    """A conformance case feeds every input of its node at run time; a real model's weights are
    constants, and engines that fold or pre-pack weights (ncnn, OpenCV) run such a node where
    they fail the case. So a failure of every case says little about a node with constant
    inputs: UNKNOWN, to be measured."""
    if j.status != UNSUPPORTED or not const or j.kind not in ("all_fail", "case"):
        return j
    which = ", ".join(f"input {k} ({node.inputs[k]})" for k in const)
    return Judgement(UNKNOWN, "constant_inputs",
                     f"{j.message}; but every conformance case feeds {which} at run time, and "
                     "here it is a constant (weights): not measured")


def _op_state(current: str | None, new: str) -> str:
    order = ["supported", "conditional", "unknown", "unsupported"]
    if current is None:
        return new
    return max(current, new, key=order.index)


def check_backend(backend: Judged, model: ModelInfo, table: OpTable | None = None) -> Verdict:
    """What ``Backend.check`` does: the table's prediction for the installed engine, and the
    backend's rules. Status: UNAVAILABLE, UNSUPPORTED on a decisive reason, else UNKNOWN (the
    table predicts; only the engine and a measured run can say SUPPORTED)."""
    avail = backend.available()
    verdict = Verdict(backend.name, UNKNOWN, engine_version=avail.version)
    if not avail.available:
        verdict.status = verdict.prediction = UNAVAILABLE
        verdict.decided_by = Evidence.AVAILABILITY
        verdict.reasons.append(Reason(f"not available: {avail.reason}", "unavailable",
                                      evidence=Evidence.AVAILABILITY))
        return verdict
    if table is None:
        table, note = find_table(backend.name, avail.version)
        if note:
            verdict.notes.append(note)
    reasons: list[Reason] = []
    if table is None:
        verdict.notes.append(f"no op-support table for {backend.name}: generate one with "
                             f"`unirt probe-ops --backend {backend.name}`")
        reasons.append(Reason("no op-support table for this backend", "no_table",
                              verdict=UNKNOWN, evidence=Evidence.TABLE))
        for n in model.nodes:
            verdict.ops.setdefault(op_key(n.op_type, n.domain), "unknown")
    else:
        verdict.table = table.name
        try:
            host = backend.host_outputs(model)
        except Exception:  # a broken hook must not hide the table's reasons
            logger.warning("host outputs of %s failed on %s", backend.name, model.name,
                           exc_info=True)
            host = set()
        reasons += table_reasons(backend, model, table, verdict.ops, host)
    try:
        rules = backend.rules(model)
    except Exception as exc:  # a broken rule must not hide the other reasons
        logger.warning("rules of %s failed on %s", backend.name, model.name, exc_info=True)
        rules = [Reason(f"backend rules failed: {type(exc).__name__}: {first_line(exc)}",
                        "rule", verdict=UNKNOWN)]
    reasons += rules
    verdict.reasons = reasons
    verdict.prediction = combine(reasons)
    settle(verdict)
    return verdict


def table_reasons(backend: Judged, model: ModelInfo, table: OpTable, ops: dict[str, str],
                  host: set[str] | frozenset[str] = frozenset()) -> list[Reason]:
    """The table's reasons for ``model`` (predictions), plus the two facts no engine of any
    kind gets past (a custom domain the backend implements nothing of; a node type ONNX does not
    define), which are rules. ``ops`` is filled with the table's view of each op."""
    reasons: list[Reason] = []
    opset = model.opsets.get("", model.opsets.get("ai.onnx"))
    refused = table.limits.get("refused_opset")
    if refused is not None and opset is not None and opset >= refused:
        reasons.append(Reason(f"opset {opset} may be too new: the engine refused conformance "
                              f"cases stamped with opset {refused} and above", "opset",
                              evidence=Evidence.TABLE))
    refused_ir = table.limits.get("refused_ir")
    if refused_ir is not None and model.ir_version >= refused_ir:
        reasons.append(Reason(f"IR version {model.ir_version} may be too new: the engine refused "
                              f"conformance cases with IR {refused_ir} and above", "ir",
                              evidence=Evidence.TABLE))
    known = set(getattr(backend, "known_domains", ()) or ())
    cache: dict[str, Judgement] = {}
    signatures: set[str] = set()
    for index, node in enumerate(model.nodes):
        key = op_key(node.op_type, node.domain)
        label = node.name or f"{node.op_type}#{index}"
        if node.outputs and set(node.outputs) <= host:  # computed by the backend, not its engine
            ops[key] = _op_state(ops.get(key), "supported")
            continue
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in STANDARD_DOMAINS and domain not in known:
            reasons.append(Reason(f"custom domain {domain!r}: the engine implements no ops of it",
                                  "domain", label, key))
            ops[key] = _op_state(ops.get(key), "unsupported")
            continue
        ev = table.ops.get(key)
        if ev is None:
            if domain in STANDARD_DOMAINS and schema_since(model, node) is None:
                reasons.append(Reason(f"{node.op_type} is not an ONNX operator at opset "
                                      f"{model.opsets.get(domain)}", "op_unknown", label, key))
                ops[key] = _op_state(ops.get(key), "unsupported")
            else:
                reasons.append(Reason("op never seen in this engine's conformance table",
                                      "unseen", label, key, UNKNOWN, Evidence.TABLE))
                ops[key] = _op_state(ops.get(key), "unknown")
            continue
        too_new = table.op_refused_opset.get(key)
        if too_new is not None and model.opsets.get(domain, 0) >= too_new:
            reasons.append(Reason(f"the engine refused {node.op_type} in conformance cases stamped "
                                  f"with opset {too_new} or newer (model: opset "
                                  f"{model.opsets.get(domain)})", "opset", label, key,
                                  evidence=Evidence.TABLE))
            ops[key] = _op_state(ops.get(key), "unsupported")
            continue
        if ev.status == "supported" and key not in table.multi_ops:
            # Every conformance case of this op passed: nothing about the node can make it
            # resemble a failing one, so its features (and shape inference) are not needed.
            ops[key] = _op_state(ops.get(key), "supported")
            continue
        feats = node_features(model, node)
        sig = node_signature(model, node, key, feats)
        signatures.add(sig)
        const = tuple(k for k, name in enumerate(node.inputs) if k and name in model.constants)
        j = cache.get(sig + repr(const))
        if j is None:
            j = cache[sig + repr(const)] = _unmeasured_constants(judge_node(ev, feats), node,
                                                                 const)
        if j.status == SUPPORTED:
            ops[key] = _op_state(ops.get(key), "supported" if ev.status == "supported"
                                 else "conditional")
        else:
            reasons.append(Reason(j.message, j.kind, label, key, j.status, Evidence.TABLE))
            ops[key] = _op_state(ops.get(key), "unsupported" if j.status == UNSUPPORTED
                                 else "unknown")
    for case, sigs in table.multi_failing:
        if sigs <= signatures:
            reasons.append(Reason(f"contains every node (ops, attributes, ranks, dtypes) of the "
                                  f"failing multi-node conformance case {case.ref()}",
                                  "case", verdict=UNKNOWN, evidence=Evidence.TABLE))
    return reasons


def merge_query(verdict: Verdict, model: ModelInfo, unsupported: set[str] | None) -> None:
    """Merge the engine's own answer (``Backend.query``): the nodes it says it cannot run are
    decisive reasons; when it accepts every node, that is said (it is not evidence of right
    numbers: engines accept nodes they then compute wrongly)."""
    if unsupported is None or verdict.status == UNAVAILABLE:
        return
    by_name = {n.name: n for n in model.nodes if n.name}
    if unsupported:
        for name in sorted(unsupported):
            node = by_name.get(name)
            op = op_key(node.op_type, node.domain) if node else None
            verdict.reasons.append(Reason("the engine itself reports it cannot run this node",
                                          "engine", name, op, evidence=Evidence.ENGINE))
            if op:
                verdict.ops[op] = "unsupported"
        verdict.engine = f"refuses {len(unsupported)} node(s)"
    else:
        verdict.engine = "accepts every node"
    settle(verdict)


def refused_by_engine(verdict: Verdict, message: str) -> None:
    """The engine raised opening this model (in a child): a decisive answer of its own."""
    verdict.engine = f"refuses the model: {message}"
    verdict.reasons.append(Reason(f"the engine refused the model: {message}", "engine",
                                  evidence=Evidence.ENGINE))
    settle(verdict)


def settle(verdict: Verdict, *, reference: bool = False) -> None:
    """Set ``status`` and ``decided_by`` from the evidence gathered so far.

    A measured run decides first (right numbers: SUPPORTED; wrong, crashed, hung: UNSUPPORTED),
    then the engine's refusal, then a backend rule. The reference is judged by its engine
    alone: when the engine accepts the model it is SUPPORTED. Otherwise the status is UNKNOWN,
    whatever the table predicts.
    """
    if verdict.status == UNAVAILABLE:
        return
    decisive = verdict.decisive
    measured = verdict.measured or {}
    for evidence in (Evidence.MEASURED, Evidence.ENGINE, Evidence.RULE):
        if evidence == Evidence.MEASURED and (measured.get("verified") or measured.get(
                "status") in (CaseStatus.PASS, CaseStatus.DYNAMIC_FAIL)):
            verdict.status, verdict.decided_by = SUPPORTED, Evidence.MEASURED
            return
        if any(r.evidence == evidence for r in decisive):
            verdict.status, verdict.decided_by = UNSUPPORTED, evidence
            return
    if reference and verdict.engine is not None and verdict.engine.startswith("accepts"):
        verdict.status, verdict.decided_by = SUPPORTED, Evidence.ENGINE
        return
    verdict.status, verdict.decided_by = UNKNOWN, None
