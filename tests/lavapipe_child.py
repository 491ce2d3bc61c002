"""What tests/test_ncnn_vulkan.py runs in a child process started with lavapipe's environment.

ncnn reads the Vulkan driver (``VK_ICD_FILENAMES``) and the loader (``libvulkan.so.1``, found
through ``LD_LIBRARY_PATH`` as the process starts) once, at its first GPU query: these functions
only mean something in a process started with that environment, never in the test process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

VULKAN = {"ncnn": {"device": "vulkan"}}


def vulkan_devices() -> list[tuple[int, str, bool]]:
    """(index, name, is_cpu) as the ncnn plugin sees them."""
    import unirt_ncnn

    return unirt_ncnn._vulkan_devices()


def run_model(builder: str, shapes: dict[str, tuple[int, ...]] | None, seed: int,
              precision: str = "exact") -> dict[str, Any]:
    """Open the contract kit's model ``builder`` on ncnn's Vulkan device 0 and run it once."""
    import unirt
    from unirt.evidence.inputs import make_inputs
    from unirt.testing import models as M

    proto = getattr(M, builder)()
    with tempfile.TemporaryDirectory() as tmp:
        path = M.save(proto, Path(tmp) / f"{builder}.onnx")
        start = time.perf_counter()
        with unirt.load(path, backend="ncnn", precision=precision, verify="never",
                        options=VULKAN) as sess:
            feeds = make_inputs(sess.inputs, shapes, seed=seed)
            outputs = sess.run(feeds)
            return {"feeds": feeds, "outputs": outputs, "precision": sess.precision,
                    "details": dict(sess.details), "backend": sess.backend,
                    "seconds": time.perf_counter() - start}


def routing() -> dict[str, Any]:
    """What routing makes of a CPU-backed Vulkan device: ncnn-vulkan's availability, the
    default route of a model, ``device="gpu"``, and ``unirt backends --json``."""
    import json

    from click.testing import CliRunner

    import unirt
    from unirt.cli.main import cli
    from unirt.errors import NoBackendError
    from unirt.plugin.registry import get_registry
    from unirt.testing import models as M

    status = get_registry().backend("ncnn-vulkan").available()
    cpu = get_registry().backend("ncnn").available()
    with tempfile.TemporaryDirectory() as tmp:
        path = M.save(M.add(), Path(tmp) / "add.onnx")
        with unirt.load(path, verify="never") as sess:
            routed = sess.backend
        try:
            unirt.load(path, device="gpu", verify="never").close()
            gpu_error = ""
        except NoBackendError as exc:
            gpu_error = str(exc)
    result = CliRunner().invoke(cli, ["backends", "--json"])
    listed = {b["name"]: b for b in json.loads(result.output)["backends"]}
    table = CliRunner().invoke(cli, ["backends"], terminal_width=400).output
    return {"available": status.available, "reason": status.reason,
            "ncnn_devices": list(cpu.devices), "routed": routed, "gpu_error": gpu_error,
            "listed": listed["ncnn-vulkan"], "table": table}


def fp16_flags(precision: str) -> dict[str, Any]:
    """ncnn's effective fp16/bf16 options on the Vulkan device for ``precision``."""
    out = run_model("conv_net", None, 3, precision)
    return {"precision": out["precision"], "flags": out["details"]["ncnn_options"],
            "outputs": out["outputs"], "feeds": out["feeds"]}
