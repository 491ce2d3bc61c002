"""Running a loaded ``cv2.dnn.Net``: feeds checked, one forward at a time behind a lock, a Net per
input shape for the classic engine on a dynamic model, and outputs conformed to what the model
declares.

OpenCV's outputs are not always what the model declares: ``None`` for an empty tensor, float32
for a float16 output, int32 for int64 (classic engine), raw uint16 for bf16. Outputs are
forwarded by their ONNX names and conformed to the declared shape and dtype
(:mod:`unirt.plugin.conform`), or refused with a clear error. int64/uint64 inputs are narrowed
to 32 bits when fed, and values outside the int32 range come back wrapped without an error, so
each run checks their range. The new engine dies with SIGFPE on a zero-size input (a batch of
0), so empty feeds are refused before they reach it. A ``Net`` must not run in two threads at
once, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from unirt.plugin import BackendError, BackendSession, ModelInfo

from ._errors import engine_message

#: Inputs fed through 32 bits: OpenCV wraps values outside the int32 range without an error.
_NARROWED = frozenset({"int64", "uint64"})
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class OpenCvSession(BackendSession):
    """A loaded ``cv2.dnn.Net`` behind a lock (a ``Net`` runs one forward at a time)."""

    def __init__(self, net: Any, model: ModelInfo, forward_names: Sequence[str],
                 cv_error: type[BaseException], reload: Any = None) -> None:
        from unirt.plugin import conform

        super().__init__()
        self._conform = conform
        self._net = net
        # The classic engine keeps the shapes of its first forward: fed another input shape it
        # returns wrong numbers without an error (measured: off by ~1.7 on resnet_like at batch
        # 2 after batch 1, and still off back at batch 1). So with the classic engine and a
        # dynamic model, each input-shape signature gets a Net of its own, read by ``reload``.
        self._reload = reload
        self._nets: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()
        self._label = model.name
        self._cv_error = cv_error
        self._forward_names = list(forward_names)  # the net's names, in model output order
        self._outputs = model.outputs
        self._index = {t.name: i for i, t in enumerate(model.outputs)}
        # The shape an output must have to be returned untouched (fully static ones only).
        self._static = [t.shape if t.shape is not None and not t.is_dynamic else None
                        for t in model.outputs]
        self._narrowed = tuple(t.name for t in model.inputs
                               if t.dtype is not None and t.dtype.name in _NARROWED)
        # Where the feeds say what a symbolic dim is, for dynamic or empty outputs.
        self._symbols = tuple((t.name, axis, d) for t in model.inputs for axis, d in
                              enumerate(t.shape or ()) if isinstance(d, str))

    def _check_feeds(self, feeds: Mapping[str, Any]) -> None:
        for name, value in feeds.items():
            if getattr(value, "size", 1) == 0:
                raise BackendError(
                    f"opencv cannot run {self._label} on the empty input {name!r} (shape "
                    f"{list(value.shape)}): OpenCV DNN fails or crashes on zero-size tensors")
        for name in self._narrowed:
            value = feeds[name]
            lo, hi = value.min(), value.max()
            if lo < _INT32_MIN or hi > _INT32_MAX:
                raise BackendError(
                    f"opencv cannot run {self._label}: input {name!r} has {value.dtype} values "
                    f"outside the int32 range ({lo}..{hi}), which OpenCV DNN would wrap "
                    f"silently (it feeds 64-bit integers through 32 bits)")

    def _bind(self, feeds: Mapping[str, Any]) -> dict[str, int]:
        dims: dict[str, int] = {}
        for name, axis, symbol in self._symbols:
            shape = getattr(feeds.get(name), "shape", ())
            if axis < len(shape):
                dims.setdefault(symbol, int(shape[axis]))
        return dims

    def _net_for(self, feeds: Mapping[str, Any]) -> Any:
        """The Net for this input-shape signature (classic engine, dynamic model): the first
        signature uses the Net that was opened, each new one reads the model again."""
        sig = tuple((name, getattr(value, "shape", None)) for name, value in sorted(
            feeds.items()))
        if not self._nets:
            self._nets[sig] = self._net
        net = self._nets.get(sig)
        if net is None:
            try:
                net = self._nets[sig] = self._reload()
            except self._cv_error as exc:
                raise BackendError(f"opencv could not reload {self._label} for a new input "
                                   f"shape: {engine_message(exc)}") from exc
            self.details["nets_per_shape"] = len(self._nets)
        return net

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        self._check_feeds(feeds)
        with self._lock:
            net = self._net
            if net is None:
                raise BackendError(f"opencv: the session for {self._label} is closed")
            if self._reload is not None:
                net = self._net_for(feeds)
            try:
                for name, value in feeds.items():
                    net.setInput(value, name)
                results = net.forward(self._forward_names)
            except self._cv_error as exc:
                raise BackendError(f"opencv failed running {self._label}: "
                                   f"{engine_message(exc)}") from exc
        if len(results) != len(self._forward_names):
            raise BackendError(f"opencv returned {len(results)} outputs for {self._label}, "
                               f"which declares {len(self._forward_names)}")
        dims: dict[str, int] | None = None
        out = []
        for name in output_names:
            i = self._index[name]
            value, info = results[i], self._outputs[i]
            if (value is not None and value.dtype == info.dtype
                    and value.shape == self._static[i]):
                out.append(value)
                continue
            if dims is None:
                dims = self._bind(feeds)
            out.append(self._conform(value, info, dims,
                                     f"opencv: {self._label} output {name!r}"))
        return out

    def close(self) -> None:
        with self._lock:
            self._net = None
            self._nets.clear()
