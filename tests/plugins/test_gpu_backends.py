"""The GPU backends as this machine has them (no NVIDIA GPU, no Vulkan GPU): each registered,
each unavailable with its own reason, in the GPU routing order; ncnn's Vulkan device choice."""

from __future__ import annotations

from pathlib import Path

import pytest

import unirt
from unirt.errors import BackendUnavailableError, NoBackendError
from unirt.plugin.backend import OpenOptions
from unirt.plugin.registry import get_registry
from unirt.runtime.router import default_order
from unirt.testing import models as M


def test_gpu_routing_order() -> None:
    assert default_order(get_registry(), "gpu") == ["tensorrt", "onnxruntime-cuda", "ncnn-vulkan"]
    auto = default_order(get_registry(), "auto")
    assert auto[:3] == ["tensorrt", "onnxruntime-cuda", "ncnn-vulkan"]


def test_each_gpu_backend_says_why_not_here() -> None:
    reg = get_registry()
    reasons = {n: reg.backend(n).available() for n in ("tensorrt", "onnxruntime-cuda",
                                                       "ncnn-vulkan")}
    assert all(not a.available and a.reason for a in reasons.values())
    assert "CUDAExecutionProvider" in (reasons["onnxruntime-cuda"].reason or "") or \
        "libcuda" in (reasons["onnxruntime-cuda"].reason or "")
    if reg.backend("ncnn").available().available:
        assert "no Vulkan GPU" in (reasons["ncnn-vulkan"].reason or "")


def test_device_gpu_without_a_gpu_lists_every_reason(tmp_path: Path) -> None:
    path = M.save(M.add(), tmp_path / "a.onnx")
    with pytest.raises(NoBackendError) as err:
        unirt.load(path, device="gpu", verify="never")
    text = str(err.value)
    assert "tensorrt" in text and "onnxruntime-cuda" in text and "ncnn-vulkan" in text


def _ncnn_or_skip(name: str = "ncnn"):
    backend = get_registry().backend(name)
    if not get_registry().backend("ncnn").available().available:
        pytest.skip("ncnn/pnnx not installed")
    return backend


def test_lavapipe_is_not_a_gpu_for_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt_ncnn import _vulkan

    vk = _ncnn_or_skip("ncnn-vulkan")
    monkeypatch.setattr(_vulkan, "devices", lambda: [(0, "llvmpipe (LLVM 17)", True)])
    monkeypatch.setattr(_vulkan, "has_manifest", lambda: True)
    status = vk.available()
    assert not status.available and "CPU-backed Vulkan device" in (status.reason or "")
    assert "llvmpipe" in (status.reason or "")


def test_a_real_vulkan_gpu_makes_ncnn_vulkan_available(monkeypatch: pytest.MonkeyPatch) -> None:
    from unirt_ncnn import _vulkan

    vk = _ncnn_or_skip("ncnn-vulkan")
    monkeypatch.setattr(_vulkan, "devices",
                        lambda: [(0, "llvmpipe", True), (1, "NVIDIA H200", False)])
    monkeypatch.setattr(_vulkan, "has_manifest", lambda: True)
    assert vk.available().devices == ("vulkan:1",)
    assert vk._device(OpenOptions(device="gpu")) == 1  # the GPU, not the CPU-backed device


def test_ncnn_vulkan_on_request_without_a_device_is_unavailable(tmp_path: Path) -> None:
    _ncnn_or_skip()
    path = M.save(M.add(), tmp_path / "a.onnx")
    with pytest.raises(BackendUnavailableError, match="Vulkan device 0 is not available"):
        unirt.load(path, backend="ncnn", verify="never", options={"ncnn": {"device": "vulkan"}})


def test_without_a_vulkan_manifest_ncnn_is_not_even_imported(tmp_path: Path) -> None:
    """ncnn-vulkan is asked on every first load (GPU backends come first): with no Vulkan driver
    manifest anywhere, it answers without importing ncnn (a first load imports one engine)."""
    import subprocess
    import sys

    from unirt_ncnn._vulkan import ICD_DIRS

    if any(Path(d).expanduser().is_dir() for d in ICD_DIRS):
        pytest.skip("this machine has a Vulkan ICD folder")
    code = ("import sys; from unirt.plugin.registry import get_registry; r = get_registry()"
            ".backend('ncnn-vulkan')"
            ".available(); print(r.available, 'ncnn' in sys.modules, r.reason)")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=env).stdout
    assert out.startswith("False False no Vulkan GPU: no Vulkan driver manifest"), out
