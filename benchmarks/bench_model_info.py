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

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from unirt.model import read_model


def resnet50_like() -> onnx.ModelProto:
    """ResNet-50's layer structure (bottlenecks 3-4-6-3) with zero weights of the real sizes."""
    nodes, inits = [], []
    count = 0

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
        nonlocal count
        count += 1
        w, b, y = f"w{count}", f"b{count}", f"c{count}"
        inits.append(numpy_helper.from_array(np.zeros((cout, cin, k, k), np.float32), w))
        inits.append(numpy_helper.from_array(np.zeros((cout,), np.float32), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4,
                                      name=f"conv{count}"))
        nodes.append(helper.make_node("Relu", [y], [y + "r"], name=f"relu{count}"))
        return y + "r"

    x = conv("input", 3, 64, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1], name="maxpool"))
    x, cin = "pool", 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for blk in range(blocks):
            stride = 2 if blk == 0 and stage > 0 else 1
            y = conv(x, cin, width, 1)
            y = conv(y, width, width, 3, stride)
            y = conv(y, width, width * 4, 1)
            short = conv(x, cin, width * 4, 1, stride) if blk == 0 else x
            out = f"add{stage}_{blk}"
            nodes.append(helper.make_node("Add", [y, short], [out], name=out))
            x, cin = out, width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    inits.append(numpy_helper.from_array(np.zeros((1000, 2048), np.float32), "fcw"))
    inits.append(numpy_helper.from_array(np.zeros((1000,), np.float32), "fcb"))
    nodes.append(helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["logits"], transB=1,
                                  name="fc"))
    g = helper.make_graph(nodes, "resnet50_like",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                         ["N", 3, 224, 224])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["N", 1000])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


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
