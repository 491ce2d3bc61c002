"""What the artifact cache saves the ncnn backend, and what ncnn costs or gains against ORT.

    python benchmarks/bench_ncnn_cache.py [--size 64] [--width 32] [--blocks 3] [--rounds 3]
                                          [--runs 30] [--real light_resnet50] [--json]

1. ``unirt.load`` + first ``run`` of a ResNet-class model (``unirt.testing.models.resnet_like``,
   built in code) with an empty cache (pnnx converts it) and again with the entry in the cache,
   side by side in each round, each round in a fresh temporary cache, with ``verify="never"`` so
   the conversion cache is what is measured. The in-process memo of the model's hash is cleared
   before the second load so it pays what a new process would. Target: the second costs <= 20%
   of the first. Once more with the router's default verification (a child process runs the
   model against ONNX Runtime the first time; its verdict is cached too).
2. Per-call time of ncnn against ONNX Runtime CPU on the same model and input: the median of a
   block of consecutive calls per engine, blocks alternated over 3 rounds and the best round
   kept (both engines at their default thread counts).
3. ``precision="exact"`` vs ``"fast"``: max abs error against ONNX Runtime CPU, and per-call time.

``--real NAME`` adds one of the onnx wheel's light models (e.g. ``light_resnet50``) to 2 and 3.
Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

import unirt
import unirt.store.cache
from unirt.evidence.inputs import make_inputs
from unirt.testing import models


def _load_and_run(path: Path, feeds: dict[str, np.ndarray], cache: Path,
                  precision: str = "exact", verify: str = "never") -> tuple[float, Any]:
    start = time.perf_counter()
    sess = unirt.load(path, backend="ncnn", precision=precision, verify=verify,
                      options={"ncnn": {"cache_dir": str(cache)}})
    sess.run(feeds)
    elapsed = time.perf_counter() - start
    return elapsed, sess


def bench_cache(path: Path, feeds: dict[str, np.ndarray], rounds: int,
                verify: str = "never") -> dict[str, Any]:
    firsts, seconds = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="unirt-bench-cache-") as tmp:
            # The router's verification verdicts live in the default cache: point it here too.
            os.environ["UNIRT_CACHE_DIR"] = tmp
            unirt.store.cache._file_hashes.clear()
            t1, s1 = _load_and_run(path, feeds, Path(tmp), verify=verify)
            if verify == "never":
                assert not s1.details["conversions"][0]["cached"]
            s1.close()
            unirt.store.cache._file_hashes.clear()
            t2, s2 = _load_and_run(path, feeds, Path(tmp), verify=verify)
            assert s2.details["conversions"][0]["cached"]
            s2.close()
        firsts.append(t1)
        seconds.append(t2)
    first, second = statistics.median(firsts), statistics.median(seconds)
    return {"first_s": first, "second_s": second, "ratio": second / first,
            "firsts": firsts, "seconds": seconds}


def _per_call(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_calls(path: Path, feeds: dict[str, np.ndarray], runs: int) -> dict[str, Any]:
    ref_sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in ref_sess.get_outputs()]
    ref = dict(zip(names, ref_sess.run(names, feeds)))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="unirt-bench-cache-") as tmp:
        sessions = {p: _load_and_run(path, feeds, Path(tmp), p)[1] for p in ("exact", "fast")}
        for _ in range(3):  # warm up all three
            ref_sess.run(names, feeds)
            for s in sessions.values():
                s.run(feeds)
        # Blocks of consecutive calls per engine, alternated over rounds, best round kept:
        # interleaving single calls lets ONNX Runtime's spinning worker threads steal the
        # cores from the ncnn call that follows (2 cores here), which measures the neighbour.
        ort_times: list[float] = []
        ncnn_times: dict[str, list[float]] = {p: [] for p in sessions}
        for _ in range(3):
            ort_times.append(_per_call(lambda: ref_sess.run(names, feeds), runs))
            for p, s in sessions.items():
                ncnn_times[p].append(_per_call(lambda s=s: s.run(feeds), runs))
        out["onnxruntime_ms"] = min(ort_times) * 1e3
        for p, s in sessions.items():
            got = s.run(feeds)
            err = max(float(np.max(np.abs(got[n].astype(np.float64) - ref[n]))) for n in names)
            out[f"ncnn_{p}_ms"] = min(ncnn_times[p]) * 1e3
            out[f"ncnn_{p}_max_abs_err"] = err
            out[f"ncnn_{p}_precision"] = s.precision
            s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--real", default=None, help="an onnx wheel light model, e.g. light_resnet50")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="unirt-bench-") as tmp:
        path = models.save(models.resnet_like(size=args.size, width=args.width,
                                              blocks=args.blocks), Path(tmp) / "resnet_like.onnx")
        info = unirt.load(path, backend="onnxruntime")
        feeds = make_inputs(info.inputs, seed=0)
        info.close()
        results["resnet_like"] = {"cache": bench_cache(path, feeds, args.rounds),
                                  "cache_verified": bench_cache(path, feeds, 1, verify="auto"),
                                  **bench_calls(path, feeds, args.runs)}
        if args.real:
            import onnx

            real = Path(onnx.__file__).parent / "backend/test/data/light" / f"{args.real}.onnx"
            s = unirt.load(real, backend="onnxruntime")
            rfeeds = make_inputs(s.inputs, seed=0)
            s.close()
            results[args.real] = {"cache": bench_cache(real, rfeeds, 1),
                                  **bench_calls(real, rfeeds, max(5, args.runs // 3))}

    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, r in results.items():
        c = r["cache"]
        print(f"== {name}")
        print(f"load+first run, empty cache (pnnx converts): {c['first_s'] * 1e3:8.1f} ms")
        print(f"load+first run, cached entry:                {c['second_s'] * 1e3:8.1f} ms  "
              f"({c['ratio'] * 100:.1f}% of the first; target <= 20%)")
        if "cache_verified" in r:
            v = r["cache_verified"]
            print(f"with the router's verification (child process, first time only): "
                  f"{v['first_s'] * 1e3:.0f} ms then {v['second_s'] * 1e3:.1f} ms "
                  f"({v['ratio'] * 100:.1f}%)")
        print(f"per call: onnxruntime {r['onnxruntime_ms']:.3f} ms, "
              f"ncnn exact {r['ncnn_exact_ms']:.3f} ms, ncnn fast {r['ncnn_fast_ms']:.3f} ms")
        print(f"max abs error vs onnxruntime: exact {r['ncnn_exact_max_abs_err']:.2e} "
              f"({r['ncnn_exact_precision']}), fast {r['ncnn_fast_max_abs_err']:.2e} "
              f"({r['ncnn_fast_precision']})")


if __name__ == "__main__":
    main()
