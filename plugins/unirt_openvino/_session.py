"""Running a compiled OpenVINO model: one infer request per calling thread, outputs copied out
and converted to the declared dtypes, and a compiled model replaced after a run that raised.

Thread safety. An ``InferRequest`` runs one inference at a time; one ``CompiledModel`` may serve
many. Each thread gets its own request (``threading.local``), created on its first run, so
concurrent ``Session.run`` calls never share a request and never wait on a lock of ours.

Reused output buffers. With ``share_outputs=True`` an infer request hands out views of its own
output tensors, which the next run overwrites in place: a caller's earlier results would change
under them. Outputs are always copied out (``share_outputs=False``), so callers own them.

A refused run poisons the compiled model. When the CPU plugin's shape inference refuses an
input shape (an AvgPool kernel larger than the feature map at a small image height: the PP-OCR
recognizer at height 32), the compiled model keeps the dims of the refused call: the next call
at a shape that ran fine before is refused with the old dims in the message (every time, even
on a one-node graph), and on the PP-OCR recognizer a good shape after a refused one returned
all-NaN in about half of fresh processes (2026.4.1). The state lives in the compiled model, not
the request: a fresh ``InferRequest`` still returns NaN; compiling again is clean every time.
So after any engine error from a run the session compiles the model again (from OpenVINO's
cache: tens of milliseconds) and every thread takes a fresh request on the new one. A refusal
raised by shape inference is a :class:`~unirt.errors.ShapeLimitError`, so a Session re-routes
that shape to another engine instead of failing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from unirt.plugin import BackendError, BackendSession, ModelInfo, ShapeLimitError

from ._errors import engine_message

logger = logging.getLogger("unirt")


class OpenVinoSession(BackendSession):
    """A compiled model plus one infer request per calling thread."""

    def __init__(self, compiled: Any, model: ModelInfo, label: str,
                 reopen: Callable[[Any], Any] | None = None) -> None:
        super().__init__()
        self._compiled = compiled
        self._label = label
        # Makes a new compiled model from the old one: a run that raised leaves the compiled
        # model in a state that can spoil later runs (see the module docstring), so it is
        # replaced, not reused.
        self._reopen = reopen
        # Bumped each time the compiled model is replaced; a thread's request carries the
        # generation it was made in and is dropped once that is not the current one.
        self._generation = 0
        self._lock = threading.Lock()
        #: How many times a run's error made the session compile the model again.
        self.reopened = 0
        self._local = threading.local()
        ports = list(compiled.outputs)
        by_name: dict[str, int] = {}
        for i, port in enumerate(ports):
            for name in port.get_names():
                by_name.setdefault(name, i)
        # ONNX output name -> (index among the compiled outputs, dtype to convert to or None).
        # OpenVINO keeps the declared element types for ONNX models as far as seen, but a device
        # may narrow one (i64 -> i32, f16 -> f32); the caller must get what the model declares.
        self._where: dict[str, tuple[int, Any]] = {}
        for position, info in enumerate(model.outputs):
            index = by_name.get(info.name, position)
            if index >= len(ports):
                raise BackendError(f"openvino: {model.name} output {info.name!r} has no match "
                                   f"among the compiled outputs")
            got = _numpy_dtype(ports[index].get_element_type())
            want = info.dtype if info.dtype is not None and got != info.dtype else None
            self._where[info.name] = (index, want)
        self._all_names = tuple(t.name for t in model.outputs)
        # The fast path: every output asked for, in model order, at the position and dtype the
        # engine already gives. Then run returns the engine's tuple as it is.
        self._identity = all(self._where[n] == (i, None) for i, n in enumerate(self._all_names))
        # Inputs the ONNX frontend dropped (unused by any node) must not be fed to the request.
        # ONNX input name -> the compiled input port it feeds, or None for an input the ONNX
        # frontend dropped (read by no node). Ports are matched by tensor name first; a port
        # that lost its name (a pass-through graph, Parameter -> Result, is named after the
        # output) is matched by position when the frontend kept every input. Dropping such an
        # input instead would leave the port unset and return uninitialised memory (measured:
        # values of 1e33 for a lone Dropout).
        ports = [set(port.get_names()) for port in compiled.inputs]
        keys: dict[str, int | None] = {}
        for t in model.inputs:
            keys[t.name] = next((i for i, names in enumerate(ports) if t.name in names), None)
        unmatched = [i for i in range(len(ports)) if i not in keys.values()]
        if len(ports) == len(model.inputs):
            for t in model.inputs:
                if keys[t.name] is None:
                    keys[t.name] = unmatched.pop(0)
        self._unused_inputs = frozenset(n for n, k in keys.items() if k is None)
        named = all(k is None or t.name in ports[k]
                    for t, k in zip(model.inputs, keys.values()))
        # Feed by port index unless every used input is found under its own name (fast path).
        self._feed_keys: dict[str, int] | None = None if named else {
            n: k for n, k in keys.items() if k is not None}

    def _request(self) -> tuple[int, Any]:
        """A new infer request for this thread, on the current compiled model."""
        with self._lock:
            if self._compiled is None:
                if self._reopen is None:
                    raise BackendError(f"openvino: the session for {self._label} is closed")
                try:  # the last run's error dropped the compiled model and compiling failed then
                    self._compiled = self._reopen(None)
                except RuntimeError as exc:
                    raise BackendError(f"openvino could not compile {self._label} again: "
                                       f"{engine_message(exc)}") from exc
            slot = (self._generation, self._compiled.create_infer_request().infer)
        self._local.slot = slot
        return slot

    def _discard(self, generation: int) -> None:
        """After a run raised: replace the compiled model (once, however many threads saw it
        fail) so that no later run, on any thread, uses the one the failed run left behind."""
        with self._lock:
            if generation != self._generation or self._compiled is None:
                return  # another thread already replaced it (or the session is closed)
            self._generation += 1
            self.reopened += 1
            old, self._compiled = self._compiled, None
            if self._reopen is None:
                self._compiled = old  # nothing to compile from: fresh requests are all there is
                return
            try:
                self._compiled = self._reopen(old)
            except RuntimeError as exc:  # tried again by the next run, which reports it
                logger.debug("openvino: compiling %s again failed: %s", self._label,
                             engine_message(exc))
        logger.debug("openvino: %s compiled again after a failed run", self._label)

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> Sequence[Any]:
        try:
            generation, infer = self._local.slot
            if generation != self._generation:
                generation, infer = self._request()
        except AttributeError:
            generation, infer = self._request()
        if self._feed_keys is not None:
            ports_of = self._feed_keys
            by_port: dict[Any, Any] = {ports_of[k]: v for k, v in feeds.items() if k in ports_of}
            feeds = by_port
        elif self._unused_inputs:
            feeds = {k: v for k, v in feeds.items() if k not in self._unused_inputs}
        try:
            # share_inputs: the request reads the caller's arrays in place (no copy);
            # share_outputs=False: results are fresh arrays the caller owns, not views of the
            # request's buffers that the next run on this thread would overwrite.
            results = infer(feeds, share_inputs=True, share_outputs=False).to_tuple()
        except RuntimeError as exc:
            self._discard(generation)
            error = ShapeLimitError if _is_shape_refusal(exc) else BackendError
            raise error(f"openvino failed running {self._label}: "
                        f"{engine_message(exc)}") from exc
        if self._identity and (output_names is self._all_names
                               or tuple(output_names) == self._all_names):
            return results
        out = []
        for name in output_names:
            index, want = self._where[name]
            value = results[index]
            out.append(value if want is None else value.astype(want))
        return out

    def close(self) -> None:
        # Requests of other threads live in their thread-local slots; dropping the local drops
        # them all, and with them the last references to the compiled model.
        with self._lock:
            self._local = threading.local()
            self._compiled = None
            self._reopen = None
            self._generation += 1


def _is_shape_refusal(exc: BaseException) -> bool:
    """Whether a run's error is OpenVINO's shape inference refusing the input shapes (a kernel
    larger than the feature map, a Reshape whose size does not divide): a limit of the engine
    at that shape, which another engine may well run, not a fault of the model."""
    text = str(exc)
    return "shape_inference" in text or "While validating node" in text


def _numpy_dtype(element_type: Any) -> Any:
    try:
        import numpy as np

        return np.dtype(element_type.to_dtype())
    except Exception:  # string or exotic element types have no numpy equivalent here
        return None
