"""The caller's peak memory while unirt verifies a backend on a model with a big output (issue 18).

    python benchmarks/bench_verify_memory.py [--sizes 1024,2048,4096] [--compare-sizes 2048]

The model is ``Expand -> Sigmoid``: a 1x3x1x1 float input expanded to 1x3xNxN, so that the
output (and nothing else) is big. Each case runs in a fresh interpreter with an empty cache:

* ``default``: ``unirt.load(path)`` with no preference (the reference opens at once, nothing
  to verify; the baseline);
* ``openvino``: ``unirt.load(path, prefer="openvino")`` (the reference and OpenVINO run the
  verification's input sets in children, the caller judges);
* ``compare``: ``unirt.tools.compare.compare(path, backends=[...])`` (one reference run shared by
  the backends).

Each case first does the same thing on a 1x3x8x8 model, so that engine imports and first-use
costs are paid before the figure is taken; the figure is the rise of the process's peak RSS
(``ru_maxrss``) over the big call, and the ratio that rise / the output's size.

Measured (2-core shared machine; OpenVINO and OpenCV for compare):

    case      output   before (172f778)   after
    openvino   12 MiB   60 MiB  4.97x     27 MiB 2.24x
    openvino   48 MiB  239 MiB  4.98x     99 MiB 2.06x
    openvino  192 MiB  959 MiB  4.99x    387 MiB 2.02x
    compare    48 MiB  240 MiB  5.01x     99 MiB 2.07x
    compare   192 MiB  960 MiB  5.00x    387 MiB 2.02x
    default   any        0 MiB            0 MiB (nothing verified)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CASE = r"""
import json, os, resource, sys, tempfile
os.environ["UNIRT_CACHE_DIR"] = tempfile.mkdtemp(prefix="unirt-bench-cache-")
import numpy  # noqa: F401
import unirt
from unirt.tools.compare import compare

kind, small, big = sys.argv[1], sys.argv[2], sys.argv[3]
backends = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else None

def step(path):
    if kind == "default":
        unirt.load(path).close()
    elif kind == "compare":
        compare(path, backends=backends)
    else:
        unirt.load(path, prefer=kind).close()

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

step(small)
before = peak()
step(big)
print(json.dumps({"before": before, "after": peak()}))
"""


def expand_sigmoid(path: Path, side: int) -> int:
    """Write the model; the output's size in bytes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = np.array([1, 3, side, side], dtype=np.int64)
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["e"]),
         helper.make_node("Sigmoid", ["e"], ["y"])],
        "expand_sigmoid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, side, side])],
        [numpy_helper.from_array(shape, "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return int(shape.prod()) * 4


def run_case(kind: str, small: Path, big: Path, backends: str = "") -> int:
    """The rise of peak RSS, in bytes, over the big call in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _CASE, kind, str(small), str(big), backends],
                         capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return int(figures["after"]) - int(figures["before"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,2048,4096",
                    help="sides N of the 1x3xNxN output, comma-separated")
    ap.add_argument("--compare-sizes", default="2048",
                    help="sides for the compare case (it runs every backend named)")
    ap.add_argument("--compare-backends", default="openvino,opencv",
                    help="backends for unirt.tools.compare.compare")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="unirt-bench-mem-"))
    small = tmp / "small.onnx"
    expand_sigmoid(small, 8)
    sides = sorted({int(s) for s in args.sizes.split(",") if s}
                   | {int(s) for s in args.compare_sizes.split(",") if s})
    compare_sides = {int(s) for s in args.compare_sizes.split(",") if s}
    print(f"{'case':<10} {'output':>10} {'peak rise':>11} {'x output':>9}")
    for side in sides:
        big = tmp / f"big{side}.onnx"
        size = expand_sigmoid(big, side)
        kinds = ["default", "openvino"] + (["compare"] if side in compare_sides else [])
        for kind in kinds:
            rise = run_case(kind, small, big, args.compare_backends if kind == "compare" else "")
            print(f"{kind:<10} {size / 2**20:>7.0f} MiB {rise / 2**20:>7.0f} MiB "
                  f"{rise / size:>8.2f}x  (1x3x{side}x{side})", flush=True)


if __name__ == "__main__":
    main()
