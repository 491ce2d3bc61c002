"""The built-in rewrites, registered through the ``register_rewrites`` hook exactly as a
third-party plugin registers its own (this package is in :data:`unirt.plugins.BUILTIN_PLUGINS`).

Each rewrite is its own module; :func:`builtin_rewrites` gives them in the order the pipeline
tries them. The modules are imported inside the hook, which runs only when rewrites are needed:
this package is loaded with every registry (every ``unirt.load``), its rewrites are not. The
modules themselves import onnx only inside ``apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from ..base import Rewrite


def builtin_rewrites() -> tuple[type[Rewrite], ...]:
    """The built-in rewrites in application order: the shapes first (pinned dims and un-baked
    sizes are what the later rewrites read), then node repairs, then folding what they left
    constant, then the opset (converted last: the repairs are written in the model's own
    opset)."""
    from .clip_forms import ClipForms
    from .decompose import Decompose
    from .focus import FocusSlice
    from .fold import Fold
    from .global_pool import GlobalPool
    from .opset import OpsetConvert
    from .pin import PinDims
    from .pool_rank import PoolRank
    from .reduce_scalar import ReduceScalar
    from .resize import ResizeConstant
    from .unbake import UnbakeReshape
    from .unit_kernel_axis import UnitKernelAxis

    return (PinDims, UnbakeReshape, PoolRank, UnitKernelAxis, GlobalPool, ReduceScalar,
            ResizeConstant, FocusSlice, ClipForms, Decompose, Fold, OpsetConvert)


@hookimpl
def register_rewrites(register: Callable[[Any], None]) -> None:
    for rewrite in builtin_rewrites():
        register(rewrite)
