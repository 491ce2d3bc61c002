"""ONNX Runtime backends: ``onnxruntime`` (CPU, the reference for every numeric check) and
``onnxruntime-cuda``.

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``onnxruntime`` only when availability is asked or a model is opened.

What ONNX Runtime cannot do, and what the backends make of it: the CUDA provider falls back to
the CPU silently when it cannot load (the session is refused instead, naming the provider it
fell back to); StringNormalizer needs a C++ locale the system may lack (a rule refuses the model
where it is missing).

:mod:`._backend` holds the backends, :mod:`._session` the session, :mod:`._binding` the IO
binding of runs on a device.
"""

from __future__ import annotations

from typing import Any

from unirt.plugin import hookimpl

from ._backend import OnnxRuntimeBackend, OnnxRuntimeCudaBackend
from ._session import OrtSession

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeCudaBackend", "OrtSession", "register_backends"]


@hookimpl
def register_backends(register: Any) -> None:
    register(OnnxRuntimeBackend)
    register(OnnxRuntimeCudaBackend)
