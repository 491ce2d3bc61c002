"""Figures for scripts/gpu_check.sh: each named backend against the CPU reference (onnxruntime).

Usage: python scripts/gpu_check.py BACKEND [BACKEND ...]   (e.g. ncnn-vulkan onnxruntime-cuda)
Prints one JSON line per (backend, model): max abs error vs onnxruntime on the CPU, median
latency in ms, and the session's details (device, precision, providers, io_binding); the CPU
backends are measured the same way for comparison. Never raises for a backend that fails: the
line says why.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import unirt
from unirt.evidence.inputs import make_inputs
from unirt.plugin.registry import get_registry
from unirt.testing import models as M

MODELS = {"conv_net": M.conv_net, "multi_io": M.multi_io, "resnet_like": M.resnet_like,
          "mobilenet_like": M.mobilenet_like}
CPU = ["onnxruntime", "ncnn", "openvino"]
RUNS = 30


def measure(backend: str, name: str, path: Path) -> dict[str, object]:
    row: dict[str, object] = {"backend": backend, "model": name}
    status = get_registry().backend(backend).available()
    if not status.available:
        return {**row, "error": f"unavailable: {status.reason}"}
    try:
        with unirt.load(path, backend="onnxruntime") as ref, \
                unirt.load(path, backend=backend, verify="never") as sess:
            feeds = make_inputs(sess.inputs, seed=7)
            want = ref.run(feeds)
            got = sess.run(feeds)
            times = []
            for _ in range(RUNS):
                start = time.perf_counter()
                sess.run(feeds)
                times.append((time.perf_counter() - start) * 1e3)
            err = max(float(np.max(np.abs(got[k].astype(np.float64) - want[k]))) for k in want)
            keep = ("device", "providers", "io_binding", "ncnn_options")
            return {**row, "max_abs_err": err, "median_ms": round(statistics.median(times), 3),
                    "precision": sess.precision,
                    "details": {k: v for k, v in sess.details.items() if k in keep}}
    except Exception as exc:  # a figure for every backend, even one that fails
        return {**row, "error": f"{type(exc).__name__}: {exc}"[:400]}


def main(backends: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            path = M.save(build(), Path(tmp) / f"{name}.onnx")
            for backend in [*backends, *CPU]:
                print(json.dumps(measure(backend, name, path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
