"""Re-mark, in a shipped op-support table, the cases that failed because a converter crashed on
the toy graph (status ``harness``): tables written before ``probe-ops`` told these apart recorded
them as ``load_fail``. Idempotent. Usage: python scripts/mark_harness_cases.py TABLE.json ..."""

from __future__ import annotations

import json
import sys
from collections import Counter

from unirt.capability.table import CASE_STATUSES, HARNESS
from unirt.tools.probe_ops import compute_limits, write_table

#: How a converter crash reads in an error line (unirt.errors.ToolCrashError subclasses).
MARKERS = ("pnnx crashed",)


def main(paths: list[str]) -> None:
    for path in paths:
        with open(path) as f:
            table = json.load(f)
        changed = 0
        for case in table["cases"]:
            if case["s"] == "load_fail" and any(m in (case.get("e") or "") for m in MARKERS):
                case["s"] = HARNESS
                changed += 1
        counts = Counter(c["s"] for c in table["cases"])
        table["summary"] = {s: counts.get(s, 0) for s in CASE_STATUSES} | {
            "total": len(table["cases"])}
        table["limits"] = compute_limits(table["cases"])
        write_table(table, path)
        print(f"{path}: {changed} case(s) marked {HARNESS}; limits {table['limits']}")


if __name__ == "__main__":
    main(sys.argv[1:])
