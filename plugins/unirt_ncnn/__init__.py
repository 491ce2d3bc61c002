"""ncnn backends: ``ncnn`` (Tencent's engine, on the CPU) and ``ncnn-vulkan`` (the same on a
Vulkan GPU), with models converted by pnnx.

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``ncnn`` only when availability is asked or a model is opened.

What ncnn cannot do, each found by running it (see ENGINE_NOTES), and where the backend handles
it:

* It does not read ONNX. The pnnx converter does, in a child process since it can crash or hang
  (:mod:`._pnnx`), at fixed input shapes: a conversion is used only at the shapes it was made at
  (:mod:`._session`).
* It takes float32 inputs only, in Mats of at most 4 dims, one sample at a time: other inputs
  are refused before converting (:mod:`._backend`); a batch runs sample by sample where pnnx
  marks a batch axis (:mod:`._session`).
* Its standard build has no ArgMax/ArgMin layer: such a tail is computed on the host
  (:mod:`._graph`).
* In-place layers write into the memory a Mat was built on, and default options compute in
  fp16/bf16 where the CPU has it (:mod:`._session`).
* A CPU-backed Vulkan driver (lavapipe) is a Vulkan device, not a GPU (:mod:`._vulkan`).
"""

from __future__ import annotations

from typing import Any

from unirt.plugin import hookimpl

from ._backend import INSTALL_HINT, NcnnBackend, NcnnVulkanBackend
from ._session import NcnnSession

# What scripts/gpu_check.sh and the lavapipe test child call to list the Vulkan devices.
from ._vulkan import devices as _vulkan_devices  # noqa: F401

__all__ = ["INSTALL_HINT", "NcnnBackend", "NcnnSession", "NcnnVulkanBackend", "register_backends"]


@hookimpl
def register_backends(register: Any) -> None:
    register(NcnnBackend)
    register(NcnnVulkanBackend)
