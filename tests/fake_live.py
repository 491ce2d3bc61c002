"""A fake engine for live verification: right on the inputs verification generates, wrong on
the ones an application sends.

Like a quantized model whose sigmoid saturates on N(0,1) inputs: it agrees with ONNX Runtime
while every finite input is small, and scales its outputs by 0.71 (29 % off) once one is above
:data:`THRESHOLD`. Registered through an entry point by the ``saturating_engine`` fixture of
``tests/test_live.py``, so that the children of ``unirt compare`` find it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import unirt
from unirt.model.info import ModelInfo
from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions

#: Inputs up to this (in magnitude) are computed right; N(0,1) inputs of a few values stay below.
THRESHOLD = 4.0
#: The factor applied to every output beyond it.
FACTOR = 0.71


class Saturating(Backend):
    name = "fake-saturating"
    default_rank = 99

    def _available_impl(self) -> Availability:
        return Availability(True, "0.0-test", devices=("cpu",))

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return _SaturatingSession(OnnxRuntimeBackend().open(model, OpenOptions()))


def _large(value: Any) -> bool:
    a = np.asarray(value)
    if a.dtype.kind != "f" or not a.size:
        return False
    return bool(np.abs(np.where(np.isfinite(a), a, 0)).max() > THRESHOLD)


class _SaturatingSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        outs = self.inner.run(feeds, output_names)
        if any(_large(v) for v in feeds.values()):
            return [np.asarray(o) * np.asarray(FACTOR, dtype=np.asarray(o).dtype) for o in outs]
        return outs

    def close(self) -> None:
        self.inner.close()


@unirt.hookimpl
def register_backends(register: Any) -> None:
    register(Saturating)
