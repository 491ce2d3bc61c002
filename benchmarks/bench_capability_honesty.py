"""How honest is the capability matrix? For every ONNX node conformance case and every installed
backend with a table, the predicted verdict (``Backend.check``) against what actually happened
when the case was run through unirt (crash-isolated).

    python benchmarks/bench_capability_honesty.py [--backends onnxruntime,openvino]
        [--results DIR]   # reuse <backend>.json outcomes from `unirt probe-ops --out` instead
                          # of running the suite again
        [--save-results DIR]  # keep the fresh outcomes for a later --results run
        [--json FILE]

Two predictions per case: *in-sample* (the shipped table, which contains this very case) and
*leave-one-out* (the table without this case: how the matrix fares on a node it has not seen,
the fair estimate for real models). Reported per backend: precision and recall of SUPPORTED
(precision: of the cases predicted SUPPORTED, how many pass; recall: of the cases that pass,
how many were predicted SUPPORTED), how many were UNKNOWN, and the false SUPPORTEDs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from unirt.capability.judge import check_backend
from unirt.capability.table import OpTable, find_table
from unirt.capability.verdict import SUPPORTED, UNKNOWN
from unirt.model.info import read_model
from unirt.plugin.registry import get_registry
from unirt.tools.probe_ops import collect_cases, probe_ops


def _actual(entry: dict[str, Any]) -> str:
    # The outcome of the case *as stamped*: a case that loaded only once re-stamped was refused.
    return "load_fail" if entry.get("r") else entry["s"]


def _metrics(pred: dict[str, str], actual: dict[str, str]) -> dict[str, Any]:
    names = [n for n in actual if n in pred]
    tp = sum(1 for n in names if pred[n] == SUPPORTED and actual[n] == "pass")
    fp = [n for n in names if pred[n] == SUPPORTED and actual[n] != "pass"]
    passing = sum(1 for n in names if actual[n] == "pass")
    predicted = tp + len(fp)
    return {"cases": len(names), "actual_pass": passing, "predicted_supported": predicted,
            "unknown": sum(1 for n in names if pred[n] == UNKNOWN),
            "precision": tp / predicted if predicted else None,
            "recall": tp / passing if passing else None,
            "false_supported": [f"{n} ({actual[n]})" for n in fp]}


def run(backend_name: str, results_dir: Path | None, cases: list[Any],
        save_dir: Path | None = None) -> dict[str, Any]:
    backend = get_registry().backend(backend_name)
    table, note = find_table(backend_name, backend.available().version)
    if table is None:
        return {"error": "no table"}
    t0 = time.perf_counter()
    if results_dir is not None:
        fresh = json.loads((results_dir / f"{backend_name}.json").read_text())
    else:
        fresh = probe_ops(backend_name)
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            (save_dir / f"{backend_name}.json").write_text(json.dumps(fresh))
    probe_s = time.perf_counter() - t0
    # A harness failure (a converter crashing on the toy graph) is evidence of nothing.
    actual = {e["n"]: _actual(e) for e in fresh["cases"] if e["s"] != "harness"}
    pred_in: dict[str, str] = {}
    pred_loo: dict[str, str] = {}
    t1 = time.perf_counter()
    for c in cases:
        try:
            info = read_model(c.model)
        except Exception:
            continue
        pred_in[c.name] = check_backend(backend, info, table).prediction
        loo = OpTable(table.data, table.path, exclude={c.name})
        pred_loo[c.name] = check_backend(backend, info, loo).prediction
    return {"backend": backend_name, "version": backend.available().version,
            "table": table.name, "table_note": note, "probe_seconds": round(probe_s, 1),
            "predict_seconds": round(time.perf_counter() - t1, 1),
            "pass_rate": sum(1 for v in actual.values() if v == "pass") / len(actual),
            "in_sample": _metrics(pred_in, actual), "leave_one_out": _metrics(pred_loo, actual)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default=None)
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--save-results", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    reg = get_registry()
    names = args.backends.split(",") if args.backends else [
        n for n, b in reg.backends.items() if b.available().available]
    cases = collect_cases()
    report = {}
    for name in names:
        r = run(name, args.results, cases, args.save_results)
        report[name] = r
        if "error" in r:
            print(f"{name}: {r['error']}")
            continue
        print(f"{name} {r['version']} (table {r['table']}): {r['pass_rate']:.1%} of "
              f"{r['in_sample']['cases']} cases pass")
        for kind in ("in_sample", "leave_one_out"):
            m = r[kind]
            prec = "n/a" if m["precision"] is None else f"{m['precision']:.3f}"
            rec = "n/a" if m["recall"] is None else f"{m['recall']:.3f}"
            print(f"  {kind:>13}: SUPPORTED precision {prec}, recall {rec} "
                  f"({m['predicted_supported']} predicted, {m['actual_pass']} pass, "
                  f"{m['unknown']} UNKNOWN, {len(m['false_supported'])} false SUPPORTED)")
            for fs in m["false_supported"][:8]:
                print(f"      false SUPPORTED: {fs}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
