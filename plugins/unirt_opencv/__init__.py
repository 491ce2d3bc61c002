"""OpenCV DNN backend: ``opencv`` (``cv2.dnn``; CPU, or CUDA/OpenVINO where the build has them).

A plugin like any third-party one: it registers through the ``register_backends`` hook and
imports ``cv2`` only when availability is asked or a model is opened.

OpenCV 5 has two DNN engines behind one ``Net`` API, the new one (CPU only) and the classic 4.x
one (CUDA, OpenVINO and fp16 targets); which one runs a model is chosen in :mod:`._backend`.
What OpenCV DNN cannot do, each found by running OpenCV 5.0 (see ENGINE_NOTES), and where the
backend handles it:

* It cannot take strings, sequences, maps or optionals, nor bf16, float8, int4 or complex
  inputs through its numpy binding: such models are refused before loading (:mod:`._backend`).
* It returns outputs other than the model declares (``None`` for an empty tensor, raw uint16
  for bf16, narrower dtypes), feeds int64 inputs through 32 bits without a word, dies on a
  zero-size input, and a ``Net`` must not run in two threads at once (:mod:`._session`).
* The classic engine keeps the shapes of its first forward and returns wrong numbers at
  another (:mod:`._session`).
* Some models crash OpenCV on load or forward: that cannot be caught in-process; the core's
  child-process verification covers it.
* Its errors are pages of C++ source locations (:mod:`._errors`).
"""

from __future__ import annotations

from typing import Any

from unirt.plugin import hookimpl

from ._backend import OpenCvBackend
from ._errors import engine_message
from ._session import OpenCvSession

__all__ = ["OpenCvBackend", "OpenCvSession", "engine_message", "register_backends"]


@hookimpl
def register_backends(register: Any) -> None:
    register(OpenCvBackend)
