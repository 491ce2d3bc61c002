"""What routing and verification cost at load time, and that they cost nothing per call.

    python benchmarks/bench_routing.py [--repeats 20]

Measured in one run, side by side:
* the static part of routing (everything before a backend opens the model: reading the model,
  ordering candidates, availability, capability checks) on a ResNet-class model — target 5 ms;
* a first load with verification (one child-process probe) against one without;
* a second load (verdict from the cache) against ``verify="never"`` — target: the lookup adds
  at most 2 ms;
* ``Session.run`` of a verified session against an unverified one (verification adds nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import unirt
from unirt.model.info import read_model
from unirt.plugin.registry import get_registry
from unirt.runtime import router
from unirt.testing import models
from unirt.testing.real_models import light_model


def _static_routing(path: Path) -> float:
    start = time.perf_counter()
    info = read_model(path)
    reg = get_registry()
    order, _ = router.candidates(reg, None, None, None, "auto")
    for name in order:
        be = reg.backend(name)
        if be.available().available and hasattr(be, "check"):
            be.check(info)
    return time.perf_counter() - start


def _median(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--backend", default="openvino", help="the non-reference backend to load")
    args = ap.parse_args()
    os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="unirt-bench-routing-")
    tmp = Path(tempfile.mkdtemp())
    resnet = models.save(models.resnet_like(size=224, width=64, blocks=4), tmp / "resnet.onnx")
    _static_routing(resnet)  # availability of every backend is asked once per process
    r50 = models.save(models.resnet50_sized(), tmp / "resnet50.onnx")
    for label, path in (("resnet_like 224 (29 nodes, 3.6 MB)", resnet),
                        ("ResNet-50-size (126 nodes, 102 MB)", r50),
                        ("light_resnet50 (415 nodes, BN unfused)", light_model("resnet50"))):
        t = _median(lambda p=path: _static_routing(p), args.repeats)
        info_t = _median(lambda p=path: (lambda s: (read_model(p), time.perf_counter() - s)[1])(
            time.perf_counter()), args.repeats)
        print(f"static routing, {label}: {t * 1e3:.2f} ms "
              f"(of which reading the model {info_t * 1e3:.2f} ms)  (target <= 5 ms)")
        for name in ("openvino", "opencv", "ncnn"):
            be_ = get_registry().backend(name)
            if not be_.available().available:
                continue

            def verdict(p: Path = path, b: Any = be_) -> float:
                info = read_model(p)  # fresh: features are memoised per model
                start = time.perf_counter()
                b.check(info)
                return time.perf_counter() - start

            print(f"  static verdict of {name} alone: {_median(verdict, args.repeats) * 1e3:.2f} "
                  f"ms  (target <= 20 ms for a 400-node graph)")

    be = args.backend
    if not get_registry().backend(be).available().available:
        print(f"{be} not available: verification cost not measured")
        return
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}

    def load(**kw) -> tuple[float, unirt.Session]:
        start = time.perf_counter()
        s = unirt.load(resnet, backend=be, **kw)
        return time.perf_counter() - start, s

    t_never, s_never = load(verify="never")
    t_first, s_first = load()
    print(f"first load on {be}: {t_first * 1e3:.0f} ms with verification (a child-process "
          f"probe), {t_never * 1e3:.0f} ms without")
    seconds = [(load()[0], load(verify="never")[0]) for _ in range(args.repeats)]
    cached = statistics.median(a for a, _ in seconds)
    never = statistics.median(b for _, b in seconds)
    print(f"second load: {cached * 1e3:.1f} ms with the cached verdict, {never * 1e3:.1f} ms "
          f"with verify='never': lookup adds {(cached - never) * 1e3:.2f} ms  (target <= 2 ms)")
    runs = []
    for i in range(args.repeats * 2):
        pair = [(s_first, 0), (s_never, 1)] if i % 2 else [(s_never, 1), (s_first, 0)]
        for sess, k in pair:
            start = time.perf_counter()
            sess.run(x)
            runs.append((k, time.perf_counter() - start))
    verified = statistics.median(t for k, t in runs if k == 0)
    plain = statistics.median(t for k, t in runs if k == 1)
    print(f"Session.run: {verified * 1e3:.2f} ms verified vs {plain * 1e3:.2f} ms unverified "
          f"(ratio {verified / plain:.3f}; verification adds nothing per call)")


if __name__ == "__main__":
    main()
