"""The capability matrix: verdicts per (model, backend) with reasons, from measured evidence.

Evidence is the op-support table of a backend (``unirt/optables/<backend>-<version>.json``),
written by ``unirt probe-ops`` from the ONNX node conformance suite run through unirt itself. A
table keeps, for every case, its outcome and the *features* of the node it exercised: attribute
values (schema defaults filled in), and input/output ranks and dtypes. A model's node is judged
on its own features, never on its op name alone.

The matching rule (explainable on purpose, see :func:`judge_node`):

1. op never seen by the table -> UNKNOWN;
2. every case of the op passes -> SUPPORTED; none passes -> UNSUPPORTED (with the first error);
3. otherwise the op is *conditional*. A feature value that occurs in failing cases and in no passing
   case is a *bad value* (``MaxPool`` with a 3-element ``kernel_shape``, ``Resize`` with
   ``mode='cubic'``); a node with a bad value is UNSUPPORTED, naming it. Failing cases that no bad
   value explains are compared with the node by distance (how many features differ): a node as close
   or closer to such a failing case than to any passing case is not SUPPORTED (UNSUPPORTED when
   strictly closer or identical, UNKNOWN on a tie). Unknown node features (shape inference could not
   tell) count as matching a failing case and as differing from a passing one, so ignorance never
   turns into SUPPORTED.

Model-wide facts come from the table too (an opset or IR version the engine refused when the
conformance cases were run as stamped) and from the backend's own ``_rules_impl`` (ncnn: batch 1,
float32 inputs...). ``Backend.query`` answers, where an engine has them, are merged by
:func:`capabilities`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UnirtError, first_line

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Backend
    from .model import ModelInfo, ModelSource, NodeInfo
    from .plugins import Registry

logger = logging.getLogger("unirt")

SUPPORTED = "SUPPORTED"
UNSUPPORTED = "UNSUPPORTED"
UNKNOWN = "UNKNOWN"
UNAVAILABLE = "UNAVAILABLE"


TABLE_DIR = Path(__file__).parent / "optables"
TABLE_FORMAT = 1

#: Case outcomes in a table. Only "pass" is evidence of support.
PASS = "pass"
CASE_STATUSES = ("pass", "load_fail", "run_fail", "mismatch", "crash", "timeout")

_STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")

ABSENT = "-"
UNKNOWN_VALUE = "?"


# -- features: what about a node can decide support -------------------------------------------
def op_key(op_type: str, domain: str) -> str:
    """``"Conv"`` for the standard domain, ``"ai.onnx.ml::TreeEnsemble"`` otherwise."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"


@functools.lru_cache(maxsize=4096)
def _schema_info(op_type: str, domain: str, opset: int) -> tuple[dict[str, Any], int, int] | None:
    """(attribute defaults, index of a variadic formal input or -1, since_version)."""
    try:
        from onnx import defs, helper

        schema = defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except Exception:
        return None
    defaults: dict[str, Any] = {}
    for name, attr in schema.attributes.items():
        if attr.default_value is not None and attr.default_value.type:
            try:
                value = helper.get_attribute_value(attr.default_value)
            except Exception:
                continue
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            elif isinstance(value, list):
                value = tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x
                              for x in value)
            defaults[name] = value
    variadic = -1
    for i, formal in enumerate(schema.inputs):
        if formal.option == formal.option.Variadic:
            variadic = i
            break
    return defaults, variadic, int(schema.since_version)


def _attr_value(value: Any, default: Any = None, has_default: bool = False) -> str:
    """Coarse on purpose: an int/str/enum value decides support, a list's length (1D/2D/3D) does,
    a float's exact value almost never does (only whether it was changed from the default)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if has_default and isinstance(default, float) and abs(value - default) <= 1e-6 * max(
                1.0, abs(default)):
            return "default"
        return "set"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        if value and all(isinstance(x, str) for x in value):
            return ",".join(value)
        return f"len{len(value)}"
    return str(value)


#: Features per model and node, computed once and shared by every backend's check (a model is
#: checked against each candidate while routing: that must cost milliseconds, not a recompute).
_FEATURES: weakref.WeakKeyDictionary[ModelInfo, dict[int, dict[str, str]]] = (
    weakref.WeakKeyDictionary())
_FEATURES_LOCK = threading.Lock()


def node_features(model: ModelInfo, node: NodeInfo) -> dict[str, str]:
    """The features a node is judged on: ``@attr`` -> value, ``iK.t``/``iK.r`` -> input dtype and
    rank, ``oK.t``/``oK.r`` -> output dtype and rank. Missing attributes get their schema default;
    an omitted optional input is ``"-"``; what shape inference could not tell is ``"?"``.
    Memoised per model (the result must not be modified)."""
    with _FEATURES_LOCK:
        per_model = _FEATURES.setdefault(model, {})
        known = per_model.get(id(node))
    if known is not None:
        return known
    feats = _compute_features(model, node)
    with _FEATURES_LOCK:
        per_model[id(node)] = feats
    return feats


_SIGNATURES: weakref.WeakKeyDictionary[ModelInfo, dict[int, str]] = weakref.WeakKeyDictionary()


def _node_signature(model: ModelInfo, node: NodeInfo, key: str, feats: dict[str, str]) -> str:
    """``_signature`` memoised per model, like the features it is made of."""
    with _FEATURES_LOCK:
        per_model = _SIGNATURES.setdefault(model, {})
        sig = per_model.get(id(node))
    if sig is None:
        sig = _signature(key, feats)
        with _FEATURES_LOCK:
            per_model[id(node)] = sig
    return sig


def _compute_features(model: ModelInfo, node: NodeInfo) -> dict[str, str]:
    domain = "" if node.domain == "ai.onnx" else node.domain
    opset = model.opsets.get(domain, model.opsets.get("ai.onnx", 0) if domain == "" else 0)
    info = _schema_info(node.op_type, domain, int(opset) or 1)
    defaults, variadic = (info[0], info[1]) if info else ({}, -1)
    feats: dict[str, str] = {}
    for name, value in node.attributes.items():
        feats["@" + name] = _attr_value(value, defaults.get(name), name in defaults)
    for name, value in defaults.items():
        if name not in node.attributes:
            feats["@" + name] = _attr_value(value, value, True)
    ins, outs = model.node_types(node)
    for prefix, facts in (("i", ins), ("o", outs)):
        for k, fact in enumerate(facts):
            if prefix == "i" and variadic >= 0 and k > variadic:
                break  # variadic inputs: the first stands for all (Concat of 2 or of 9)
            if fact is None:
                feats[f"{prefix}{k}.t"] = ABSENT
                continue
            dtype = fact.dtype or UNKNOWN_VALUE
            if fact.kind in ("sequence", "optional", "map"):
                dtype = f"{fact.kind}:{dtype}"
            feats[f"{prefix}{k}.t"] = dtype
            feats[f"{prefix}{k}.r"] = UNKNOWN_VALUE if fact.rank is None else str(fact.rank)
    return feats


def schema_since(model: ModelInfo, node: NodeInfo) -> int | None:
    """The since_version of the schema this node uses under the model's opset, if ONNX knows it."""
    domain = "" if node.domain == "ai.onnx" else node.domain
    info = _schema_info(node.op_type, domain, int(model.opsets.get(domain, 0) or 1))
    return info[2] if info else None


def describe_feature(key: str, value: str) -> str:
    """``@mode``/``cubic`` -> ``attribute mode='cubic'``; ``i0.r``/``5`` -> ``input 0 rank 5``."""
    if key.startswith("@"):
        return f"attribute {key[1:]}={value!r}"
    m = re.fullmatch(r"([io])(\d+)\.([tr])", key)
    if not m:
        return f"{key}={value}"
    side = "input" if m.group(1) == "i" else "output"
    if value == ABSENT:
        return f"{side} {m.group(2)} omitted"
    what = "dtype" if m.group(3) == "t" else "rank"
    return f"{side} {m.group(2)} {what} {value}"


def feature_kind(key: str) -> str:
    """The reason kind a feature maps to: ``attribute``, ``dtype``, ``rank`` or ``input``."""
    if key.startswith("@"):
        return "attribute"
    return {"t": "dtype", "r": "rank"}.get(key[-1:], "input")


# -- verdicts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reason:
    """One reason a backend cannot (UNSUPPORTED) or may not (UNKNOWN) run a model.

    ``kind``: ``op_unknown``, ``attribute``, ``rank``, ``dtype``, ``input``, ``case`` (resembles a
    failing conformance case), ``all_fail`` (no case of the op passes), ``unseen`` (op never in the
    table), ``no_table``, ``opset``, ``ir``, ``domain``, ``dynamic``, ``batch``, ``engine`` (the
    engine's own query), ``unavailable`` or a backend rule's own word.
    """

    message: str
    kind: str = "rule"
    node: str | None = None
    op: str | None = None
    verdict: str = UNSUPPORTED

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "kind": self.kind, "node": self.node, "op": self.op,
                "message": self.message}

    def __str__(self) -> str:
        where = ""
        if self.node is not None or self.op is not None:
            where = f"node {self.node!r} ({self.op}): " if self.node else f"{self.op}: "
        return where + self.message


@dataclass
class Verdict:
    """Whether ``backend`` can run a model: SUPPORTED, UNSUPPORTED or UNKNOWN (UNAVAILABLE when
    the backend is not installed), with every reason, and how each of the model's ops fared."""

    backend: str
    status: str
    reasons: list[Reason] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engine_version: str | None = None
    table: str | None = None
    #: op key -> "supported" | "conditional" | "unsupported" | "unknown" for this model's nodes.
    ops: dict[str, str] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        return self.status == SUPPORTED

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status,
                "engine_version": self.engine_version, "table": self.table,
                "reasons": [r.as_dict() for r in self.reasons], "notes": list(self.notes),
                "ops": dict(self.ops)}

    def summary(self, most: int = 3) -> str:
        """The reasons on one line (the first ``most``), as the route shows them."""
        shown = [str(r) for r in self.reasons if r.verdict == self.status][:most] or \
            [str(r) for r in self.reasons][:most]
        more = len(self.reasons) - len(shown)
        return "; ".join(shown) + (f"; and {more} more (unirt capabilities)" if more > 0 else "")

    def __str__(self) -> str:
        lines = [f"{self.backend}: {self.status}"]
        lines += [f"  - {r}" for r in self.reasons]
        lines += [f"  ({n})" for n in self.notes]
        return "\n".join(lines)


def combine(reasons: Iterable[Reason]) -> str:
    """Any UNSUPPORTED reason makes the model UNSUPPORTED; else any UNKNOWN makes it UNKNOWN."""
    verdicts = {r.verdict for r in reasons}
    if UNSUPPORTED in verdicts:
        return UNSUPPORTED
    if UNKNOWN in verdicts:
        return UNKNOWN
    return SUPPORTED


# -- op-support tables ------------------------------------------------------------------------
def _missing(d: dict[str, str], k: str) -> str:
    return d.get(k, ABSENT)


@dataclass
class _Case:
    name: str
    status: str
    error: str | None
    feats: dict[str, str]


@dataclass
class OpEvidence:
    """Every conformance case charged to one op, split into passing and failing."""

    op: str
    passing: list[_Case] = field(default_factory=list)
    failing: list[_Case] = field(default_factory=list)

    @functools.cached_property
    def keys(self) -> frozenset[str]:
        """Every feature any case of the op has (a case without one has it as absent)."""
        keys: set[str] = set()
        for c in (*self.passing, *self.failing):
            keys.update(c.feats)
        return frozenset(keys)

    @functools.cached_property
    def bad_values(self) -> dict[tuple[str, str], list[_Case]]:
        """(feature, value) pairs seen in failing cases and in no passing case."""
        good: set[tuple[str, str]] = set()
        keys = self.keys
        for c in self.passing:
            good.update((k, _missing(c.feats, k)) for k in keys)
        bad: dict[tuple[str, str], list[_Case]] = {}
        for c in self.failing:
            for k in keys:
                v = _missing(c.feats, k)
                if v != UNKNOWN_VALUE and (k, v) not in good:
                    bad.setdefault((k, v), []).append(c)
        return bad

    @functools.cached_property
    def unexplained(self) -> list[_Case]:
        """Failing cases that no bad value explains: failures of a combination, or of values."""
        explained = {id(c) for cases in self.bad_values.values() for c in cases}
        return [c for c in self.failing if id(c) not in explained]

    @property
    def status(self) -> str:
        if not self.failing:
            return "supported"
        if not self.passing:
            return "unsupported"
        return "conditional"


def _distance(node: dict[str, str], case: dict[str, str], unknown_matches: bool) -> tuple[
        int, list[str]]:
    diff = []
    for k in set(node) | set(case):
        nv, cv = _missing(node, k), _missing(case, k)
        if UNKNOWN_VALUE in (nv, cv):
            if not unknown_matches:
                diff.append(k)
        elif nv != cv:
            diff.append(k)
    return len(diff), sorted(diff)


@dataclass
class Judgement:
    """How one node fares against an op's evidence."""

    status: str  # SUPPORTED / UNSUPPORTED / UNKNOWN
    kind: str
    message: str


def _case_ref(c: _Case) -> str:
    return f"{c.name} ({c.status}: {c.error})" if c.error else f"{c.name} ({c.status})"


def judge_node(ev: OpEvidence, feats: dict[str, str]) -> Judgement:
    """The matching rule of the module docstring, for one node's features."""
    if not ev.failing:
        return Judgement(SUPPORTED, "table", f"all {len(ev.passing)} cases pass")
    if not ev.passing:
        return Judgement(UNSUPPORTED, "all_fail",
                         f"no conformance case of {ev.op} passes on this engine "
                         f"({len(ev.failing)} fail; first: {_case_ref(ev.failing[0])})")
    bad = [(k, _missing(feats, k)) for k in sorted(ev.keys | set(feats))
           if (k, _missing(feats, k)) in ev.bad_values]
    if bad:
        k, v = bad[0]
        cases = ev.bad_values[(k, v)]
        others = list(dict.fromkeys(describe_feature(*b) for b in bad[1:]))
        others = [d for d in others if d != describe_feature(k, v)]
        more = "; also " + ", ".join(others) if others else ""
        return Judgement(UNSUPPORTED, "input" if v == ABSENT else feature_kind(k),
                         f"{describe_feature(k, v)}: fails in {len(cases)} conformance case(s) "
                         f"and passes in none ({_case_ref(cases[0])}){more}")
    if ev.unexplained:
        d_fail, diff_fail, near_fail = min(
            ((*_distance(feats, c.feats, True), c) for c in ev.unexplained),
            key=lambda t: t[0])
        d_pass, _diff_pass, near_pass = min(
            ((*_distance(feats, c.feats, False), c) for c in ev.passing), key=lambda t: t[0])
        if d_fail == 0:
            return Judgement(UNSUPPORTED, "case",
                             f"same attributes, ranks and dtypes as failing case "
                             f"{_case_ref(near_fail)}")
        differs = ", ".join(describe_feature(k, _missing(feats, k)) for k in diff_fail)
        if d_fail < d_pass:
            return Judgement(UNSUPPORTED, "case",
                             f"closer to failing case {_case_ref(near_fail)} (differs only in "
                             f"{differs}) than to any passing case")
        if d_fail == d_pass:
            return Judgement(UNKNOWN, "case",
                             f"as close to failing case {_case_ref(near_fail)} as to passing case "
                             f"{near_pass.name}")
    return Judgement(SUPPORTED, "table",
                     f"conditional: {len(ev.failing)} of {len(ev.failing) + len(ev.passing)} "
                     "cases fail, none resembles this node")


def _unmeasured_constants(j: Judgement, node: NodeInfo, const: tuple[int, ...]) -> Judgement:
    """A conformance case feeds every input of its node at run time; a real model's weights are
    constants, and engines that fold or pre-pack weights (ncnn, OpenCV) run such a node where
    they fail the case. So a failure judged from cases alone (not from a value only failing
    cases have) says nothing about a node with constant inputs: UNKNOWN, to be measured."""
    if j.status != UNSUPPORTED or not const or j.kind not in ("all_fail", "case"):
        return j
    which = ", ".join(f"input {k} ({node.inputs[k]})" for k in const)
    return Judgement(UNKNOWN, "constant_inputs",
                     f"{j.message}; but every conformance case feeds {which} at run time, and "
                     "here it is a constant (weights): not measured")


def _signature(key: str, feats: dict[str, str]) -> str:
    return key + json.dumps(feats, sort_keys=True, separators=(",", ":"))


class OpTable:
    """A loaded op-support table, indexed by op."""

    def __init__(self, data: dict[str, Any], path: Path | None = None,
                 exclude: Iterable[str] = ()) -> None:
        if data.get("format") != TABLE_FORMAT:
            raise UnirtError(f"op-support table {path}: unknown format {data.get('format')!r}")
        self.data = data
        self.path = path
        self.backend: str = data["backend"]
        self.version: str = data["version"]
        self.limits: dict[str, Any] = data.get("limits", {})
        self.ops: dict[str, OpEvidence] = {}
        deferred = []
        interned = data.get("features", [])
        skip = set(exclude)  # leave-one-out estimates of the matrix's honesty
        for c in data["cases"]:
            if c["n"] in skip:
                continue
            if c.get("w"):
                continue  # refused by a backend-wide rule, which check() applies itself
            targets = [interned[i] for i in c.get("f") or []]
            if c.get("m") and c["s"] != PASS:
                deferred.append(c)
                continue
            for key, feats in targets:
                ev = self.ops.setdefault(key, OpEvidence(key))
                case = _Case(c["n"], c["s"], c.get("e"), feats)
                (ev.passing if c["s"] == PASS else ev.failing).append(case)
        # Ops the engine refused at a case's own opset but ran once re-stamped lower (a kernel
        # registered only up to some opset): judged by the model's opset, as stamped.
        refused: dict[str, int] = {}
        loaded: dict[str, int] = {}
        for c in data["cases"]:
            if c["n"] in skip:
                continue
            keys = {interned[i][0] for i in c.get("f") or []}
            for key in keys:
                if c.get("r") == "opset":
                    refused[key] = min(refused.get(key, c.get("o", 0)), c.get("o", 0))
                elif not c.get("r") and c["s"] != "load_fail":
                    loaded[key] = max(loaded.get(key, 0), c.get("o", 0))
        self.op_refused_opset: dict[str, int] = {
            k: v for k, v in refused.items() if v > loaded.get(k, 0)}
        # A failing multi-node case is charged only to its ops that pass nowhere else: a failure
        # of an expanded function says nothing about the Add that passes in fifty other cases.
        #: Failing multi-node cases with the signatures of their nodes: a model containing every
        #: one of those nodes resembles the failing case as a whole (dynamic-shape chains of an
        #: expanded function fail together while each op passes alone).
        self.multi_failing: list[tuple[_Case, frozenset[str]]] = [
            (_Case(c["n"], c["s"], c.get("e"), {}),
             frozenset(_signature(*interned[i]) for i in c.get("f") or []))
            for c in deferred if c.get("f")]
        #: Ops that appear in some failing multi-node case: their nodes need a signature even
        #: when the op alone always passes.
        self.multi_ops: frozenset[str] = frozenset(
            interned[i][0] for c in deferred for i in c.get("f") or [])
        for c in deferred:
            for key, feats in (interned[i] for i in c.get("f") or []):
                ev = self.ops.get(key)
                if ev is None or not ev.passing:
                    ev = self.ops.setdefault(key, OpEvidence(key))
                    ev.failing.append(_Case(c["n"], c["s"], c.get("e"), feats))

    @property
    def name(self) -> str:
        return self.path.name if self.path is not None else f"{self.backend}-{self.version}"


def version_slug(version: str) -> str:
    """A version as a table's file name spells it: ``"1.0 (pnnx 3)"`` -> ``"1.0_pnnx_3"``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", version).strip("_") or "unknown"


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:4])


def table_dirs() -> list[Path]:
    """Where tables are looked for: ``$UNIRT_OPTABLES`` (os.pathsep-separated) first, then the
    tables shipped in the package."""
    import os

    extra = [Path(p) for p in os.environ.get("UNIRT_OPTABLES", "").split(os.pathsep) if p]
    return [*extra, TABLE_DIR]


def available_tables(backend: str) -> dict[str, Path]:
    """engine version -> table file for ``backend`` (first directory wins)."""
    found: dict[str, Path] = {}
    for d in table_dirs():
        if not d.is_dir():
            continue
        for p in sorted(d.glob(f"{backend}-*.json")):
            version = p.stem[len(backend) + 1:]
            if version and version[0].isdigit() and version not in found:
                found[version] = p
    return found


@functools.lru_cache(maxsize=32)
def _load_table(path: Path, mtime: float) -> OpTable:
    try:
        data = json.loads(path.read_text())
    except Exception as exc:
        raise UnirtError(f"op-support table {path} is unreadable: {first_line(exc)}") from exc
    return OpTable(data, path)


def find_table(backend: str, version: str | None) -> tuple[OpTable | None, str | None]:
    """The table for ``backend`` at ``version``: exact, else the nearest older one, else the
    nearest newer; with a note saying so when it is not exact."""
    tables = available_tables(backend)
    if not tables:
        return None, None
    if version is not None and version_slug(version) in tables:
        p = tables[version_slug(version)]
        return _load_table(p, p.stat().st_mtime), None
    want = _version_key(version or "0")
    ordered = sorted(tables, key=_version_key)
    older = [v for v in ordered if _version_key(v) <= want]
    chosen = older[-1] if older else ordered[0]
    rel = "older" if older else "newer"
    p = tables[chosen]
    note = (f"no op-support table for {backend} {version}; using the nearest {rel} one "
            f"({chosen})")
    return _load_table(p, p.stat().st_mtime), note


def summarize_table(table: dict[str, Any] | OpTable) -> dict[str, Any]:
    """Pass rate and per-op status of a table, for ``probe-ops`` output and reports."""
    t = table if isinstance(table, OpTable) else OpTable(table)
    s = t.data["summary"]
    ops: dict[str, Any] = {}
    for key in sorted(t.ops):
        ev = t.ops[key]
        ops[key] = {"cases": len(ev.passing) + len(ev.failing), "pass": len(ev.passing),
                    "status": ev.status,
                    "first_error": _case_ref(ev.failing[0]) if ev.failing else None}
    return {"backend": t.backend, "version": t.version, "summary": s,
            "pass_rate": s["pass"] / s["total"] if s.get("total") else 0.0,
            "limits": t.limits, "ops": ops}


# -- checking one backend ------------------------------------------------------------------------
def _op_state(current: str | None, new: str) -> str:
    order = ["supported", "conditional", "unknown", "unsupported"]
    if current is None:
        return new
    return max(current, new, key=order.index)


def check_backend(backend: Backend, model: ModelInfo, table: OpTable | None = None) -> Verdict:
    """What ``Backend.check`` does: the table for the installed engine, the backend's rules."""
    avail = backend.available()
    verdict = Verdict(backend.name, UNKNOWN, engine_version=avail.version)
    if not avail.available:
        verdict.status = UNAVAILABLE
        verdict.reasons.append(Reason(f"not available: {avail.reason}", "unavailable"))
        return verdict
    if table is None:
        table, note = find_table(backend.name, avail.version)
        if note:
            verdict.notes.append(note)
    reasons: list[Reason] = []
    if table is None:
        verdict.notes.append(f"no op-support table for {backend.name}: generate one with "
                             f"`unirt probe-ops --backend {backend.name}`")
    else:
        verdict.table = table.name
        try:
            host = set(backend._host_outputs_impl(model))
        except Exception:  # a broken hook must not hide the table's reasons
            logger.warning("host outputs of %s failed on %s", backend.name, model.name,
                           exc_info=True)
            host = set()
        reasons += _table_reasons(backend, model, table, verdict.ops, host)
    try:
        rules = list(backend._rules_impl(model))
    except Exception as exc:  # a broken rule must not hide the other reasons
        logger.warning("rules of %s failed on %s", backend.name, model.name, exc_info=True)
        rules = [Reason(f"backend rules failed: {type(exc).__name__}: {first_line(exc)}",
                        "rule", verdict=UNKNOWN)]
    reasons += rules
    if table is None:
        reasons.append(Reason("no op-support table for this backend", "no_table",
                              verdict=UNKNOWN))
        for n in model.nodes:
            verdict.ops.setdefault(op_key(n.op_type, n.domain), "unknown")
    verdict.reasons = reasons
    verdict.status = combine(reasons)
    return verdict


def _table_reasons(backend: Backend, model: ModelInfo, table: OpTable, ops: dict[str, str],
                   host: set[str] | frozenset[str] = frozenset()) -> list[Reason]:
    reasons: list[Reason] = []
    opset = model.opsets.get("", model.opsets.get("ai.onnx"))
    refused = table.limits.get("refused_opset")
    if refused is not None and opset is not None and opset >= refused:
        reasons.append(Reason(f"opset {opset} is too new: the engine refused conformance cases "
                              f"stamped with opset {refused} and above", "opset"))
    refused_ir = table.limits.get("refused_ir")
    if refused_ir is not None and model.ir_version >= refused_ir:
        reasons.append(Reason(f"IR version {model.ir_version} is too new: the engine refused "
                              f"conformance cases with IR {refused_ir} and above", "ir"))
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
        if domain not in _STANDARD_DOMAINS and domain not in known:
            reasons.append(Reason(f"custom domain {domain!r}: the engine implements no ops of it",
                                  "domain", label, key))
            ops[key] = _op_state(ops.get(key), "unsupported")
            continue
        ev = table.ops.get(key)
        if ev is None:
            if domain in _STANDARD_DOMAINS and schema_since(model, node) is None:
                reasons.append(Reason(f"{node.op_type} is not an ONNX operator at opset "
                                      f"{model.opsets.get(domain)}", "op_unknown", label, key))
                ops[key] = _op_state(ops.get(key), "unsupported")
            else:
                reasons.append(Reason("op never seen in this engine's conformance table",
                                      "unseen", label, key, UNKNOWN))
                ops[key] = _op_state(ops.get(key), "unknown")
            continue
        too_new = table.op_refused_opset.get(key)
        if too_new is not None and model.opsets.get(domain, 0) >= too_new:
            reasons.append(Reason(f"the engine refused {node.op_type} in conformance cases stamped "
                                  f"with opset {too_new} or newer (model: opset "
                                  f"{model.opsets.get(domain)})", "opset", label, key))
            ops[key] = _op_state(ops.get(key), "unsupported")
            continue
        if ev.status == "supported" and key not in table.multi_ops:
            # Every conformance case of this op passed: nothing about the node can make it
            # resemble a failing one, so its features (and shape inference) are not needed.
            ops[key] = _op_state(ops.get(key), "supported")
            continue
        feats = node_features(model, node)
        sig = _node_signature(model, node, key, feats)
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
            reasons.append(Reason(j.message, j.kind, label, key, j.status))
            ops[key] = _op_state(ops.get(key), "unsupported" if j.status == UNSUPPORTED
                                 else "unknown")
    for case, sigs in table.multi_failing:
        if sigs <= signatures:
            reasons.append(Reason(f"contains every node (ops, attributes, ranks, dtypes) of the "
                                  f"failing multi-node conformance case {_case_ref(case)}",
                                  "case"))
    return reasons


def merge_query(verdict: Verdict, model: ModelInfo, unsupported: set[str] | None) -> None:
    """Merge an engine's own answer (``Backend.query``): nodes it rejects become UNSUPPORTED;
    when it accepts every node, table-UNKNOWN ops it accepts are no longer unknown. It never
    overrides evidence of failure (engines accept nodes they then compute wrongly)."""
    if unsupported is None or verdict.status == UNAVAILABLE:
        return
    by_name = {n.name: n for n in model.nodes if n.name}
    if unsupported:
        for name in sorted(unsupported):
            node = by_name.get(name)
            op = op_key(node.op_type, node.domain) if node else None
            verdict.reasons.append(Reason("the engine itself reports it cannot run this node",
                                          "engine", name, op))
            if op:
                verdict.ops[op] = "unsupported"
        verdict.notes.append(f"engine query: {len(unsupported)} node(s) unsupported")
    else:
        kept = [r for r in verdict.reasons if not (r.verdict == UNKNOWN and r.kind in
                                                   ("unseen", "no_table"))]
        if len(kept) != len(verdict.reasons):
            verdict.notes.append("engine query accepts every node: ops missing from the table "
                                 "are taken as supported on the engine's word")
            for op, state in list(verdict.ops.items()):
                if state == "unknown" and not any(r.op == op for r in kept):
                    verdict.ops[op] = "supported"
        verdict.reasons = kept
    verdict.status = combine(verdict.reasons)


# -- the report: every backend, and optionally measured --------------------------------------

@dataclass
class CapabilityReport:
    """What ``unirt.capabilities`` returns: the model's summary, a verdict per backend, the op x
    backend matrix of the model's own ops, and (with ``probe=True``) what was measured."""

    model: dict[str, Any]
    verdicts: dict[str, Verdict]
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def op_matrix(self) -> dict[str, dict[str, str]]:
        """op -> backend -> ``supported`` / ``conditional`` / ``unsupported`` / ``unknown``
        (``unavailable`` for a backend that is not installed)."""
        ops = list(self.model["op_counts"])
        out: dict[str, dict[str, str]] = {}
        for op in ops:
            out[op] = {}
            for name, v in self.verdicts.items():
                out[op][name] = ("unavailable" if v.status == UNAVAILABLE
                                 else v.ops.get(op, "unknown"))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model,
                "verdicts": {k: v.as_dict() for k, v in self.verdicts.items()},
                "op_matrix": self.op_matrix, "probes": self.probes}

    def __str__(self) -> str:
        lines = [f"{self.model['name']}: " + ", ".join(
            f"{op} x{n}" for op, n in self.model["op_counts"].items())]
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
    shapes: dict[str, Sequence[int]] | None = None,
    timeout: float = 120.0,
    registry: Registry | None = None,
) -> CapabilityReport:
    """The capability matrix for one model: for every registered backend (or ``backends``), a
    verdict with its reasons; with ``probe=True`` also the measured outcome of opening and running
    the model in a child process, compared with the reference and timed."""
    from .model import read_model, validate_graph
    from .plugins import get_registry

    registry = registry or get_registry()
    info = read_model(model)
    validate_graph(info)
    names = list(backends) if backends else list(registry.backends)
    verdicts: dict[str, Verdict] = {}
    for name in names:
        be = registry.backend(name)
        v = be.check(info)
        if query and v.status != UNAVAILABLE:
            try:
                merge_query(v, info, be.query(info))
            except UnirtError as exc:
                v.notes.append(f"engine query failed: {exc}")
        verdicts[name] = v
    report = CapabilityReport(model_summary(info), verdicts)
    if probe:
        runnable = [n for n in names if verdicts[n].status != UNAVAILABLE]
        report.probes = probe_model(info, runnable, shapes=shapes, timeout=timeout)
    return report


# -- measuring: the shared probe (unirt.probe), summarised for the matrix -------------------------
def probe_shape_sets(model: ModelInfo, shapes: dict[str, Sequence[int]] | None = None
                     ) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    """(label, shapes) a ``--probe`` runs: see :func:`unirt.probe.shape_sets`."""
    from .probe import shape_sets

    return shape_sets(model.inputs, shapes)


def probe_model(model: ModelInfo, backends: Sequence[str], *,
                shapes: dict[str, Sequence[int]] | None = None, timeout: float = 120.0,
                repeats: int = 10, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Open and run ``model`` on each backend in a child process, at the base shapes and at
    another size of each dynamic dim; compare with the reference; time it. One implementation
    with ``unirt compare`` and verification (:func:`unirt.probe.probe`)."""
    from .inputs import make_inputs
    from .probe import probe, reference_outputs

    sets = probe_shape_sets(model, shapes)
    labels = [label for label, _ in sets]
    feed_sets = [make_inputs(model.inputs, s, seed) for _, s in sets]
    _, reference = reference_outputs(model.source(), feed_sets, timeout=timeout, labels=labels)
    return {name: probe_summary(probe(model, name, feed_sets, "exact", timeout=timeout,
                                      reference=reference, runs=repeats, labels=labels))
            for name in backends}


def probe_summary(result: Any) -> dict[str, Any]:
    """A :class:`~unirt.probe.ProbeResult` as the matrix shows it: ``status`` is ``pass``,
    ``mismatch``, ``load_fail``, ``run_fail`` (at the base shapes), ``dynamic_fail`` (declared
    dynamic, fails at another size), ``crash``, ``timeout`` or ``unverified`` (no reference)."""
    from .probe import CRASHED, ERROR, FAIL, NO_REFERENCE, TIMEOUT

    out: dict[str, Any] = {"status": "pass", "detail": None, "precision": result.precision,
                           "median_ms": None if result.run_s is None else result.run_s * 1e3,
                           "max_abs": max((o.max_abs for o in result.outputs), default=None),
                           "max_rel": max((o.max_rel for o in result.outputs), default=None),
                           "shapes": result.shapes, "limited": result.limited}
    if result.status == CRASHED:
        out.update(status="crash", detail=result.reason)
    elif result.status == TIMEOUT:
        out.update(status="timeout", detail=result.reason)
    elif result.status == ERROR and not result.opened:
        out.update(status="load_fail", detail=result.reason)
    elif result.status == FAIL:
        out.update(status="mismatch", detail=result.reason)
    elif result.status == NO_REFERENCE:
        out.update(status="unverified", detail=result.reason)
    elif result.limited:
        base = result.shapes[0] if result.shapes else None
        if base in result.limited or result.status == ERROR:
            out.update(status="run_fail", detail="; ".join(
                f"{k}: {v}" for k, v in result.limited.items()))
        else:
            out.update(status="dynamic_fail", detail="declared dynamic, fails at " + ", ".join(
                f"{k}: {v}" for k, v in result.limited.items()))
    return out
