"""What ``unirt serve`` costs over a direct ``Session.run``, and what dynamic batching buys.

One run, side by side:

1. Per-request overhead on a tiny model (x[N,4] @ W + b), one client, Triton's own HTTP client
   (``tritonclient[http]``): p50/p99 of a direct ``Session.run``, of the server in the binary
   tensor form and in the JSON form, interleaved round by round so machine noise hits all alike.
2. Throughput (requests/s) and p50/p99 latency with 1, 8 and 32 concurrent clients (threads,
   one connection each, one row per request), with batching off and on, on the tiny model and
   on a ResNet-class model (``unirt.testing.models.resnet_like``, 3x112x112). The same server
   serves the model twice, under two names (``--max-batch 1`` and batching on), and the two
   alternate at every client count. A dense model (4 MatMul+Relu of 1024x1024, weight-bound at
   batch 1) shows the kind of model batching is for on a CPU.

    python benchmarks/bench_serve.py [--seconds 3] [--rounds 5] [--json]

Targets (issue #16): binary-form overhead p50 <= 1 ms on the tiny model; batching >= 1.5x the
throughput without it at 32 clients on the ResNet-class model. The clients share the machine
with the server (2 cores here): the figures are the whole system's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

import unirt
from unirt.testing import models

ROOT = Path(__file__).resolve().parent.parent


def _tiny(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _dense(path: Path, width: int = 1024, layers: int = 4) -> Path:
    """x[N,width] through ``layers`` MatMul+Relu: weight-bound at batch 1, so it batches well."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"h{i}"]),
                  helper.make_node("Relu", [f"h{i}"], ["y" if i == layers - 1 else f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _start(config: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "UNIRT_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "unirt.cli", "serve", "--config", str(config),
                             "--port", "0", "--backend", "onnxruntime"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        found = re.search(r"ready on http://([0-9.]+:\d+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the server did not start")


def _request(client: httpclient.InferenceServerClient, model: str, x: np.ndarray,
             binary: bool) -> None:
    resnet = model.startswith("resnet")
    inp = httpclient.InferInput("input" if resnet else "x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("logits" if resnet else "y", binary_data=binary)
    client.infer(model, [inp], outputs=[out])


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1e3


def overhead(url: str, tiny: Path, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    sess = unirt.load(tiny, backend="onnxruntime")
    client = httpclient.InferenceServerClient(url)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    kinds = {
        "direct Session.run": lambda: sess.run({"x": x}),
        "serve, binary form": lambda: _request(client, "tiny_nobatch", x, True),
        "serve, JSON form": lambda: _request(client, "tiny_nobatch", x, False),
        "serve, binary, batching on": lambda: _request(client, "tiny", x, True),
    }
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for fn in kinds.values():
        for _ in range(50):
            fn()
    for r in range(rounds):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for k in order:
            fn = kinds[k]
            for _ in range(calls):
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    base = statistics.median(times["direct Session.run"])
    return {k: {"p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99),
                "overhead_p50_ms": (statistics.median(v) - base) * 1e3}
            for k, v in times.items()}


def load(url: str, model: str, x: np.ndarray, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds
    go = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
        go.wait()
        while time.monotonic() < stop:
            start = time.perf_counter()
            _request(client, model, x, True)
            latencies[i].append(time.perf_counter() - start)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    flat = [v for lat in latencies for v in lat]
    return {"requests_per_s": len(flat) / elapsed, "p50_ms": _pct(flat, 50),
            "p99_ms": _pct(flat, 99)}


def _batch_stats(url: str) -> dict[str, tuple[float, float]]:
    import urllib.request

    text = urllib.request.urlopen(f"http://{url}/metrics").read().decode()
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = re.match(r'unirt_batch_size_(sum|count)\{.*model="([^"]+)"\} (\S+)', line)
        if m:
            out.setdefault(m.group(2), [0.0, 0.0])[m.group(1) == "count"] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per throughput cell")
    ap.add_argument("--rounds", type=int, default=5, help="overhead rounds")
    ap.add_argument("--calls", type=int, default=200, help="overhead calls per round and kind")
    ap.add_argument("--size", type=int, default=112, help="ResNet-class input size")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-timeout-ms", type=float, default=0.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        tiny = _tiny(d / "tiny.onnx")
        paths = {"tiny": tiny, "dense": _dense(d / "dense.onnx"),
                 "resnet": models.save(models.resnet_like(batch="N", size=args.size),
                                       d / "resnet.onnx")}
        cfg = d / "serve.toml"
        text = f"[server]\nbatch_timeout_ms = {args.batch_timeout_ms}\n"
        for name, path in paths.items():
            text += (f'[[models]]\npath = "{path}"\nname = "{name}_nobatch"\nmax_batch = 1\n'
                     f'[[models]]\npath = "{path}"\nname = "{name}"\n'
                     f"max_batch = {args.max_batch}\n")
        cfg.write_text(text)
        proc, url = _start(cfg, d / "cache")
        try:
            report: dict[str, object] = {
                "machine": f"{os.cpu_count()} cores", "max_batch": args.max_batch,
                "batch_timeout_ms": args.batch_timeout_ms, "resnet_input": args.size,
                "overhead": overhead(url, tiny, args.rounds, args.calls)}
            rng = np.random.default_rng(1)
            inputs = {"tiny": rng.standard_normal((1, 4)).astype(np.float32),
                      "dense": rng.standard_normal((1, 1024)).astype(np.float32),
                      "resnet": rng.standard_normal((1, 3, args.size, args.size)
                                                    ).astype(np.float32)}
            rows = []
            for model, x in inputs.items():
                load(url, model, x, 8, 1.0)  # warm both
                load(url, model + "_nobatch", x, 8, 1.0)
                for clients in (1, 8, 32):
                    before = _batch_stats(url)
                    off = load(url, model + "_nobatch", x, clients, args.seconds)
                    batched = load(url, model, x, clients, args.seconds)
                    after = _batch_stats(url)
                    s0, c0 = before.get(model, (0.0, 0.0))
                    s1, c1 = after.get(model, (0.0, 0.0))
                    rows.append({"model": model, "clients": clients, "off": off,
                                 "on": batched, "speedup": batched["requests_per_s"]
                                 / off["requests_per_s"],
                                 "mean_batch": (s1 - s0) / max(c1 - c0, 1.0)})
            report["throughput"] = rows
        finally:
            proc.terminate()
            proc.wait(60)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"machine: {report['machine']}; batching on = max_batch {args.max_batch}, "
          f"timeout {args.batch_timeout_ms} ms")
    print("\nper-request time, tiny model, one client (ms)")
    print(f"{'':32} {'p50':>8} {'p99':>8} {'+p50 vs direct':>15}")
    for k, v in report["overhead"].items():  # type: ignore[attr-defined]
        print(f"{k:32} {v['p50_ms']:8.3f} {v['p99_ms']:8.3f} {v['overhead_p50_ms']:15.3f}")
    print("\nthroughput, binary form, 1 row per request")
    print(f"{'model':8} {'clients':>7} {'off req/s':>10} {'off p50':>8} {'on req/s':>10} "
          f"{'on p50':>8} {'speedup':>8} {'rows/call':>9}")
    for r in rows:
        print(f"{r['model']:8} {r['clients']:7d} {r['off']['requests_per_s']:10.0f} "
              f"{r['off']['p50_ms']:8.2f} {r['on']['requests_per_s']:10.0f} "
              f"{r['on']['p50_ms']:8.2f} {r['speedup']:8.2f} {r['mean_batch']:9.1f}")


if __name__ == "__main__":
    main()
