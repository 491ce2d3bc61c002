"""The first ``unirt.load(model)`` with no preference and an empty cache, against creating a raw
ONNX Runtime session on the same file: the default route opens the reference at once (no child
process, no other engine imported), so the difference is unirt's bookkeeping.

    python benchmarks/bench_first_load.py [--repeats 15]

Two measurements per model, side by side:
* in one process, interleaved: ``unirt.load`` (a new empty cache each time) vs
  ``onnxruntime.InferenceSession`` (imports already paid by both);
* in fresh processes: ``import unirt; unirt.load(path)`` vs ``import onnxruntime;
  InferenceSession(path)``, start to end, what a robot's boot sees.
Target: unirt <= raw + 10 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

import unirt
from unirt.testing import models
from unirt.testing.real_models import light_model

_FRESH_UNIRT = """
import os, sys, time, tempfile
os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp()
t = time.perf_counter()
import unirt
s = unirt.load(sys.argv[1])
print(time.perf_counter() - t, s.backend)
"""
_FRESH_RAW = """
import sys, time
t = time.perf_counter()
import onnxruntime as ort
so = ort.SessionOptions(); so.log_severity_level = 3
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
print(time.perf_counter() - t, "raw")
"""


def _fresh(code: str, path: Path) -> float:
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    cases = [("resnet_like 224 (29 nodes, 3.6 MB)",
              models.save(models.resnet_like(size=224, width=64, blocks=4), tmp / "r.onnx")),
             ("light_resnet50 (415 nodes, 102 MB)", light_model("resnet50"))]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for label, path in cases:
        mine, raw = [], []
        for i in range(args.repeats):
            for k in ((0, 1) if i % 2 else (1, 0)):
                if k == 0:
                    os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp()
                    start = time.perf_counter()
                    sess = unirt.load(path)
                    mine.append(time.perf_counter() - start)
                    assert sess.backend == "onnxruntime", sess.explain()
                else:
                    start = time.perf_counter()
                    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                    raw.append(time.perf_counter() - start)
        m, r = statistics.median(mine) * 1e3, statistics.median(raw) * 1e3
        print(f"{label}, in one process: unirt.load {m:.1f} ms vs raw session {r:.1f} ms "
              f"(+{m - r:.1f} ms; target <= +10 ms)")
        fm = statistics.median(_fresh(_FRESH_UNIRT, path) for _ in range(max(3, args.repeats // 3)))
        fr = statistics.median(_fresh(_FRESH_RAW, path) for _ in range(max(3, args.repeats // 3)))
        print(f"{label}, fresh process (imports included): unirt {fm * 1e3:.0f} ms vs raw "
              f"{fr * 1e3:.0f} ms (+{(fm - fr) * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
