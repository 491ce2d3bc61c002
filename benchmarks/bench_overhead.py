"""What unirt costs on top of ONNX Runtime: per-call overhead, and the time of ``import unirt``.

Measured side by side in one run, interleaved (raw call, then unirt call, alternating which goes
first), so that machine noise hits both alike; the figures are medians of many samples.

    python benchmarks/bench_overhead.py [--samples 200] [--json]

Targets (issue #2): overhead <= 5 us per call on a tiny model (feed checks included); ratio
unirt / raw <= 1.01 on a ResNet-class model; ``import unirt`` <= 150 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _timing import interleaved

import unirt
from unirt.testing import models
from unirt.testing.real_models import light_case


def _pair(path: Path, feeds: dict[str, np.ndarray]):
    # The raw call goes to the very InferenceSession unirt wraps: two sessions would each keep
    # a thread pool whose spinning threads slow the other one down, and measure that instead.
    sess = unirt.load(path, backend="onnxruntime")
    raw = sess._impl._sess
    assert isinstance(raw, ort.InferenceSession)
    names = [o.name for o in raw.get_outputs()]
    # Same outputs either way, or the comparison is meaningless.
    for a, b in zip(raw.run(names, feeds), sess.run(feeds).values()):
        np.testing.assert_array_equal(a, b)
    return (lambda: raw.run(names, feeds)), (lambda: sess.run(feeds)), sess


def _import_time(repeats: int = 7) -> dict[str, float]:
    def run(code: str) -> float:
        best = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best.append(time.perf_counter() - start)
        return statistics.median(best)

    bare = run("pass")
    with_unirt = run("import unirt")
    return {"interpreter_s": bare, "import_unirt_s": with_unirt - bare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny_path = models.save(models.tiny(), Path(tmp) / "tiny.onnx")
        raw, wrapped, _ = _pair(tiny_path, {"x": np.ones((1, 4), np.float32)})
        r, w = interleaved(raw, wrapped, args.samples, calls=500)
        results["tiny"] = {"raw_us": r * 1e6, "unirt_us": w * 1e6, "overhead_us": (w - r) * 1e6,
                           "ratio": w / r}

    path, feeds, _ = light_case("resnet50")
    raw, wrapped, _ = _pair(path, feeds)
    r, w = interleaved(raw, wrapped, max(args.samples // 5, 20), calls=1)
    results["resnet50"] = {"raw_ms": r * 1e3, "unirt_ms": w * 1e3,
                           "overhead_us": (w - r) * 1e6, "ratio": w / r}
    results["import"] = _import_time()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    t, rn, im = results["tiny"], results["resnet50"], results["import"]
    print(f"onnxruntime {ort.__version__}, python {sys.version.split()[0]}")
    print(f"tiny (Relu*2 on 1x4):   raw {t['raw_us']:.2f} us  unirt {t['unirt_us']:.2f} us  "
          f"overhead {t['overhead_us']:.2f} us/call  ratio {t['ratio']:.3f}  (target <= 5 us)")
    print(f"ResNet-50 (light):      raw {rn['raw_ms']:.2f} ms  unirt {rn['unirt_ms']:.2f} ms  "
          f"ratio {rn['ratio']:.4f}  (target <= 1.01)")
    print(f"import unirt:           {im['import_unirt_s'] * 1e3:.1f} ms over a bare interpreter "
          f"({im['interpreter_s'] * 1e3:.1f} ms)  (target <= 150 ms)")


if __name__ == "__main__":
    main()
