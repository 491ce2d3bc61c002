"""Op-support tables: the ONNX conformance suite as measured on one engine version.

A table (``unirt/capability/optables/<backend>-<version>.json``, written by ``unirt probe-ops``)
keeps, for every case, its outcome and the features of the node(s) it exercised (:mod:`.features`).
This module holds the schema shared with :mod:`unirt.tools.probe_ops` and reads tables into per-op
evidence. A case that failed because unirt's own measuring harness failed (a converter crashing on
a toy graph) is kept in the file as ``harness`` and charged to no op: it says nothing about the
engine.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unirt.capability.features import (
    ABSENT,
    UNKNOWN_VALUE,
    describe_feature,
    is_discriminating,
    signature,
)
from unirt.errors import UnirtError, first_line
from unirt.words import Word

TABLE_DIR = Path(__file__).resolve().parent / "optables"
TABLE_FORMAT = 1



class CaseStatus(Word):
    """How a backend did on a case: a conformance case in a table (``"s"``) or a model in the
    capability matrix (``probes``). Only ``PASS`` is evidence of support; ``HARNESS`` is evidence
    of nothing. Tables hold the first seven; the matrix adds ``DYNAMIC_FAIL`` and ``UNVERIFIED``."""

    PASS = "pass"
    LOAD_FAIL = "load_fail"  # the engine refused to open it
    RUN_FAIL = "run_fail"  # it opened, then raised running (at the base shapes)
    MISMATCH = "mismatch"  # it ran, with numbers out of tolerance
    CRASH = "crash"
    TIMEOUT = "timeout"
    #: unirt could not measure (a converter crashing on a toy graph, a child that did not start)
    HARNESS = "harness"
    DYNAMIC_FAIL = "dynamic_fail"  # declared dynamic, fails at another size
    UNVERIFIED = "unverified"  # nothing to compare with (the reference refuses the model)


PASS, HARNESS = CaseStatus.PASS, CaseStatus.HARNESS
#: The statuses a conformance table's cases may have.
CASE_STATUSES: tuple[CaseStatus, ...] = tuple(CaseStatus)[:7]


def _missing(d: dict[str, str], k: str) -> str:
    return d.get(k, ABSENT)


@dataclass
class Case:
    """One conformance case as a table records it."""

    name: str
    status: str
    error: str | None
    feats: dict[str, str]

    def ref(self) -> str:
        """``test_x (load_fail: why)``: how a reason cites the case."""
        return f"{self.name} ({self.status}: {self.error})" if self.error else \
            f"{self.name} ({self.status})"


@dataclass
class OpEvidence:
    """Every conformance case charged to one op, split into passing and failing."""

    op: str
    passing: list[Case] = field(default_factory=list)
    failing: list[Case] = field(default_factory=list)

    @functools.cached_property
    def keys(self) -> frozenset[str]:
        """Every feature any case of the op has (a case without one has it as absent)."""
        keys: set[str] = set()
        for c in (*self.passing, *self.failing):
            keys.update(c.feats)
        return frozenset(keys)

    @functools.cached_property
    def bad_values(self) -> dict[tuple[str, str], list[Case]]:
        """Discriminating (feature, value) pairs: an attribute value or dtype seen in failing
        cases and in no passing case (``layout=1``, ``mode='cubic'``, a bf16 input). Ranks never
        count (see :func:`.features.is_discriminating`)."""
        keys = [k for k in self.keys if is_discriminating(k)]
        good: set[tuple[str, str]] = set()
        for c in self.passing:
            good.update((k, _missing(c.feats, k)) for k in keys)
        bad: dict[tuple[str, str], list[Case]] = {}
        for c in self.failing:
            for k in keys:
                v = _missing(c.feats, k)
                if v != UNKNOWN_VALUE and (k, v) not in good:
                    bad.setdefault((k, v), []).append(c)
        return bad

    @property
    def status(self) -> str:
        if not self.failing:
            return "supported"
        if not self.passing:
            return "unsupported"
        return "conditional"

    def describe_bad(self, key: str, value: str) -> str:
        cases = self.bad_values[(key, value)]
        return (f"{describe_feature(key, value)}: fails in {len(cases)} conformance case(s) and "
                f"passes in none ({cases[0].ref()})")


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
        cases = [c for c in data["cases"] if c["n"] not in skip and c["s"] != HARNESS]
        for c in cases:
            if c.get("w"):
                continue  # refused by a backend-wide rule, which check() applies itself
            targets = [interned[i] for i in c.get("f") or []]
            if c.get("m") and c["s"] != PASS:
                deferred.append(c)
                continue
            for key, feats in targets:
                ev = self.ops.setdefault(key, OpEvidence(key))
                case = Case(c["n"], c["s"], c.get("e"), feats)
                (ev.passing if c["s"] == PASS else ev.failing).append(case)
        # Ops the engine refused at a case's own opset but ran once re-stamped lower (a kernel
        # registered only up to some opset): judged by the model's opset, as stamped.
        refused: dict[str, int] = {}
        loaded: dict[str, int] = {}
        for c in cases:
            keys = {interned[i][0] for i in c.get("f") or []}
            for key in keys:
                if c.get("r") == "opset":
                    refused[key] = min(refused.get(key, c.get("o", 0)), c.get("o", 0))
                elif not c.get("r") and c["s"] != CaseStatus.LOAD_FAIL:
                    loaded[key] = max(loaded.get(key, 0), c.get("o", 0))
        self.op_refused_opset: dict[str, int] = {
            k: v for k, v in refused.items() if v > loaded.get(k, 0)}
        #: Failing multi-node cases with the signatures of their nodes: a model containing every
        #: one of those nodes resembles the failing case as a whole (dynamic-shape chains of an
        #: expanded function fail together while each op passes alone).
        self.multi_failing: list[tuple[Case, frozenset[str]]] = [
            (Case(c["n"], c["s"], c.get("e"), {}),
             frozenset(signature(*interned[i]) for i in c.get("f") or []))
            for c in deferred if c.get("f")]
        #: Ops that appear in some failing multi-node case: their nodes need a signature even
        #: when the op alone always passes.
        self.multi_ops: frozenset[str] = frozenset(
            interned[i][0] for c in deferred for i in c.get("f") or [])
        # A failing multi-node case is charged only to its ops that pass nowhere else: a failure
        # of an expanded function says nothing about the Add that passes in fifty other cases.
        for c in deferred:
            for key, feats in (interned[i] for i in c.get("f") or []):
                known = self.ops.get(key)
                if known is None or not known.passing:
                    self.ops.setdefault(key, OpEvidence(key)).failing.append(
                        Case(c["n"], c["s"], c.get("e"), feats))

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
                    "first_error": ev.failing[0].ref() if ev.failing else None}
    return {"backend": t.backend, "version": t.version, "summary": s,
            "pass_rate": s["pass"] / s["total"] if s.get("total") else 0.0,
            "limits": t.limits, "ops": ops}

