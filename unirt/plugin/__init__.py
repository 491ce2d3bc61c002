"""The plugin SDK: the one module a backend plugin imports (``from unirt.plugin import hookimpl,
Backend, BackendSession``), as an ``llm`` plugin imports ``llm``.

It holds the contract (the hook specifications, the backend and session base classes, the
rewrite base class, the verdict types a backend's rules return, the model description it is
handed) and the services every engine needs alike (fitting outputs to the declared shapes,
capturing what engines print, running a risky call in a child, the artifact cache, progress
steps, the error tree). The registry that finds plugins lives here too (:mod:`.registry`), as
pluggy's ``PluginManager`` sits beside its markers.

Names are imported on first use (PEP 562): a plugin's ``import`` stays as cheap as this package's,
whatever it names, so listing backends imports no engine, numpy or onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_LAZY = {
    # the contract
    "hookimpl": "unirt.plugin.hookspecs",
    "Availability": "unirt.plugin.backend",
    "Backend": "unirt.plugin.backend",
    "BackendSession": "unirt.plugin.backend",
    "OpenOptions": "unirt.plugin.backend",
    "OptionSpec": "unirt.plugin.backend",
    "Change": "unirt.plugin.rewrite",
    "Rewrite": "unirt.plugin.rewrite",
    "RewriteContext": "unirt.plugin.rewrite",
    "RouteStep": "unirt.plugin.route",
    "Reason": "unirt.capability.verdict",
    "Status": "unirt.capability.verdict",
    "Verdict": "unirt.capability.verdict",
    "SUPPORTED": "unirt.capability.verdict",
    "UNKNOWN": "unirt.capability.verdict",
    "UNSUPPORTED": "unirt.capability.verdict",
    "ModelInfo": "unirt.model.info",
    "NodeInfo": "unirt.model.info",
    "TensorInfo": "unirt.tensor",
    "is_static": "unirt.tensor",
    # services
    "conform": "unirt.plugin.conform",
    "captured": "unirt.plugin.native",
    "run_isolated": "unirt.process.isolation",
    "TIMEOUT": "unirt.process.isolation",
    "ArtifactCache": "unirt.store.cache",
    "artifact_key": "unirt.store.cache",
    "file_sha256": "unirt.store.cache",
    "model_digest": "unirt.store.cache",
    "Step": "unirt.progress",
    "step": "unirt.progress",
    # errors
    "UnirtError": "unirt.errors",
    "BackendError": "unirt.errors",
    "BackendUnavailableError": "unirt.errors",
    "PluginError": "unirt.errors",
    "ShapeLimitError": "unirt.errors",
    "ToolCrashError": "unirt.errors",
    "clean": "unirt.errors",
    "first_line": "unirt.errors",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from unirt.capability.verdict import SUPPORTED, UNKNOWN, UNSUPPORTED, Reason, Status, Verdict
    from unirt.errors import (
        BackendError,
        BackendUnavailableError,
        PluginError,
        ShapeLimitError,
        ToolCrashError,
        UnirtError,
        clean,
        first_line,
    )
    from unirt.model.info import ModelInfo, NodeInfo
    from unirt.plugin.backend import (
        Availability,
        Backend,
        BackendSession,
        OpenOptions,
        OptionSpec,
    )
    from unirt.plugin.conform import conform
    from unirt.plugin.hookspecs import hookimpl
    from unirt.plugin.native import captured
    from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
    from unirt.plugin.route import RouteStep
    from unirt.process.isolation import TIMEOUT, run_isolated
    from unirt.progress import Step, step
    from unirt.store.cache import ArtifactCache, artifact_key, file_sha256, model_digest
    from unirt.tensor import TensorInfo, is_static


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'unirt.plugin' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
