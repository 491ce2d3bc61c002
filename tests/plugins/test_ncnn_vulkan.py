"""ncnn's Vulkan path on Mesa's software driver (lavapipe): the contract kit's models within the
exact tolerance against onnxruntime, fp16 kept off in exact mode, and a CPU-backed Vulkan device
never taken for a GPU by routing.

lavapipe comes from scripts/lavapipe.sh (scripts/test.sh runs it, best effort): without it these
tests skip with the reason. Its environment is given to child processes only (a Worker's
``env``): ncnn reads the Vulkan driver once per process, and the rest of the suite must keep
seeing a machine without Vulkan.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import lavapipe_child as C
from unirt.process.child import call_plain
from unirt.process.isolation import Worker
from unirt.testing import models as M
from unirt.testing.contract import assert_close

REPO = Path(__file__).resolve().parents[2]


def lavapipe_env() -> dict[str, str] | str:
    """The environment scripts/lavapipe.sh wrote, or why there is none."""
    path = Path(os.environ.get("UNIRT_LAVAPIPE_ENV") or REPO / ".cache" / "lavapipe" / "env")
    if not path.is_file():
        return os.environ.get("UNIRT_LAVAPIPE_SKIP") or (
            f"no lavapipe here ({path} is missing): run scripts/lavapipe.sh (Debian/Ubuntu)")
    env = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    if not Path(env.get("VK_ICD_FILENAMES", "")).is_file():
        return f"{path} names no ICD manifest that exists: run scripts/lavapipe.sh again"
    if os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] += os.pathsep + os.environ["LD_LIBRARY_PATH"]
    return env


@pytest.fixture(scope="module")
def vulkan() -> Iterator[Worker]:
    """A child process that sees lavapipe as ncnn's Vulkan device 0."""
    import importlib.util

    if importlib.util.find_spec("ncnn") is None:
        pytest.skip("ncnn is not installed")
    env = lavapipe_env()
    if isinstance(env, str):
        pytest.skip(env)
    with Worker(env=env) as worker:
        yield worker


def call(worker: Worker, fn: Any, *args: Any) -> Any:
    out = worker.call(call_plain, fn, *args, timeout=180)
    assert out.ok, f"{out.describe()}\n{out.traceback or out.output_tail or ''}"
    return out.value


def onnxruntime_reference(proto: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def test_the_suite_itself_does_not_see_lavapipe() -> None:
    """The environment is the children's alone (the other tests expect no Vulkan here)."""
    env = lavapipe_env()
    if isinstance(env, dict):
        assert os.environ.get("VK_ICD_FILENAMES") != env["VK_ICD_FILENAMES"]


def test_lavapipe_is_one_cpu_backed_vulkan_device(vulkan: Worker) -> None:
    devices = call(vulkan, C.vulkan_devices)
    assert len(devices) == 1
    index, name, is_cpu = devices[0]
    assert index == 0 and "llvmpipe" in name and is_cpu


CASES = [("add", None), ("tiny", None), ("conv_net", None), ("multi_io", None),
         ("dynamic_batch", {"x": (1, 8)}), ("dynamic_batch", {"x": (3, 8)}),
         ("baked_reshape", {"x": (1, 32)})]


@pytest.mark.parametrize("builder, shapes", CASES,
                         ids=[f"{b}-{'x'.join(map(str, s['x'])) if s else 'static'}"
                              for b, s in CASES])
def test_contract_models_match_onnxruntime(vulkan: Worker, builder: str,
                                           shapes: dict[str, tuple[int, ...]] | None) -> None:
    out = call(vulkan, C.run_model, builder, shapes, 3)
    assert out["backend"] == "ncnn" and out["details"]["device"] == "vulkan:0"
    assert out["precision"] == "fp32"
    assert_close(out["outputs"], onnxruntime_reference(getattr(M, builder)(), out["feeds"]))


def test_int64_inputs_are_refused_as_on_the_cpu(vulkan: Worker) -> None:
    got = vulkan.call(call_plain, C.run_model, "int_inputs", {"ids": (1, 3)}, 3, timeout=180)
    assert got.status == "error" and got.error_type == "BackendError"
    assert "ncnn" in (got.error or "") and "int64" in (got.error or "")


def test_exact_keeps_fp16_off_and_fast_turns_it_on(vulkan: Worker) -> None:
    exact = call(vulkan, C.fp16_flags, "exact")
    assert exact["precision"] == "fp32"
    assert not any(v for k, v in exact["flags"].items() if k.startswith("use_"))
    # lavapipe offers fp16 storage and arithmetic: fast mode takes them, so the switch matters.
    fast = call(vulkan, C.fp16_flags, "fast")
    assert fast["precision"] == "fp16" and fast["flags"]["use_fp16_storage"]
    ref = onnxruntime_reference(M.conv_net(), fast["feeds"])
    np.testing.assert_allclose(fast["outputs"]["probs"], ref["probs"], atol=1e-2)


def test_lavapipe_never_counts_as_a_gpu_for_routing(vulkan: Worker) -> None:
    got = call(vulkan, C.routing)
    assert not got["available"]
    assert "a CPU-backed Vulkan device" in got["reason"] and "is not a GPU" in got["reason"]
    assert "llvmpipe" in got["reason"]
    assert "vulkan:0" in got["ncnn_devices"]  # usable on request through backend='ncnn'
    assert got["routed"] != "ncnn-vulkan"
    assert "ncnn-vulkan" in got["gpu_error"] and "is not a GPU" in got["gpu_error"]
    assert got["listed"]["reason"] == got["reason"] and not got["listed"]["available"]
    assert "ncnn-vulkan" in got["table"] and "a CPU-backed Vulkan device" in got["table"]
