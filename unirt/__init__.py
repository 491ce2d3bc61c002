"""unirt: run one ONNX model on whichever inference engine on this machine can run it best.

The public API, and nothing else. Names are imported on first use (PEP 562) so that
``import unirt`` loads neither numpy, onnx nor any engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unirt.errors import (
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
from unirt.plugin.hookspecs import hookimpl
from unirt.version import __version__

_LAZY = {
    "load": ("unirt.runtime.router", "load"),
    "backends": ("unirt.plugin.inventory", "backends"),
    "Session": ("unirt.runtime.session", "Session"),
    "TensorInfo": ("unirt.tensor", "TensorInfo"),
    "ModelInfo": ("unirt.model.info", "ModelInfo"),
    "read_model": ("unirt.model.info", "read_model"),
    "Backend": ("unirt.plugin.backend", "Backend"),
    "BackendSession": ("unirt.plugin.backend", "BackendSession"),
    "Availability": ("unirt.plugin.backend", "Availability"),
    "OpenOptions": ("unirt.plugin.backend", "OpenOptions"),
    "RouteStep": ("unirt.plugin.route", "RouteStep"),
    "capabilities": ("unirt.tools.capability_report", "capabilities"),
    "CapabilityReport": ("unirt.tools.capability_report", "CapabilityReport"),
    "Verdict": ("unirt.capability.verdict", "Verdict"),
}

__all__ = [
    "__version__", "hookimpl", *_LAZY,
    "UnirtError", "ModelError", "ModelNotFoundError", "InputError", "OutputError",
    "BackendError", "BackendNotFoundError", "BackendUnavailableError", "NoBackendError",
    "PluginError", "SessionClosedError",
]

if TYPE_CHECKING:  # pragma: no cover
    from unirt.capability.verdict import Verdict
    from unirt.model.info import ModelInfo, read_model
    from unirt.plugin.backend import Availability, Backend, BackendSession, OpenOptions
    from unirt.plugin.inventory import backends
    from unirt.plugin.route import RouteStep
    from unirt.runtime.router import load
    from unirt.runtime.session import Session
    from unirt.tensor import TensorInfo
    from unirt.tools.capability_report import CapabilityReport, capabilities


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'unirt' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
