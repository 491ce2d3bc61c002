"""ONNX Runtime IO binding, so that repeated runs on a device copy no more than they must.

``InferenceSession.run`` with numpy feeds on the CUDA provider allocates a device buffer for
every input, copies it in, and copies every output back, on every call. With IO binding each
thread keeps one device buffer per input and refills it in place (``OrtValue.update_inplace``:
one host-to-device copy, no allocation) while the shape and dtype stay the same; outputs are
bound to the device (the provider's arena) and copied back once each
(``copy_outputs_to_cpu``), only those asked for.

Used for the CUDA backend; the CPU backend's plain ``run`` is already copy-free, so binding
there is a switch for tests only (the code path is the same, with ``device="cpu"``). Feeds
ONNX Runtime cannot bind (strings, objects) and models with non-tensor outputs (sequences,
maps) take the plain ``run``, said once in ``Session.details``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def unbindable_outputs(sess: Any) -> list[str]:
    """Outputs that are not tensors (``seq(...)``, ``map(...)``): IO binding cannot hold them."""
    return [o.name for o in sess.get_outputs() if not str(o.type).startswith("tensor(")]


def bindable_feed(value: Any) -> bool:
    """A numeric numpy array: what a device buffer can hold."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "biufc"


@dataclass
class _ThreadBinding:
    """One thread's binding and its input buffers (an IOBinding is not thread-safe)."""

    io: Any
    #: name -> (OrtValue on the device, its shape, its dtype)
    inputs: dict[str, tuple[Any, tuple[int, ...], np.dtype[Any]]] = field(default_factory=dict)


@dataclass
class BindingStats:
    """What the binding saved, for tests and ``Session.details``: buffers allocated vs reused."""

    allocated: int = 0
    reused: int = 0


class BoundRunner:
    """``run(feeds, output_names)`` through IO binding on ``device`` (``"cuda"``, ``"cpu"``)."""

    def __init__(self, sess: Any, device: str, device_id: int = 0) -> None:
        self._sess = sess
        self.device = device
        self.device_id = device_id
        self._local = threading.local()
        self._lock = threading.Lock()
        self.stats = BindingStats()

    def _binding(self) -> _ThreadBinding:
        state = getattr(self._local, "state", None)
        if state is None:
            state = _ThreadBinding(self._sess.io_binding())
            self._local.state = state
        return state

    def _bind_input(self, state: _ThreadBinding, name: str, value: np.ndarray) -> None:
        import onnxruntime as ort

        value = np.ascontiguousarray(value)
        held = state.inputs.get(name)
        if held is not None and held[1:] == (value.shape, value.dtype):
            held[0].update_inplace(value)  # same buffer, same address: the binding stands
            with self._lock:
                self.stats.reused += 1
            return
        # A buffer of our own, never one wrapping the caller's array: on the CPU
        # ortvalue_from_numpy shares the caller's memory, which update_inplace would overwrite.
        buffer = ort.OrtValue.ortvalue_from_shape_and_type(
            list(value.shape), value.dtype.type, self.device, self.device_id)
        buffer.update_inplace(value)
        state.io.bind_ortvalue_input(name, buffer)
        state.inputs[name] = (buffer, value.shape, value.dtype)
        with self._lock:
            self.stats.allocated += 1

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> list[Any]:
        state = self._binding()
        for name, value in feeds.items():
            self._bind_input(state, name, value)
        # Outputs are bound afresh each run: a bound output keeps the buffer of the last run, and
        # ONNX Runtime then refuses any other shape (a new batch, a data-dependent output). The
        # buffer comes from the provider's arena, so this costs no device allocation.
        state.io.clear_binding_outputs()
        for name in output_names:
            state.io.bind_output(name, self.device, self.device_id)
        state.io.synchronize_inputs()
        self._sess.run_with_iobinding(state.io)
        return list(state.io.copy_outputs_to_cpu())
