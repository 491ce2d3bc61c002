"""What the openvino backend costs and gains: cached loads, per-call overhead, exact vs fast.

    python benchmarks/bench_openvino.py [--size 224] [--width 64] [--blocks 4] [--runs 10]
                                        [--samples 100] [--json]

1. Load time of a ResNet-class model (``unirt.testing.models.resnet_like``, built in code): the
   first load (empty cache: read ONNX + compile + write the blob), the second (OpenVINO's
   ``CACHE_DIR`` hit), and a load with the cache turned off, each in a fresh temporary cache.
2. Per-call overhead of ``Session.run`` over the raw OpenVINO call it wraps
   (``InferRequest.infer(feeds, share_inputs=True)``, outputs copied out), on a tiny model,
   measured interleaved in one run so machine noise hits both alike. Target: <= 5 us per call.
3. ``precision="exact"`` vs ``"fast"``: median latency, and max abs error vs ONNX Runtime CPU.

Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import openvino as ov
from _timing import interleaved

import unirt
from unirt.plugin.registry import set_registry
from unirt.testing import models


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_loads(path: Path) -> dict[str, float]:
    """First load, cached second load, and an uncached load, in a private cache directory."""
    out: dict[str, float] = {}
    previous = os.environ.get("UNIRT_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["UNIRT_CACHE_DIR"] = cache
        set_registry(None)
        unirt.backends()  # plugin loading and openvino.Core() are not the model's load time
        try:
            # verify="never": a verification child would compile into the cache first, and the
            # engine's own compile cache is what is measured here
            def load() -> unirt.Session:
                return unirt.load(path, backend="openvino", verify="never")

            out["first_load_s"], first = _timed(load)
            out["second_load_s"], second = _timed(load)
            out["uncached_load_s"], _ = _timed(lambda: unirt.load(
                path, backend="openvino", verify="never", options={"openvino": {"cache": False}}))
            assert first.details.get("loaded_from_cache") is False
            assert second.details.get("loaded_from_cache") is True
            out["cache_bytes"] = sum(p.stat().st_size for p in Path(cache).rglob("*")
                                     if p.is_file())
        finally:
            if previous is None:
                os.environ.pop("UNIRT_CACHE_DIR", None)
            else:
                os.environ["UNIRT_CACHE_DIR"] = previous
            set_registry(None)
    out["speedup"] = out["first_load_s"] / out["second_load_s"]
    return out


def bench_overhead(path: Path, samples: int, calls: int = 200) -> dict[str, float]:
    """unirt ``Session.run`` vs the raw OpenVINO call, same model, precision and config."""
    sess = unirt.load(path, backend="openvino", options={"openvino": {"cache": False}})
    core = ov.Core()
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feeds = {"x": np.ones((1, 4), np.float32)}
    np.testing.assert_array_equal(request.infer(feeds, share_inputs=True).to_tuple()[0],
                                  sess.run(feeds)["y"])

    def raw() -> Any:
        return request.infer(feeds, share_inputs=True).to_tuple()

    def wrapped() -> Any:
        return sess.run(feeds)

    t_raw, t_unirt = interleaved(raw, wrapped, samples, calls)
    return {"raw_us": t_raw * 1e6, "unirt_us": t_unirt * 1e6,
            "overhead_us": (t_unirt - t_raw) * 1e6}


def bench_precision(path: Path, shape: tuple[int, ...], runs: int) -> dict[str, dict[str, Any]]:
    """Median latency and max abs error vs ONNX Runtime CPU, for exact and fast."""
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # ONNX Runtime's workers spin after each run by default, taking the cores from whichever
    # engine runs next: without this, timings of the others depend on the order.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ref_sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ref = ref_sess.run(None, {"input": x})[0]
    results: dict[str, dict[str, Any]] = {}
    sessions = {p: unirt.load(path, backend="openvino", precision=p,
                              options={"openvino": {"cache": False}})
                for p in ("exact", "fast")}
    times: dict[str, list[float]] = {}
    for p, s in sessions.items():
        s.run({"input": x})  # warm-up: first inference allocates
        results[p] = {"engine_precision": s.precision,
                      "max_abs_err_vs_ort": float(np.abs(s.run({"input": x})["logits"]
                                                         - ref).max())}
    # One engine at a time, in blocks: interleaving single runs let one engine's worker
    # threads (still spinning or waking) slow the next one down on a small machine.
    for p, s in sessions.items():
        times[p] = [_timed(lambda s=s: s.run({"input": x}))[0] for _ in range(runs)]
    ref_sess.run(None, {"input": x})
    times["onnxruntime"] = [_timed(lambda: ref_sess.run(None, {"input": x}))[0]
                            for _ in range(runs)]
    for p in sessions:
        results[p]["median_ms"] = statistics.median(times[p]) * 1e3
    results["onnxruntime"] = {"median_ms": statistics.median(times["onnxruntime"]) * 1e3}
    results["fast_speedup"] = {"x": results["exact"]["median_ms"] / results["fast"]["median_ms"]}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--width", type=int, default=64, help="channels after the stem")
    ap.add_argument("--blocks", type=int, default=4, help="residual blocks")
    ap.add_argument("--runs", type=int, default=10, help="inferences per precision")
    ap.add_argument("--samples", type=int, default=100, help="overhead samples (200 calls each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        resnet = models.save(models.resnet_like(size=args.size, width=args.width,
                                                blocks=args.blocks), Path(tmp) / "resnet.onnx")
        tiny = models.save(models.tiny(), Path(tmp) / "tiny.onnx")
        with tempfile.TemporaryDirectory() as cache:
            os.environ.setdefault("UNIRT_CACHE_DIR", cache)
            results = {
                "model": {"size": args.size, "width": args.width, "blocks": args.blocks,
                          "onnx_bytes": resnet.stat().st_size, "openvino": ov.__version__},
                "load": bench_loads(resnet),
                "overhead_tiny": bench_overhead(tiny, args.samples),
                "precision": bench_precision(resnet, (1, 3, args.size, args.size), args.runs),
            }
    if args.json:
        print(json.dumps(results, indent=2))
        return
    m, load, ovh, prec = (results[k] for k in ("model", "load", "overhead_tiny", "precision"))
    print(f"openvino {m['openvino']}; resnet_like {m['size']}x{m['size']}, width {m['width']}, "
          f"{m['blocks']} blocks ({m['onnx_bytes'] / 1e6:.1f} MB)")
    print(f"load: first {load['first_load_s'] * 1e3:.1f} ms, second (cached) "
          f"{load['second_load_s'] * 1e3:.1f} ms ({load['speedup']:.1f}x), "
          f"cache off {load['uncached_load_s'] * 1e3:.1f} ms; "
          f"cache {load['cache_bytes'] / 1e6:.1f} MB")
    print(f"per call (tiny): raw {ovh['raw_us']:.2f} us, unirt {ovh['unirt_us']:.2f} us, "
          f"overhead {ovh['overhead_us']:.2f} us (target <= 5 us)")
    for p in ("exact", "fast"):
        r = prec[p]
        print(f"{p:5s}: {r['engine_precision']}, median {r['median_ms']:.2f} ms, "
              f"max abs err vs onnxruntime {r['max_abs_err_vs_ort']:.2e}")
    print(f"onnxruntime CPU: median {prec['onnxruntime']['median_ms']:.2f} ms; "
          f"fast is {prec['fast_speedup']['x']:.2f}x exact")


if __name__ == "__main__":
    main()
