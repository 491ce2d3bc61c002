"""Fake engines that misbehave the way real ones do, loadable in child processes.

Registered through a real entry point (a dist-info written by the ``fake_engines`` fixture in
``tests/conftest.py``), so spawned children that rebuild the plugin registry find them too, or
through ``Registry.register`` as an importable module (``tests/test_evidence.py``), which a
child rebuilds from the registry's spec.
Each delegates to ONNX Runtime for the numbers and differs only in how it fails.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import unirt
from unirt.model.info import ModelInfo, read_model
from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions


class _Delegating(Backend):
    default_rank = 99

    def _available_impl(self) -> Availability:
        return Availability(True, "0.0-test", devices=("cpu",))

    def _rewrite(self, model: ModelInfo) -> ModelInfo:
        return model

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        inner = OnnxRuntimeBackend().open(self._rewrite(model), OpenOptions())
        return _Session(inner, self._before_run)

    def _before_run(self) -> None:
        pass


class _Session(BackendSession):
    def __init__(self, inner: BackendSession, hook: Any) -> None:
        super().__init__()
        self.inner, self.hook = inner, hook

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        self.hook()
        return self.inner.run(feeds, output_names)


class Faithful(_Delegating):
    """Right numbers: ONNX Runtime under another name."""

    name = "fake-faithful"


class Segfaults(_Delegating):
    name = "fake-segfault"

    def _before_run(self) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)


class SegfaultsOnOpen(_Delegating):
    """Dies reading the model, as OpenCV's ONNX reader did on a declared 100000x1e9 input."""

    name = "fake-segfault-open"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        os.kill(os.getpid(), signal.SIGSEGV)
        raise AssertionError("unreachable")


class Fused(_Delegating):
    """Wrong only when the model has its own outputs alone: with intermediate tensors exposed
    as outputs it computes right, as an engine whose fused kernels are skipped then."""

    name = "fake-fused"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        session = super()._open_impl(model, options)
        if len(model.outputs) == 1:
            return _ZerosSession(session)
        return session


class Hangs(_Delegating):
    name = "fake-hang"

    def _before_run(self) -> None:
        time.sleep(3600)


class Approximates(_Delegating):
    """Computes the second Relu of a model as LeakyRelu(0.1): right shapes, wrong numbers from
    that node on, like an engine with a subtly wrong kernel."""

    name = "fake-approx"

    def _rewrite(self, model: ModelInfo) -> ModelInfo:
        import onnx
        from onnx import helper

        proto = onnx.load(model.source()) if model.path else onnx.load_from_string(model.data)
        relus = [n for n in proto.graph.node if n.op_type == "Relu"]
        if len(relus) >= 2:
            node = relus[1]
            node.op_type = "LeakyRelu"
            node.attribute.append(helper.make_attribute("alpha", 0.1))
        return read_model(proto)


def _after_first(model: ModelInfo, wanted: Any, op: str, value: float) -> ModelInfo:
    """``model`` with the output of its first node for which ``wanted(node, elem_type)`` holds
    passed through ``op`` (Mul or Add) with the constant ``value`` of the output's type."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(model.source()) if model.path else onnx.load_from_string(model.data)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        inferred = proto
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    for i, node in enumerate(proto.graph.node):
        out = node.output[0]
        elem = types.get(out, 0)
        if not wanted(node, elem):
            continue
        raw = out + "__fake_raw"
        node.output[0] = raw
        dtype = helper.tensor_dtype_to_np_dtype(elem or onnx.TensorProto.FLOAT)
        const = numpy_helper.from_array(np.array(value, dtype), out + "__fake_c")
        proto.graph.initializer.append(const)
        proto.graph.node.insert(i + 1, helper.make_node(op, [raw, const.name], [out]))
        break
    return read_model(proto)


_INTEGERS = {2, 3, 4, 5, 6, 7, 12, 13}  # uint8, int8, uint16, int16, int32, int64, uint32/64


class WrongSoftmax(_Delegating):
    """Halves the output of the first Softmax: a wrong kernel, wrong alone too."""

    name = "fake-softmax"

    def _rewrite(self, model: ModelInfo) -> ModelInfo:
        return _after_first(model, lambda n, t: n.op_type == "Softmax", "Mul", 0.5)


class WrongIntAdd(_Delegating):
    """Adds 123 to the output of the first integer Add (a quantized model's int32 part going
    wrong before any float tensor does)."""

    name = "fake-intadd"

    def _rewrite(self, model: ModelInfo) -> ModelInfo:
        return _after_first(model, lambda n, t: n.op_type == "Add" and t in _INTEGERS, "Add",
                            123)


class Jitters(_Delegating):
    """Scales the output of the first float Mul by 1 + 2e-6: rounding of another order, well
    within tolerance, that an ill-conditioned node downstream amplifies."""

    name = "fake-jitter"

    def _rewrite(self, model: ModelInfo) -> ModelInfo:
        return _after_first(model, lambda n, t: n.op_type == "Mul" and t == 1, "Mul",
                            1 + 2e-6)


class Picky(_Delegating):
    """Refuses a batch of 1 (a shape limit, as OpenVINO refuses an OCR classifier at height 32)
    and runs every other batch right, before and after a refusal."""

    name = "fake-picky"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return _PickySession(OnnxRuntimeBackend().open(model, OpenOptions()))


class _PickySession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        from unirt.errors import ShapeLimitError

        if any(v.shape[:1] == (1,) for v in feeds.values()):
            raise ShapeLimitError("fake-picky refuses batch 1")
        return self.inner.run(feeds, output_names)


class Poisoned(_Delegating):
    """Refuses a batch of 2 (a shape limit), and is broken by that refusal: every later call
    returns NaN, as OpenVINO 2026.4 did on a real OCR model."""

    name = "fake-poisoned"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return _PoisonedSession(OnnxRuntimeBackend().open(model, OpenOptions()))


class _PoisonedSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner, self.broken = inner, False

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        from unirt.errors import ShapeLimitError

        if any(v.shape[:1] == (2,) for v in feeds.values()):
            self.broken = True
            raise ShapeLimitError("fake-poisoned refuses batch 2")
        outs = self.inner.run(feeds, output_names)
        return [o * float("nan") for o in outs] if self.broken else outs


class Slow(_Delegating):
    """Right numbers, 20 ms late: the engine a background tuner should move away from."""

    name = "fake-slow"

    def _before_run(self) -> None:
        time.sleep(0.02)


class Memoizing(_Delegating):
    """Right numbers, faster than ONNX Runtime on repeated inputs: it returns the outputs of
    the previous call when the inputs are byte-for-byte the same (a timing loop's case), and
    computes them otherwise (every call of a real workload)."""

    name = "fake-fast"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return _MemoSession(OnnxRuntimeBackend().open(model, OpenOptions()))


class _MemoSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner
        self.last: tuple[Any, Any] | None = None
        self.closed = False

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        if self.closed:
            raise RuntimeError("fake-fast: run on a closed session")
        key = (tuple(output_names), tuple((n, a.shape, a.tobytes()) for n, a in feeds.items()))
        last = self.last
        if last is not None and last[0] == key:
            return last[1]
        outs = self.inner.run(feeds, output_names)
        self.last = (key, outs)
        return outs

    def close(self) -> None:
        self.closed = True
        self.inner.close()


class FastWrong(_Delegating):
    """The fastest of all and wrong: zeros of the right shapes, without running anything."""

    name = "fake-fast-wrong"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        from unirt_onnxruntime import OnnxRuntimeBackend

        return _ZerosSession(OnnxRuntimeBackend().open(model, OpenOptions()))


class _ZerosSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner
        self.zeros: dict[Any, Any] = {}

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        import numpy as np

        key = (tuple(output_names), tuple(a.shape for a in feeds.values()))
        if key not in self.zeros:
            self.zeros[key] = [np.zeros_like(o) for o in self.inner.run(feeds, output_names)]
        return self.zeros[key]


class OffScale(_Delegating):
    """Right on inputs around zero (generated N(0,1) values), 0.5 off on every float output
    when an input's mean is above 2 (pixels in 0..255, log-mel features): an engine whose
    error only shows at the application's operating point."""

    name = "fake-offscale"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        return _OffScaleSession(super()._open_impl(model, options))


class _OffScaleSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        import numpy as np

        outs = self.inner.run(feeds, output_names)
        far = any(a.dtype.kind == "f" and a.size and float(np.nanmean(a)) > 2
                  for a in feeds.values())
        return [o + np.asarray(0.5, o.dtype) if far and o.dtype.kind == "f" else o
                for o in outs]


class Fragile(_Delegating):
    """Right at batch 1 and 2, and raises an engine error (not a shape limit) on a larger
    batch: OpenCV's "only 5D block layout is supported" at the first real call of a model it
    opened and ran right at the verification's sizes."""

    name = "fake-fragile"

    def _open_impl(self, model: ModelInfo, options: OpenOptions) -> BackendSession:
        return _FragileSession(super()._open_impl(model, options))


class _FragileSession(BackendSession):
    def __init__(self, inner: BackendSession) -> None:
        super().__init__()
        self.inner = inner

    def run(self, feeds: dict[str, Any], output_names: Any) -> Any:
        if any(v.ndim and v.shape[0] > 2 for v in feeds.values()):
            raise RuntimeError("fake-fragile: only 5D block layout is supported")
        return self.inner.run(feeds, output_names)


@unirt.hookimpl
def register_backends(register: Any) -> None:
    register(Fragile)
    register(OffScale)
    register(Poisoned)
    register(Picky)
    register(Faithful)
    register(Segfaults)
    register(SegfaultsOnOpen)
    register(Fused)
    register(Hangs)
    register(Approximates)
    register(Slow)
    register(Memoizing)
    register(FastWrong)
    register(WrongSoftmax)
    register(WrongIntAdd)
    register(Jitters)
