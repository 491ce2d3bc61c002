"""Small fake backend plugins for routing and plugin tests (never used in a user path).

Each wraps the real ONNX Runtime backend where it must run something, so a "working" fake gives
real numbers; the fakes differ only in how they fail.
"""

from __future__ import annotations

from typing import Any

import unirt
from unirt.model.info import ModelInfo
from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions


class _OrtBacked(Backend):
    device_class = "cpu"

    def _available_impl(self) -> Availability:
        return Availability(True, "0.0-test", devices=("cpu",))

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend().open(model, OpenOptions())


class Working(_OrtBacked):
    name = "fake-working"
    default_rank = 90


class Unavailable(_OrtBacked):
    name = "fake-unavailable"
    default_rank = 10
    install_hint = "pip install fake-engine"

    def _available_impl(self) -> Availability:
        return Availability(False, reason="libfake.so not found")


class RaisesOnOpen(_OrtBacked):
    name = "fake-raises"
    default_rank = 20

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        raise RuntimeError("engine exploded\nsecond line of noise")


class ImportFails(_OrtBacked):
    name = "fake-import-fails"
    default_rank = 30

    def _available_impl(self) -> Availability:
        import fake_engine_that_does_not_exist  # noqa: F401

        raise AssertionError("unreachable")


class FakeGpu(_OrtBacked):
    name = "fake-gpu"
    device_class = "gpu"
    default_rank = 5

    def _available_impl(self) -> Availability:
        return Availability(False, reason="no GPU")


class FakePlugin:
    """A plugin object registering the given backend classes."""

    def __init__(self, *classes: type[Backend]) -> None:
        self.classes = classes

    @unirt.hookimpl
    def register_backends(self, register: Any) -> None:
        for cls in self.classes:
            register(cls)


class BatchOne(_OrtBacked):
    """Runs only batch 1 (a static engine): larger batches raise ShapeLimitError at run."""

    name = "fake-batch-one"
    default_rank = 1

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        inner = super()._open_impl(model, options)
        return _BatchOneSession(inner)


class _BatchOneSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner
        self.closed = False

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        from unirt.errors import ShapeLimitError

        for name, arr in feeds.items():
            if arr.shape and arr.shape[0] != 1:
                raise ShapeLimitError(f"fake-batch-one runs batch 1 only, {name} has "
                                      f"batch {arr.shape[0]}")
        return self.inner.run(feeds, output_names)

    def close(self) -> None:
        self.closed = True


class RejectsMul(_OrtBacked):
    """A backend whose rules refuse the Mul op (the capability verdict says UNSUPPORTED)."""

    name = "fake-rejects-mul"
    default_rank = 2

    def _rules_impl(self, model: ModelInfo) -> list[Any]:
        from unirt.capability.verdict import Reason

        return [Reason("this engine has no Mul kernel", "op", n.name, n.op_type)
                for n in model.nodes if n.op_type == "Mul"]
