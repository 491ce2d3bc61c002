"""After ``unirt tune``, does ``unirt.load(model)`` run as fast as the fastest correct engine?

    python benchmarks/bench_tuned.py [--runs 200]

Per model: tune (verify and time every available backend in children), then ``unirt.load`` with
no preference (the tuned winner) against every verified engine's bare call (the backend
session's ``run``: the engine API and nothing of unirt), all in this process, in alternating
blocks of calls with a short pause between calls (engines' spinning thread pools otherwise
distort calls alternated one by one). Target: the tuned session within 5% of the fastest bare
engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import unirt
from unirt.evidence.inputs import make_inputs
from unirt.evidence.timing import rank
from unirt.plugin.backend import OpenOptions
from unirt.plugin.registry import get_registry
from unirt.testing import models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="unirt-bench-tuned-")
    tmp = Path(tempfile.mkdtemp())
    cases = [("resnet_like 224", models.save(models.resnet_like(size=224, width=32, blocks=3),
                                             tmp / "r.onnx")),
             ("mobilenet_like 224", models.save(models.mobilenet_like(), tmp / "m.onnx"))]
    reg = get_registry()
    for label, path in cases:
        info = unirt.read_model(path)
        pool = [n for n in reg.backends if reg.backend(n).available().available]
        versions = {n: reg.backend(n).available().version for n in pool}
        ranking = rank(info, pool, versions, "exact", {}, registry=reg, remeasure=True)
        sess = unirt.load(path)
        feeds = make_inputs(info.inputs, {t.name: tuple(d if isinstance(d, int) else 1
                                                        for d in (t.shape or ()))
                                          for t in info.inputs}, seed=0)
        names = [t.name for t in info.outputs]
        bare = {n: reg.backend(n).open(info, OpenOptions()) for n in ranking.order}
        calls = {"unirt (tuned)": (lambda s=sess, f=feeds: s.run(f))}
        calls.update({f"bare {n}": (lambda b=b, f=feeds, o=names: b.run(f, o))
                      for n, b in bare.items()})
        times: dict[str, list[float]] = {k: [] for k in calls}
        block = 20
        for r in range(max(1, args.runs // block)):
            order = list(calls)
            order = order[r % len(order):] + order[:r % len(order)]
            for k in order:
                fn = calls[k]
                fn()  # the first call after another engine's block is not timed
                for _ in range(block):
                    time.sleep(0.002)
                    start = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - start)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        fastest_bare = min((v, k) for k, v in med.items() if k.startswith("bare"))
        print(f"{label}: tuned -> {sess.backend}; " + ", ".join(
            f"{k} {v:.3f} ms" for k, v in sorted(med.items(), key=lambda kv: kv[1])))
        print(f"  tuned session / fastest bare engine ({fastest_bare[1]}): "
              f"{med['unirt (tuned)'] / fastest_bare[0]:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
