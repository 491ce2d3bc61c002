"""The anchor of ``bench_serve.py``: the same ONNX models behind NVIDIA's Triton Inference
Server, through PyTriton (``pip install nvidia-pytriton onnxruntime numpy``), each bound to a raw
``onnxruntime.InferenceSession`` with its defaults. Run by the bench with the interpreter of the
environment PyTriton is installed in (``--pytriton-python``), which need not have unirt: this
file imports neither unirt nor anything of the benchmarks.

    PYTHON _pytriton_anchor.py SPEC.json

SPEC: ``{"instances": N, "batch_timeout_ms": T, "log_file": F, "models": [{"name", "path",
"max_batch"}]}`` (the server's own log goes to F, so stdout carries only the ready line).
A model with ``max_batch`` 1 is bound without batching (Triton's ``max_batch_size`` 0, no
dynamic batcher: one request per call), any other with Triton's dynamic batcher up to that many
rows, waiting at most T for more (PyTriton's ``@batch`` stacks the requests of one call). Each
model gets N instances (Triton runs them at once, as ``unirt serve`` runs N engine threads),
sharing one session. Prints one JSON line on stdout once every model is ready
(``{"http": "127.0.0.1:PORT", "metrics": "127.0.0.1:PORT"}``) and serves until stdin closes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import sysconfig
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _own_libpython() -> None:
    """Triton's Python backend stub links ``libpython3.X.so`` by name, so the dynamic loader
    takes the system's (here Debian's 3.11.2) while the stub reads this interpreter's standard
    library (3.11.7): the two disagree (``'_thread.RLock' object has no attribute
    '_recursion_count'`` when a model loads). The interpreter's own shared library, put first
    on the library path that PyTriton hands the server, makes them one Python again."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _own_libpython()

    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    http, metrics = _free_port(), _free_port()
    config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_port=_free_port(),
                          metrics_port=metrics, allow_gpu_metrics=False, exit_timeout_secs=2,
                          log_file=Path(spec["log_file"]))
    delay_us = int(spec["batch_timeout_ms"] * 1000)
    with Triton(config=config) as triton:
        for m in spec["models"]:
            sess = ort.InferenceSession(m["path"], providers=["CPUExecutionProvider"])
            (i,), (o,) = sess.get_inputs(), sess.get_outputs()
            batching = m["max_batch"] > 1
            skip = 1 if batching else 0

            def infer_rows(sess: Any = sess, i: Any = i, o: Any = o, **inputs: np.ndarray
                           ) -> dict[str, np.ndarray]:
                return {o.name: sess.run([o.name], {i.name: inputs[i.name]})[0]}

            def infer_requests(requests: list[Any], sess: Any = sess, i: Any = i,
                               o: Any = o) -> list[dict[str, np.ndarray]]:
                return [{o.name: sess.run([o.name], {i.name: r[i.name]})[0]} for r in requests]

            fn = batch(infer_rows) if batching else infer_requests
            triton.bind(
                model_name=m["name"], infer_func=[fn] * spec["instances"],
                inputs=[Tensor(name=i.name, dtype=np.float32, shape=_dims(i.shape)[skip:])],
                outputs=[Tensor(name=o.name, dtype=np.float32, shape=_dims(o.shape)[skip:])],
                config=ModelConfig(
                    batching=batching, max_batch_size=m["max_batch"] if batching else 0,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)))
        triton.run()
        print(json.dumps({"http": f"127.0.0.1:{http}", "metrics": f"127.0.0.1:{metrics}"}),
              flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
