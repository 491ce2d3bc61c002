"""The op-support probe: the ONNX node conformance suite run against one backend through unirt.

``onnx.backend.test.case.node.collect_testcases(None)`` builds ~1,900 single-node (and a few
multi-node, "expanded") models with inputs, expected outputs and tolerances. Each is opened with
``unirt.load(model, backend=NAME)`` and run through the ``Session`` users get, so a table measures
what users get, not what an engine's own API could do.

Engines segfault or abort on some cases, so the cases run in one
:class:`~unirt.process.isolation.Worker`
child that imports the engine once; a crash or timeout records that case and a fresh child takes
over. A case whose IR version or opset is newer than the engine accepts is tried again with the IR
lowered, then re-stamped at the lowest opset where every node keeps its schema: that changes no
semantics, and the table records which stamp the engine refused (a model-wide rule later).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.capability.features import node_features, op_key
from unirt.capability.table import (
    CASE_STATUSES,
    HARNESS,
    PASS,
    TABLE_DIR,
    TABLE_FORMAT,
    CaseStatus,
    version_slug,
)
from unirt.errors import ToolCrashError, UnirtError, first_line
from unirt.process import timeouts
from unirt.process.isolation import CRASHED, OK, TIMEOUT, Worker
from unirt.process.isolation import HARNESS as ISO_HARNESS
from unirt.store.files import write_atomic

if TYPE_CHECKING:  # pragma: no cover
    import onnx

logger = logging.getLogger("unirt")

#: Per-case time limit: generous, a hang is rare and a slow case is not a failure.
DEFAULT_TIMEOUT = timeouts.OP_CASE.seconds


@dataclass
class Case:
    """One conformance case: the model, its input/output data sets and declared tolerances."""

    name: str
    model: Any  # onnx.ModelProto
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float
    atol: float

    @property
    def ops(self) -> set[str]:
        return {n.op_type for n in self.model.graph.node}


def collect_cases(ops: Iterable[str] | None = None, names: Iterable[str] | None = None
                  ) -> list[Case]:
    """The node cases, optionally only those using one of ``ops`` or named in ``names``."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        raw = collect_testcases(None)
    wanted = set(ops) if ops else None
    named = set(names) if names else None
    out = []
    for c in raw:
        if c.model is None or not c.data_sets:
            continue
        case = Case(c.name, c.model, [(_arrays(i), _arrays(o)) for i, o in c.data_sets],
                    float(c.rtol), float(c.atol))
        if wanted is not None and not (case.ops & wanted):
            continue
        if named is not None and case.name not in named:
            continue
        out.append(case)
    return out


def _arrays(values: Iterable[Any]) -> list[Any]:
    # Cases for exotic element types (float8, int4, bfloat16) store TensorProtos, not arrays.
    from onnx import TensorProto, numpy_helper

    out = []
    for v in values:
        if isinstance(v, TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list):
            v = _arrays(v)
        out.append(v)
    return out


# -- re-stamping --------------------------------------------------------------------------------
def _ir_for_opset(opset: int) -> int:
    from onnx import helper

    best = None
    for row in helper.VERSION_TABLE:  # (release, ir, ai.onnx, ai.onnx.ml, training)
        if row[2] is not None and row[2] >= opset:
            best = row[1] if best is None else min(best, row[1])
    return best or helper.VERSION_TABLE[-1][1]


def _all_nodes(graph: Any) -> Iterable[Any]:
    from onnx import AttributeProto

    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _all_nodes(g)


def lowest_opset(model: onnx.ModelProto) -> int | None:
    """The lowest ai.onnx opset at which every node keeps the schema it has now (the largest
    since_version among its nodes); ``None`` when a node has no standard schema."""
    from onnx import defs

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current is None:
        return None
    lowest = 1
    for n in _all_nodes(model.graph):
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            lowest = max(lowest, defs.get_schema(n.op_type, current, "").since_version)
        except Exception:
            return None
    return lowest


def restamp(model: onnx.ModelProto, *, opset: bool = True) -> onnx.ModelProto | None:
    """A copy with the IR version lowered to the one released with its opset, and (``opset``)
    the ai.onnx opset lowered to :func:`lowest_opset`. ``None`` when nothing would change."""
    import onnx

    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current is None:
        return None
    target = current
    if opset:
        low = lowest_opset(model)
        if low is None or low >= current:
            return None
        target = low
    ir = min(model.ir_version, _ir_for_opset(target))
    if target == current and ir >= model.ir_version:
        return None
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.ir_version = ir
    for o in copy.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return copy


# -- running one case (in the worker child) ----------------------------------------------------
def _init_worker(backend_name: str) -> str:
    from unirt.plugin.registry import get_registry

    backend = get_registry().backend(backend_name)
    avail = backend.available()
    if not avail.available:
        raise UnirtError(f"{backend_name} is not available: {avail.reason}")
    return backend_name


def compare_outputs(expected: Sequence[Any], actual: Sequence[Any], rtol: float, atol: float,
                    names: Sequence[str] | None = None) -> str | None:
    """``None`` when ``actual`` matches ``expected`` within the case's tolerances (the ONNX
    backend test runner's rule), else one line saying where and by how much it differs."""
    import numpy as np

    if len(expected) != len(actual):
        return f"expected {len(expected)} outputs, got {len(actual)}"
    for i, (ref, out) in enumerate(zip(expected, actual)):
        label = f"output {names[i]!r}" if names else f"output {i}"
        if isinstance(ref, (list, tuple)):
            if not isinstance(out, (list, tuple)) or len(out) != len(ref):
                return f"{label}: expected a sequence of {len(ref)}, got {type(out).__name__}"
            err = compare_outputs(list(ref), list(out), rtol, atol)
            if err:
                return f"{label}: {err}"
            continue
        if ref is None:
            if out is not None and not (hasattr(out, "size") and out.size == 0):
                return f"{label}: expected no value (empty optional), got one"
            continue
        if out is None:
            return f"{label}: got no value"
        ref = np.asarray(ref)
        out = np.asarray(out)
        if out.shape != ref.shape:
            return f"{label}: shape {list(out.shape)} != expected {list(ref.shape)}"
        if ref.dtype == object or ref.dtype.kind in "USO":
            if not np.array_equal(out.astype(object), ref.astype(object)):
                return f"{label}: strings differ"
            continue
        if out.dtype != ref.dtype:
            return f"{label}: dtype {out.dtype} != expected {ref.dtype}"
        r = rtol
        if ref.dtype.kind not in "fciub":  # ml_dtypes (bfloat16, float8, int4)
            if ref.dtype.name == "bfloat16":
                r = max(rtol, 2 ** -6)
            ref, out = ref.astype(np.float32), out.astype(np.float32)
        if ref.dtype.kind == "b":
            ok = np.array_equal(ref, out)
        else:
            try:
                ok = bool(np.allclose(out, ref, rtol=r, atol=atol, equal_nan=True))
            except TypeError:
                ok = bool(np.array_equal(out, ref))
        if not ok:
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            worst = float(np.nanmax(diff)) if diff.size else 0.0
            return f"{label}: max abs error {worst:.3g} (rtol {r:g}, atol {atol:g})"
    return None


def open_unverified(source: Any, backend_name: str) -> Any:
    """``unirt.load(source, backend=NAME)`` without the capability check and the verification
    run: a probe is itself the measurement (the table must not decide what the table measures),
    and a verification child per case would double the cost."""
    from unirt.runtime.router import load

    return load(source, backend=backend_name, verify="never", check=False)


def run_case(backend_name: str, data: bytes, data_sets: list[tuple[list[Any], list[Any]]],
             rtol: float, atol: float) -> tuple[CaseStatus, str | None]:
    """(status, first error line) of one case on one backend, in this process."""
    try:
        sess = open_unverified(data, backend_name)
    except ToolCrashError as exc:  # the converter died on a toy graph: says nothing of the engine
        return HARNESS, _error_line(exc)
    except Exception as exc:
        return CaseStatus.LOAD_FAIL, _error_line(exc)
    try:
        names = [t.name for t in sess.inputs]
        out_names = [t.name for t in sess.outputs]
        for inputs, expected in data_sets:
            feeds = dict(zip(names, inputs))
            try:
                outs = sess.run(feeds)
            except Exception as exc:
                return CaseStatus.RUN_FAIL, _error_line(exc)
            err = compare_outputs(expected, [outs[n] for n in out_names], rtol, atol, out_names)
            if err:
                return CaseStatus.MISMATCH, err
    finally:
        try:
            sess.close()
        except Exception:  # closing must not turn a verdict into an error
            logger.debug("closing a probe session failed", exc_info=True)
    return PASS, None


_NOISE = re.compile(r"^\S+ (could not open|failed running) <in-memory model>: ")


def _error_line(exc: BaseException) -> str:
    line = first_line(exc)
    line = line if isinstance(exc, UnirtError) else f"{type(exc).__name__}: {line}"
    return _NOISE.sub("", line)


def _run_case_in_worker(state: str, data: bytes, data_sets: Any, rtol: float, atol: float
                        ) -> tuple[CaseStatus, str | None]:
    return run_case(state, data, data_sets, rtol, atol)


# -- the probe ---------------------------------------------------------------------------------
def case_targets(model: onnx.ModelProto) -> tuple[list[tuple[str, dict[str, str]]], bool]:
    """The (op key, features) of the nodes a case exercises, and whether it is multi-node.
    Constant nodes only feed the node under test and are not counted."""
    from unirt.model.info import read_model

    info = read_model(model)
    nodes = [n for n in info.nodes if n.op_type != "Constant" or len(info.nodes) == 1]
    seen: set[str] = set()
    out = []
    for n in nodes:
        feats = node_features(info, n)
        key = op_key(n.op_type, n.domain)
        sig = key + json.dumps(feats, sort_keys=True)
        if sig not in seen:
            seen.add(sig)
            out.append((key, feats))
    return out, len(nodes) > 1


def _outcome_status(outcome: Any) -> tuple[CaseStatus, str | None]:
    if outcome.status == OK:
        return outcome.value
    if outcome.status == CRASHED:
        return CaseStatus.CRASH, outcome.describe()
    if outcome.status == TIMEOUT:
        return CaseStatus.TIMEOUT, outcome.describe()
    if outcome.status == ISO_HARNESS:  # unirt could not run the case: not the engine's doing
        return HARNESS, outcome.describe()
    return CaseStatus.RUN_FAIL, outcome.error


def probe_ops(
    backend_name: str,
    *,
    ops: Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[int, int, str, str], None] | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """Run the conformance cases on ``backend_name``; return the op-support table (a dict)."""
    from importlib.metadata import version as dist_version

    from unirt.plugin.registry import get_registry

    registry = registry or get_registry()
    backend = registry.backend(backend_name)
    avail = backend.available()
    if not avail.available:
        raise UnirtError(f"{backend_name} is not available here: {avail.reason}")
    cases = collect_cases(ops, names)
    if not cases:
        raise UnirtError(f"no conformance case uses {', '.join(sorted(ops or []))}")
    entries: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Worker(_init_worker, (backend_name,)) as worker:
        for i, case in enumerate(cases):
            entry = _probe_case(worker, backend_name, case, timeout)
            mark_rule_refusal(entry, backend, case.model)
            entries.append(entry)
            if progress is not None:
                progress(i + 1, len(cases), case.name, entry["s"])
        restarts = worker.restarts
    return _table(backend_name, avail.version or "unknown", dist_version("onnx"), entries,
                  timeout, time.perf_counter() - started, restarts)


def _probe_case(worker: Worker, backend_name: str, case: Case, timeout: float
                ) -> dict[str, Any]:
    model = case.model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    status, error = _outcome_status(worker.call(
        _run_case_in_worker, model.SerializeToString(), case.data_sets, case.rtol, case.atol,
        timeout=timeout))
    entry: dict[str, Any] = {"n": case.name, "o": int(opset), "ir": int(model.ir_version)}
    if status == CaseStatus.LOAD_FAIL:
        for cause, alt in (("ir", restamp(model, opset=False)), ("opset", restamp(model))):
            if alt is None:
                continue
            s2, e2 = _outcome_status(worker.call(
                _run_case_in_worker, alt.SerializeToString(), case.data_sets, case.rtol,
                case.atol, timeout=timeout))
            if s2 != CaseStatus.LOAD_FAIL:
                # The engine refused the stamp, not the op: keep the op's own outcome.
                entry["r"] = cause
                entry["ro"] = next(o.version for o in alt.opset_import
                                   if o.domain in ("", "ai.onnx"))
                entry["rir"] = int(alt.ir_version)
                status, error, model = s2, e2, alt
                break
    entry["s"] = status
    if error:
        entry["e"] = error[:300]
    try:
        targets, multi = case_targets(model)
    except Exception as exc:  # a case unirt cannot even read: keep it, without features
        targets, multi = [], False
        entry.setdefault("e", f"unreadable: {first_line(exc)}")
    entry["f"] = [[k, f] for k, f in targets]
    if multi:
        entry["m"] = 1
    return entry


def compute_limits(entries: Sequence[dict[str, Any]]) -> dict[str, int | None]:
    """The lowest opset (IR version) the engine refused as stamped, counted only above every
    opset (IR) that some case loaded at as stamped: a stamp is "too new" only when nothing at or
    above it ever loaded."""
    out: dict[str, int | None] = {}
    for key, field_, cause in (("refused_opset", "o", "opset"), ("refused_ir", "ir", "ir")):
        loaded = max((e[field_] for e in entries
                       if not e.get("r") and e["s"] not in (CaseStatus.LOAD_FAIL, HARNESS)),
                     default=0)
        out[key] = min((e[field_] for e in entries
                        if e.get("r") == cause and e[field_] > loaded), default=None)
    return out


def mark_rule_refusal(entry: dict[str, Any], backend: Any, model: onnx.ModelProto) -> None:
    """Mark (``"w"``) a failed case that the backend's own rules (``Backend.rules``) refuse as a
    whole: an ncnn case fed int64 says nothing about its op, and ``check`` applies the rule to
    every model anyway. Such cases are kept in the table but charged to no op."""
    if entry["s"] == PASS:
        return
    from unirt.model.info import read_model

    try:
        reasons = [r for r in backend.rules(read_model(model))
                   if getattr(r, "verdict", "UNSUPPORTED") == "UNSUPPORTED"]
    except Exception:
        logger.debug("rules of %s failed on %s", backend.name, entry["n"], exc_info=True)
        return
    if reasons:
        entry["w"] = str(reasons[0])[:200]


def _table(backend: str, version: str, onnx_version: str, entries: list[dict[str, Any]],
           timeout: float, seconds: float, restarts: int) -> dict[str, Any]:
    counts = Counter(e["s"] for e in entries)
    limits = compute_limits(entries)
    # Intern the (op, features) pairs: most cases share them, and the table ships in the wheel.
    interned: dict[str, int] = {}
    features: list[Any] = []
    for e in entries:
        idx = []
        for pair in e.get("f", []):
            sig = json.dumps(pair, sort_keys=True)
            if sig not in interned:
                interned[sig] = len(features)
                features.append(pair)
            idx.append(interned[sig])
        e["f"] = idx
    return {
        "format": TABLE_FORMAT,
        "backend": backend,
        "version": version,
        "onnx": onnx_version,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"unirt probe-ops --backend {backend}",
        "timeout_s": timeout,
        "seconds": round(seconds, 1),
        "worker_restarts": restarts,
        "summary": {s: counts.get(s, 0) for s in CASE_STATUSES} | {"total": len(entries)},
        "limits": limits,
        "features": features,
        "cases": entries,
    }


def default_table_path(backend: str, version: str) -> Path:
    """Where a table ships: ``unirt/capability/optables/<backend>-<version>.json``."""
    return TABLE_DIR / f"{backend}-{version_slug(version)}.json"


def write_table(table: dict[str, Any], path: str | Path) -> Path:
    """Write compactly (one case per line, so diffs between engine versions stay readable)."""

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in table.items() if k not in ("cases", "features")}
    lines = [json.dumps(head, separators=(",", ":"))[:-1] + ',"features":[']
    feats = table.get("features", [])
    for i, f in enumerate(feats):
        lines.append(json.dumps(f, separators=(",", ":")) + ("," if i < len(feats) - 1 else ""))
    lines.append('],"cases":[')
    cases = table["cases"]
    for i, c in enumerate(cases):
        lines.append(json.dumps(c, separators=(",", ":")) + ("," if i < len(cases) - 1 else ""))
    lines.append("]}")
    # package data: readable by everyone
    write_atomic(p, "\n".join(lines) + "\n", mode=0o644)
    return p
