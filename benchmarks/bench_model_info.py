"""How long reading a model into a ModelInfo takes (the budget: <= 50 ms for a ResNet-50-size
model, <= 1 s for a 10,000-node graph), and what the lazy per-node types cost on top.

    python benchmarks/bench_model_info.py [--repeat 5]

Models are built with onnx.helper (no torch): a ResNet-50-shaped network (53 convolutions,
~25 M float32 weights, ~100 MB) and a 10,000-node chain of elementwise ops.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from unirt.model.info import read_model
from unirt.testing.models import resnet50_sized as resnet50_like


def chain(n: int = 10_000) -> onnx.ModelProto:
    ops = ["Relu", "Neg", "Abs", "Sigmoid"]
    nodes = [helper.make_node(ops[i % 4], [f"t{i}"], [f"t{i + 1}"], name=f"n{i}")
             for i in range(n)]
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 16])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def bench(label: str, path: Path, repeat: int, budget_ms: float) -> dict[str, float]:
    read, types = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        info = read_model(path)
        t1 = time.perf_counter()
        _ = info.value_types
        t2 = time.perf_counter()
        read.append((t1 - t0) * 1e3)
        types.append((t2 - t1) * 1e3)
    med = statistics.median(read)
    verdict = "ok" if med <= budget_ms else "OVER BUDGET"
    print(f"{label}: {path.stat().st_size / 1e6:.1f} MB, {len(info.nodes)} nodes: read_model "
          f"median {med:.1f} ms (budget {budget_ms:.0f} ms: {verdict}); lazy node types "
          f"+{statistics.median(types):.1f} ms")
    return {"read_ms": med, "types_ms": statistics.median(types)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        r50 = Path(d) / "resnet50_like.onnx"
        onnx.save(resnet50_like(), str(r50))
        ch = Path(d) / "chain10k.onnx"
        onnx.save(chain(), str(ch))
        bench("ResNet-50-size", r50, args.repeat, 50)
        bench("10,000-node chain", ch, args.repeat, 1000)


if __name__ == "__main__":
    main()
