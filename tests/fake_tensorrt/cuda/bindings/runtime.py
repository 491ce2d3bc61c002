"""Test double of ``cuda.bindings.runtime`` (tests only): the documented ``(error, value)``
returns; device memory is host memory (``ctypes`` buffers), so copies are ``memmove``.

FAKE_CUDA_DEVICES: how many devices (default 1); FAKE_CUDA_GPU: name; FAKE_CUDA_CC: "9.0".
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import os
from types import SimpleNamespace


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


_memory: dict[int, ctypes.Array] = {}
_streams = itertools.count(1)
_live_streams: set[int] = set()
stats = {"malloc": 0, "free": 0, "h2d": 0, "d2h": 0}


def _count() -> int:
    return int(os.environ.get("FAKE_CUDA_DEVICES", "1"))


def cudaGetErrorString(err):
    return cudaError_t.cudaSuccess, cudaError_t(err).name.encode()


def cudaGetDeviceCount():
    n = _count()
    if n == 0:
        return cudaError_t.cudaErrorNoDevice, 0
    return cudaError_t.cudaSuccess, n


def cudaSetDevice(device):
    if not 0 <= int(device) < _count():
        return (cudaError_t.cudaErrorInvalidDevice,)
    return (cudaError_t.cudaSuccess,)


def cudaGetDeviceProperties(device):
    if not 0 <= int(device) < _count():
        return cudaError_t.cudaErrorInvalidDevice, None
    major, minor = os.environ.get("FAKE_CUDA_CC", "9.0").split(".")
    name = os.environ.get("FAKE_CUDA_GPU", "Fake GPU").encode() + b"\0" * 8
    return cudaError_t.cudaSuccess, SimpleNamespace(name=name, major=int(major),
                                                    minor=int(minor))


def cudaMalloc(size):
    buf = ctypes.create_string_buffer(int(size))
    ptr = ctypes.addressof(buf)
    _memory[ptr] = buf
    stats["malloc"] += 1
    return cudaError_t.cudaSuccess, ptr


def cudaFree(ptr):
    if _memory.pop(int(ptr), None) is None:
        return (cudaError_t.cudaErrorInvalidValue,)
    stats["free"] += 1
    return (cudaError_t.cudaSuccess,)


def _check_device(ptr: int, count: int) -> bool:
    return any(base <= ptr and ptr + count <= base + len(buf) for base, buf in _memory.items())


def cudaMemcpyAsync(dst, src, count, kind, stream):
    if int(stream) not in _live_streams:
        return (cudaError_t.cudaErrorInvalidValue,)
    device = int(dst) if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else int(src)
    if not _check_device(device, int(count)):
        return (cudaError_t.cudaErrorInvalidValue,)
    ctypes.memmove(int(dst), int(src), int(count))
    stats["h2d" if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else "d2h"] += 1
    return (cudaError_t.cudaSuccess,)


def cudaStreamCreate():
    handle = next(_streams)
    _live_streams.add(handle)
    return cudaError_t.cudaSuccess, handle


def cudaStreamSynchronize(stream):
    ok = int(stream) in _live_streams
    return (cudaError_t.cudaSuccess if ok else cudaError_t.cudaErrorInvalidValue,)


def cudaStreamDestroy(stream):
    _live_streams.discard(int(stream))
    return (cudaError_t.cudaSuccess,)


def device_memory(ptr: int, count: int) -> bytes:
    """For the fake TensorRT: read 'device' memory."""
    return ctypes.string_at(ptr, count)


def is_device(ptr: int, count: int) -> bool:
    return _check_device(int(ptr), int(count))
