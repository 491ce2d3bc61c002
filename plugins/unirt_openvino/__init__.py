"""OpenVINO backend: ``openvino`` (Intel's engine; CPU by default, GPU/NPU/AUTO when present).

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``openvino`` only when availability is asked, a model is queried or a model is opened.

What OpenVINO cannot do, or does unasked, each found by running it (see ENGINE_NOTES), and where
the backend handles it:

* It cannot be fed sequences, optionals or maps, nor return them: such models are refused before
  anything is read (:mod:`._backend`).
* On CPUs with AMX/AVX-512-BF16 it computes in bf16 unless told otherwise, off from ONNX Runtime
  by up to whole units without a warning: ``precision="exact"`` pins f32, and the precision a
  session reports is read back from the compiled model (:mod:`._compile`).
* Its compiled-model cache knows a model by path, size and modification time, and loads a blob
  without checking its content: the cache lives in unirt's artifact cache, one directory per
  model content, each file checked against a signed manifest (:mod:`._compile`).
* An infer request runs one inference at a time and, sharing its outputs, overwrites the last
  results; a run that shape inference refuses spoils the compiled model for later runs (all-NaN
  outputs seen): one request per thread, outputs copied out, the model compiled again after any
  failed run (:mod:`._session`).
* Its errors start with C++ source locations (:mod:`._errors`).
"""

from __future__ import annotations

from typing import Any

from unirt.plugin import hookimpl

from ._backend import OpenVinoBackend
from ._session import OpenVinoSession

__all__ = ["OpenVinoBackend", "OpenVinoSession", "register_backends"]


@hookimpl
def register_backends(register: Any) -> None:
    register(OpenVinoBackend)
