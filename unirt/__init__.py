"""unirt: run one ONNX model on whichever inference engine on this machine can run it best.

The public API, and nothing else. Names are imported on first use (PEP 562) so that
``import unirt`` loads neither numpy, onnx nor any engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    InputError,
    ModelError,
    ModelNotFoundError,
    NoBackendError,
    OutputError,
    PluginError,
    SessionClosedError,
    UnirtError,
)
from .hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "load": ("router", "load"),
    "backends": ("inventory", "backends"),
    "Session": ("session", "Session"),
    "TensorInfo": ("tensor", "TensorInfo"),
    "ModelInfo": ("model", "ModelInfo"),
    "read_model": ("model", "read_model"),
    "Backend": ("backend", "Backend"),
    "BackendSession": ("backend", "BackendSession"),
    "Availability": ("backend", "Availability"),
    "OpenOptions": ("backend", "OpenOptions"),
    "RouteStep": ("route", "RouteStep"),
    "capabilities": ("capability", "capabilities"),
    "CapabilityReport": ("capability", "CapabilityReport"),
    "Verdict": ("capability", "Verdict"),
}

__all__ = [
    "__version__", "hookimpl", *_LAZY,
    "UnirtError", "ModelError", "ModelNotFoundError", "InputError", "OutputError",
    "BackendError", "BackendNotFoundError", "BackendUnavailableError", "NoBackendError",
    "PluginError", "SessionClosedError",
]

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Availability, Backend, BackendSession, OpenOptions
    from .capability import CapabilityReport, Verdict, capabilities
    from .inventory import backends
    from .model import ModelInfo, read_model
    from .route import RouteStep
    from .router import load
    from .session import Session
    from .tensor import TensorInfo


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'unirt' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(f".{module_name}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
