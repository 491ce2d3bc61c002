"""Latency of one session before, during and after a background tune (tune="background").

    python benchmarks/bench_swap.py [SIZE=112] [PERIOD_MS=0]

A resnet_like model at SIZE; the user's loop calls back to back (PERIOD_MS=0) or paced (a robot
at 1000/PERIOD_MS Hz). Prints the tuner's ranking and outcome, the reference's latency before,
during (the measurement's children run niced alongside) and after, and the first calls after
the swap. Compare "after_ms" with the winner opened alone in a fresh process: engines' thread
pools in one process interfere, so no side-by-side timing of several sessions is done here.
"""
import json, logging, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np
import unirt
from unirt import tuning
from unirt.plugins import get_registry
from unirt.testing import models as M

logging.basicConfig(level=logging.INFO, format="%(relativeCreated)7.0f ms %(message)s")
size = int(sys.argv[1]) if len(sys.argv) > 1 else 112
period = float(sys.argv[2]) / 1e3 if len(sys.argv) > 2 else 0.0  # paced loop (a robot at N Hz)
path = M.save(M.resnet_like(size=size, width=32, blocks=3), Path(tempfile.mkdtemp()) / "resnet_like.onnx")
x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
feeds = {"input": x}
sess = unirt.load(path, backend="onnxruntime")
reg = get_registry()
cands = [n for n in ["onnxruntime", "openvino", "ncnn", "opencv"] if reg.backend(n).available().available]
versions = {n: reg.backend(n).available().version for n in cands}

def timed(s, n):
    t = []
    for _ in range(n):
        a = time.perf_counter(); s.run(feeds); t.append(time.perf_counter() - a)
    return t
timed(sess, 20)
before = timed(sess, 200)
t0 = time.perf_counter()
tuner = tuning.start_background(sess, sess.model, cands, versions, "exact", {})
during, swap_at = [], None
while tuner.running:
    a = time.perf_counter(); b = sess.backend; sess.run(feeds); d = time.perf_counter() - a
    during.append((a - t0, b, d))
    if period > d: time.sleep(period - d)
tuned_s = time.perf_counter() - t0
first_after = timed(sess, 5)
after = timed(sess, 200)
ms = lambda v: round(statistics.median(v) * 1e3, 3)
on_old = [d for _, b, d in during if b == "onnxruntime"]
print(json.dumps({
    "model": f"resnet_like {size}x{size} w32 b3", "candidates": cands, "outcome": tuner.outcome,
    "ranking_ms": {k: round(v * 1e3, 3) for k, v in (tuner.result.median_s.items() if tuner.result else [])},
    "rejected": tuner.result.rejected if tuner.result else None,
    "tuning_wall_s": round(tuned_s, 2),
    "before_ms": ms(before), "during_tuning_on_reference_ms": ms(on_old) if on_old else None,
    "during_p90_ms": round(float(np.percentile(on_old, 90)) * 1e3, 3) if on_old else None,
    "calls_during": len(during), "first_5_after_ms": [round(v * 1e3, 3) for v in first_after],
    "after_ms": ms(after), "period_ms": period * 1e3, "route": [str(s) for s in sess.route],
}, indent=1))
sess.close()
