"""Running a built TensorRT engine: the runner half of the Polygraphy split (its ``TrtRunner``).

One :class:`Engine` per serialized engine: the deserialized ``ICudaEngine``, one execution
context, one CUDA stream and one device buffer per I/O tensor, reused by every call whose tensors
fit (a buffer grows, never shrinks). A call: select the profile that covers the feeds
(``set_optimization_profile_async``), ``set_input_shape`` per input, copy the inputs to the
device, ``set_tensor_address`` for every I/O tensor, ``execute_async_v3`` on the stream, copy the
outputs back, synchronise. An execution context runs one inference at a time, so each Engine
serialises its calls with a lock: thread-safe like the other backends, and concurrent threads
on one engine wait rather than share a context.

Outputs come back in the dtype TensorRT computed; the session conforms them to the model's
declared dtypes (:func:`unirt.plugin.conform.conform`). An output whose shape depends on the data
(NonZero, NonMaxSuppression) has a -1 in its shape after the input shapes are set; this backend
has no output allocator and refuses such a model with a clear error instead of a wrong size.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unirt.plugin import BackendError, ShapeLimitError, UnirtError, first_line

from . import _cuda
from ._profiles import Profile, find_profile


def _nptype(trt: Any, dtype: Any) -> np.dtype:
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as exc:  # bf16 / fp8: numpy has no such type without ml_dtypes
        raise BackendError(f"tensorrt: engine tensor type {dtype} has no numpy dtype") from exc


class Engine:
    """A deserialized engine with its context, stream and buffers."""

    def __init__(self, trt: Any, runtime: Any, engine: Any, profiles: Sequence[Profile],
                 label: str) -> None:
        self.trt = trt
        self.runtime = runtime  # must outlive the engine
        self.engine = engine
        self.profiles = list(profiles)
        self.label = label
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        for i in range(int(engine.num_io_tensors)):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            (self.inputs if mode == trt.TensorIOMode.INPUT else self.outputs).append(name)
            self.dtypes[name] = _nptype(trt, engine.get_tensor_dtype(name))
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"tensorrt: could not create an execution context for {label} "
                               "(out of device memory?)")
        self.stream = _cuda.Stream()
        self.buffers = {name: _cuda.DeviceBuffer() for name in (*self.inputs, *self.outputs)}
        self.profile = 0
        self.lock = threading.Lock()

    def covers(self, shapes: Mapping[str, Sequence[int]]) -> int | None:
        """The profile index for these input shapes; 0 for an engine without profiles."""
        if not self.profiles:
            return 0
        return find_profile(self.profiles, shapes)

    def run(self, feeds: Mapping[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        with self.lock:
            try:
                return self._run(feeds, profile)
            except UnirtError:
                raise
            except Exception as exc:  # the engine's own exception: say whose it is
                raise BackendError(f"tensorrt: running {self.label} failed: "
                                   f"{type(exc).__name__}: {first_line(exc)}") from exc

    def _run(self, feeds: Mapping[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        ctx, stream = self.context, self.stream
        if self.profiles and profile != self.profile:
            if not ctx.set_optimization_profile_async(profile, int(stream)):
                raise BackendError(f"tensorrt: could not select optimization profile {profile}")
            self.profile = profile
        hosts: list[np.ndarray] = []  # kept alive until the stream is synchronised
        for name in self.inputs:
            value = feeds[name]
            want = self.dtypes[name]
            if value.dtype != want:
                value = _to_engine_dtype(value, want, name)
            if not value.flags.c_contiguous:  # (ascontiguousarray would make a 0-d array 1-d)
                value = value.copy(order="C")
            if not ctx.set_input_shape(name, tuple(value.shape)):
                raise ShapeLimitError(f"tensorrt: {self.label} cannot take input {name!r} at "
                                      f"shape {list(value.shape)} (outside the engine's profile)")
            buf = self.buffers[name]
            buf.reserve(value.nbytes)
            buf.to_device(value, stream)
            if not ctx.set_tensor_address(name, buf.ptr):
                raise BackendError(f"tensorrt: could not bind input {name!r}")
            hosts.append(value)
        out: dict[str, np.ndarray] = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"tensorrt: output {name!r} of {self.label} has a data-dependent shape "
                    f"({list(shape)}): unirt's TensorRT backend has no output allocator yet")
            host = np.empty(shape, self.dtypes[name])
            buf = self.buffers[name]
            buf.reserve(host.nbytes)
            if not ctx.set_tensor_address(name, buf.ptr):
                raise BackendError(f"tensorrt: could not bind output {name!r}")
            out[name] = host
        if not ctx.execute_async_v3(int(stream)):
            stream.synchronize()
            raise BackendError(f"tensorrt: execute_async_v3 failed on {self.label}")
        for name, host in out.items():
            self.buffers[name].to_host(host, stream)
        stream.synchronize()
        del hosts
        return out

    def close(self) -> None:
        with self.lock:
            for buf in self.buffers.values():
                buf.free()
            self.buffers.clear()
            self.stream.close()
            self.context = None
            self.engine = None
            self.runtime = None


def _to_engine_dtype(value: np.ndarray, want: np.dtype, name: str) -> np.ndarray:
    """A feed in the dtype the engine's input has (TensorRT may take int32 where the model says
    int64), refusing a cast that would change a value."""
    if value.dtype.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        if value.size and (value.min() < info.min or value.max() > info.max):
            raise ShapeLimitError(f"tensorrt: input {name!r} has values outside {want}, the "
                                  "type TensorRT takes it in")
        return value.astype(want)
    if value.dtype.kind == want.kind == "b" or (value.dtype.kind == "f" and want.kind == "f"):
        return value.astype(want)
    raise BackendError(f"tensorrt: input {name!r} is {value.dtype}; the engine takes {want}")


def deserialize(trt: Any, logger: Any, data: bytes, label: str) -> Any:
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(f"tensorrt: could not deserialize the engine built for {label}")
    return engine, runtime
