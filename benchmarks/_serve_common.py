"""What the serving benchmarks share (``bench_serve.py``, ``bench_serve_ray.py``): the models
built in code, starting ``unirt serve`` in a child process, and the client side (Triton's own
HTTP client, one connection per client thread), so every server is timed by the same code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One model as a client sees it: the name it is served under, its one input and output,
    and the one row every request sends."""

    model: str
    input: str
    output: str
    x: np.ndarray

    def named(self, model: str) -> Target:
        return Target(model, self.input, self.output, self.x)


def tiny_model(path: Path) -> Path:
    """x[N,4] @ W: an engine call of microseconds, so what is timed is the server."""
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


def dense_model(path: Path, width: int = 1024, layers: int = 4) -> Path:
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


def start_unirt(config: Path, cache: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``unirt serve --config CONFIG --port 0 --backend onnxruntime EXTRA...`` in a child
    process; returns it and its host:port once it says it is ready."""
    env = {**os.environ, "UNIRT_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "unirt.cli", "serve", "--config",
    str(config),
                             "--port", "0", "--backend", "onnxruntime", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    for line in proc.stderr:
        found = re.search(r"ready on http://([0-9.]+:\d+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the server did not start")


def request(client: httpclient.InferenceServerClient, target: Target, binary: bool = True,
            x: np.ndarray | None = None) -> None:
    x = target.x if x is None else x
    inp = httpclient.InferInput(target.input, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput(target.output, binary_data=binary)
    client.infer(target.model, [inp], outputs=[out])


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (seconds), in milliseconds."""
    return float(np.percentile(values, q)) * 1e3


def load(url: str, target: Target, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads, each with its own connection, sending one row per request back to
    back for ``seconds``: requests/s over all of them, and p50/p99 latency."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds
    go = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        client = httpclient.InferenceServerClient(url, connection_timeout=120,
                                                  network_timeout=120)
        go.wait()
        try:
            while time.monotonic() < stop:
                start = time.perf_counter()
                request(client, target)
                latencies[i].append(time.perf_counter() - start)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    go.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    flat = [v for lat in latencies for v in lat]
    return {"requests_per_s": len(flat) / elapsed, "p50_ms": pct(flat, 50),
            "p99_ms": pct(flat, 99)}
