"""TensorRT backend: ``tensorrt`` (NVIDIA's engine builder and runtime, on a CUDA GPU).

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``tensorrt`` and cuda-python only when availability is asked or a model is opened.
Written against TensorRT's documented Python API (10.x and 11.x) and cuda-python, and tested
with a test double of both (``tests/fake_tensorrt``): it has not yet run on real TensorRT
hardware in unirt's workplace (see the README).

What TensorRT cannot do, and where the backend handles it:

* It runs only on an NVIDIA GPU: where the library, cuda-python or a device is missing the
  backend is unavailable, with the reason (:mod:`._backend`).
* An engine runs only at the input shapes of the optimization profiles it was built with, and
  only on the TensorRT version and GPU it was built on: engines are built per shape range
  (:mod:`._profiles`) and cached per version and GPU (:mod:`._session`).
* Building takes minutes on a real model, and the parser and builder run native code on a model
  not yet known to be safe: they run in a child process with a timeout (:mod:`._build`).
* 11.x has no FP16/BF16 builder flags (every network is strongly typed): reduced precision there
  means a model converted to fp16 (:mod:`._build`).
* It takes and gives tensors of numbers only; an output whose shape depends on the data needs an
  output allocator, which this backend does not have (:mod:`._backend`, :mod:`._runtime`).

Device memory and streams are :mod:`._cuda`; running one engine is :mod:`._runtime`.
"""

from __future__ import annotations

from typing import Any

from unirt.plugin import hookimpl

from ._backend import TensorRtBackend
from ._session import TensorRtSession

__all__ = ["TensorRtBackend", "TensorRtSession", "describe_parse_errors", "register_backends"]


@hookimpl
def register_backends(register: Any) -> None:
    register(TensorRtBackend)


def __getattr__(name: str) -> Any:
    # The builder's module is imported on first use: listing backends must not pay for it.
    if name == "describe_parse_errors":
        from ._build import describe_parse_errors

        return describe_parse_errors
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
