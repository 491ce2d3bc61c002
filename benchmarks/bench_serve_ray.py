"""``unirt serve`` against the same app on Ray Serve (``unirt serve --ray``), side by side.

One run, one model at a time on the same machine: the tiny model (x[N,4] @ W) and, with
``--resnet``, the ResNet-class one, batching off. First ``unirt serve`` in a child process, then
a local Ray (``ray.init``) with the deployment behind Serve's HTTP proxy, 1 replica and then
``--replicas`` (default 2); the clients are ``tritonclient[http]`` threads, binary form, one
row per request, 1, 8 and 32 at once (``_serve_common.load``). Also timed: ``ray.init``, and
``serve.run`` until every replica answers (each replica loads its models through unirt.load).

    python benchmarks/bench_serve_ray.py [--seconds 3] [--replicas 2] [--resnet]
        [--max-ongoing-requests N] [--json]

Ray Serve puts two hops in each request (proxy actor -> replica actor, each its own process)
where ``unirt serve`` has none; on 2 cores the proxy, the replicas and the clients share them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve_common import ROOT, Target, load, start_unirt, tiny_model

from unirt.testing import models

CLIENTS = (1, 8, 32)


def _cells(url: str, target: Target, seconds: float) -> dict[int, dict[str, float]]:
    load(url, target, 8, 1.0)  # warm
    return {c: load(url, target, c, seconds) for c in CLIENTS}


def _on_ray(config_path: Path, cache: Path, replicas: int, runs: list[Target],
            seconds: float, max_ongoing: int | None) -> dict[str, object]:
    import ray
    from ray import serve

    from unirt.serve import ray as on_ray
    from unirt.serve.config import build_config

    os.environ["UNIRT_CACHE_DIR"] = str(cache)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])
    config = build_config(config_file=str(config_path), backend="onnxruntime", port=0)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    out: dict[str, object] = {"ray_init_s": time.perf_counter() - t0}
    try:
        for n in sorted({1, replicas}):
            t1 = time.perf_counter()
            url = on_ray.run(config, on_ray.RayOptions(
                replicas=n, num_cpus=0.5, app_name=f"bench{n}",
                max_ongoing_requests=max_ongoing), block=False)
            ready = time.perf_counter() - t1
            cells = {t.model: _cells(url.split("://")[1], t, seconds) for t in runs}
            out[f"replicas_{n}"] = {"ready_s": ready, "cells": cells}
            serve.delete(f"bench{n}")
    finally:
        serve.shutdown()
        ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per throughput cell")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--resnet", action="store_true", help="also the ResNet-class model (112)")
    ap.add_argument("--max-ongoing-requests", type=int, default=None,
                    help="per replica (default: unirt's, 8 without batching)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        text = f'[server]\nmax_batch = 1\n[[models]]\npath = "{tiny_model(d / "tiny.onnx")}"\n'
        rng = np.random.default_rng(1)
        runs = [Target("tiny", "x", "y", rng.standard_normal((1, 4)).astype(np.float32))]
        if args.resnet:
            path = models.save(models.resnet_like(batch="N", size=112), d / "resnet.onnx")
            text += f'[[models]]\npath = "{path}"\nname = "resnet"\n'
            runs.append(Target("resnet", "input", "logits",
                               rng.standard_normal((1, 3, 112, 112)).astype(np.float32)))
        cfg = d / "serve.toml"
        cfg.write_text(text)
        t0 = time.perf_counter()
        proc, url = start_unirt(cfg, d / "cache")
        report: dict[str, object] = {"machine": f"{os.cpu_count()} cores",
                                     "unirt_serve_ready_s": time.perf_counter() - t0}
        try:
            report["unirt_serve"] = {t.model: _cells(url, t, args.seconds) for t in runs}
        finally:
            proc.terminate()
            proc.wait(60)
        report["ray"] = _on_ray(cfg, d / "cache", args.replicas, runs, args.seconds,
                                args.max_ongoing_requests)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    ray_report: dict = report["ray"]  # type: ignore[assignment]
    print(f"machine: {report['machine']}; unirt serve ready in "
          f"{report['unirt_serve_ready_s']:.1f} s (process start + load); ray.init "
          f"{ray_report['ray_init_s']:.1f} s; "
          + "; ".join(f"Serve {k.split('_')[1]} replica(s) ready in {v['ready_s']:.1f} s"
                      for k, v in ray_report.items() if k.startswith("replicas_")))
    cols = [("unirt serve", report["unirt_serve"])] + [
        (f"Ray Serve x{k.split('_')[1]}", v["cells"])
        for k, v in ray_report.items() if k.startswith("replicas_")]
    print("\nreq/s (p50 ms), binary form, 1 row per request, batching off")
    print(f"{'model':8} {'clients':>7} " + " ".join(f"{name:>20}" for name, _ in cols))
    for model in (t.model for t in runs):
        for c in CLIENTS:
            cells = [f"{col[model][c]['requests_per_s']:9.0f} ({col[model][c]['p50_ms']:6.2f})"
                     for _, col in cols]
            print(f"{model:8} {c:7d} " + " ".join(f"{s:>20}" for s in cells))


if __name__ == "__main__":
    main()
