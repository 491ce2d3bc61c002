"""Device memory, streams and copies through cuda-python (``cuda.bindings.runtime``).

cuda-python returns ``(error, value...)`` tuples instead of raising; every call goes through
:func:`check` so that a CUDA error becomes a :class:`~unirt.errors.BackendError` with CUDA's own
name for it, never a silently ignored status. No pycuda: it holds a context of its own and does
not install without a compiler; cuda-python is NVIDIA's maintained binding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unirt.plugin import BackendError


def runtime() -> Any:
    from cuda.bindings import runtime as cudart

    return cudart


def check(result: Any, what: str) -> Any:
    """The value(s) of a cuda-python call, or a BackendError naming the call and CUDA's error."""
    cudart = runtime()
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        try:
            _, text = cudart.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the error string is a courtesy
            text = str(err)
        raise BackendError(f"tensorrt: CUDA {what} failed: {text}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as the engine cache keys it."""

    index: int
    name: str
    major: int
    minor: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    def describe(self) -> str:
        return f"cuda:{self.index} ({self.name}, sm_{self.major}{self.minor})"


def device_count() -> tuple[int, str | None]:
    """How many CUDA devices there are, and why none when there are none."""
    cudart = runtime()
    result = cudart.cudaGetDeviceCount()
    err, count = result
    if int(err) != int(cudart.cudaError_t.cudaSuccess):
        try:
            _, text = cudart.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:
            text = str(err)
        return 0, f"CUDA finds no device ({text})"
    if int(count) == 0:
        return 0, "CUDA finds no device"
    return int(count), None


def gpu(index: int = 0) -> Gpu:
    props = check(runtime().cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode(errors="replace")
    return Gpu(index, str(name).strip(), int(props.major), int(props.minor))


class Stream:
    """A CUDA stream, destroyed with :meth:`close`."""

    def __init__(self) -> None:
        self.handle = check(runtime().cudaStreamCreate(), "cudaStreamCreate")

    def __int__(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(runtime().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            check(runtime().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class DeviceBuffer:
    """Device memory that grows on demand and is reused by every call that fits in it."""

    def __init__(self) -> None:
        self.ptr: int = 0
        self.capacity = 0

    def reserve(self, nbytes: int) -> int:
        """A pointer to at least ``nbytes`` (at least 1: TensorRT wants an address for an empty
        tensor too)."""
        nbytes = max(int(nbytes), 1)
        if nbytes > self.capacity:
            self.free()
            self.ptr = int(check(runtime().cudaMalloc(nbytes), "cudaMalloc"))
            self.capacity = nbytes
        return self.ptr

    def to_device(self, host: Any, stream: Stream) -> None:
        cudart = runtime()
        if host.nbytes:
            check(cudart.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                         stream.handle), "cudaMemcpyAsync (to the device)")

    def to_host(self, host: Any, stream: Stream) -> None:
        cudart = runtime()
        if host.nbytes:
            check(cudart.cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                         stream.handle), "cudaMemcpyAsync (to the host)")

    def free(self) -> None:
        if self.ptr:
            check(runtime().cudaFree(self.ptr), "cudaFree")
            self.ptr, self.capacity = 0, 0
