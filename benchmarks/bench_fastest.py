"""``prefer="fastest"`` against plain ONNX Runtime CPU, in exact and fast precision.

    python benchmarks/bench_fastest.py [--runs 30]

On a ResNet-18-class and a MobileNetV3-class model built in code: which backend the measured
routing picks, the first load (which pays for the measurement) and the second (cached), and the
per-call latency of the chosen session against an ONNX Runtime session, interleaved in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import unirt
from unirt.testing import models


def _interleaved(a, b, feeds, runs: int, block: int = 5) -> tuple[float, float]:
    """Medians per call, in alternating blocks of ``block`` calls with a pause between blocks:
    an engine's idle worker threads keep spinning for a while after it runs, and calls of two
    engines alternated one by one would measure that contention instead of either engine."""
    ta, tb = [], []
    for i in range(max(1, runs // block)):
        pair = [(a, ta), (b, tb)] if i % 2 else [(b, tb), (a, ta)]
        for sess, acc in pair:
            time.sleep(0.05)
            for _ in range(block):
                start = time.perf_counter()
                sess.run(feeds)
                acc.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="unirt-bench-fastest-")
    tmp = Path(tempfile.mkdtemp())
    cases = {
        "resnet18-class (224, width 64, 4 blocks)":
            models.save(models.resnet_like(size=224, width=64, blocks=4), tmp / "resnet.onnx"),
        "mobilenetv3-class (224)":
            models.save(models.mobilenet_like(size=224), tmp / "mobilenet.onnx"),
    }
    for label, path in cases.items():
        feeds = {"input": np.random.default_rng(0).standard_normal(
            (1, 3, 224, 224)).astype(np.float32)}
        ort = unirt.load(path, backend="onnxruntime")
        ref = ort.run(feeds)["logits"]
        for precision in ("exact", "fast"):
            start = time.perf_counter()
            sess = unirt.load(path, prefer="fastest", precision=precision)
            first = time.perf_counter() - start
            start = time.perf_counter()
            unirt.load(path, prefer="fastest", precision=precision).close()
            second = time.perf_counter() - start
            chosen, base = _interleaved(sess, ort, feeds, args.runs)
            err = float(np.abs(sess.run(feeds)["logits"] - ref).max())
            print(f"{label}, {precision}: fastest = {sess.backend} ({sess.precision}), "
                  f"{chosen * 1e3:.2f} ms vs onnxruntime {base * 1e3:.2f} ms "
                  f"(x{base / chosen:.2f}), max abs error {err:.2g}; "
                  f"first load {first:.1f} s (measures), second {second * 1e3:.0f} ms")
            print(f"    {sess.route[0].reason}")
            sess.close()


if __name__ == "__main__":
    main()
