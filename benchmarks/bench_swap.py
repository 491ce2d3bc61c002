"""Latency of one session before, during and after a background tune (``tune="background"``).

    python benchmarks/bench_swap.py [--size 112] [--period-ms 0]

A resnet_like model at SIZE; the user's loop calls back to back (``--period-ms 0``) or paced (a
robot at 1000/PERIOD Hz). Prints the tuner's ranking and outcome, the session's latency before,
during (the measurement's children run niced alongside) and after, and the first calls after
the swap. Compare "after_ms" with the winner opened alone in a fresh process: engines' thread
pools in one process interfere, so no side-by-side timing of several sessions is done here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import unirt
from unirt.plugin.registry import get_registry
from unirt.runtime import tuning
from unirt.testing import models as M


def _timed(sess: unirt.Session, feeds: dict[str, Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        sess.run(feeds)
        out.append(time.perf_counter() - start)
    return out


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1e3, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--period-ms", type=float, default=0.0)
    args = ap.parse_args()
    os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="unirt-bench-swap-")
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)7.0f ms %(message)s")
    period = args.period_ms / 1e3
    path = M.save(M.resnet_like(size=args.size, width=32, blocks=3),
                  Path(tempfile.mkdtemp()) / "resnet_like.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size))
    feeds = {"input": x.astype(np.float32)}
    sess = unirt.load(path, backend="onnxruntime")
    reg = get_registry()
    cands = [n for n in ("onnxruntime", "openvino", "ncnn", "opencv")
             if reg.backend(n).available().available]
    versions = {n: reg.backend(n).available().version for n in cands}
    _timed(sess, feeds, 20)
    before = _timed(sess, feeds, 200)
    t0 = time.perf_counter()
    tuner = tuning.start_background(sess, sess.model, cands, versions, "exact", {})
    during: list[tuple[str, float]] = []
    while tuner.running:
        start = time.perf_counter()
        name = sess.backend
        sess.run(feeds)
        took = time.perf_counter() - start
        during.append((name, took))
        if period > took:
            time.sleep(period - took)
    tuned_s = time.perf_counter() - t0
    first_after = _timed(sess, feeds, 5)
    after = _timed(sess, feeds, 200)
    on_old = [d for name, d in during if name == "onnxruntime"]
    ranking = tuner.result
    print(json.dumps({
        "model": f"resnet_like {args.size}x{args.size} w32 b3", "candidates": cands,
        "outcome": tuner.outcome,
        "ranking_ms": {k: round(v * 1e3, 3) for k, v in ranking.median_s.items()}
        if ranking else None,
        "rejected": ranking.rejected if ranking else None,
        "tuning_wall_s": round(tuned_s, 2), "before_ms": _ms(before),
        "during_tuning_on_reference_ms": _ms(on_old) if on_old else None,
        "during_p90_ms": round(float(np.percentile(on_old, 90)) * 1e3, 3) if on_old else None,
        "calls_during": len(during),
        "first_5_after_ms": [round(v * 1e3, 3) for v in first_after],
        "after_ms": _ms(after), "period_ms": args.period_ms,
        "route": [str(s) for s in sess.route]}, indent=1))
    sess.close()


if __name__ == "__main__":
    main()
