"""The built-in rewrites, registered through the ``register_rewrites`` hook exactly as a
third-party plugin registers its own (this package is in
:data:`unirt.plugin.registry.BUILTIN_PLUGINS`).

Each rewrite is its own module; :func:`builtin_rewrites` gives them in the order the pipeline
tries them. The modules are imported inside the hook, which runs only when rewrites are needed:
this package is loaded with every registry (every ``unirt.load``), its rewrites are not. The
modules themselves import onnx only inside ``apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from unirt.plugin.hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from unirt.plugin.rewrite import Rewrite


def builtin_rewrites() -> tuple[type[Rewrite], ...]:
    """The built-in rewrites in application order: the shapes first (pinned dims and un-baked
    sizes are what the later rewrites read), then node repairs, then folding what they left
    constant, then the opset (converted last: the repairs are written in the model's own
    opset)."""
    from unirt.rewrite.builtin.clip_forms import ClipForms
    from unirt.rewrite.builtin.decompose import Decompose
    from unirt.rewrite.builtin.focus import FocusSlice
    from unirt.rewrite.builtin.fold import Fold
    from unirt.rewrite.builtin.global_pool import GlobalPool
    from unirt.rewrite.builtin.opset import OpsetConvert
    from unirt.rewrite.builtin.pin import PinDims
    from unirt.rewrite.builtin.pool_rank import PoolRank
    from unirt.rewrite.builtin.reduce_scalar import ReduceScalar
    from unirt.rewrite.builtin.resize import ResizeConstant
    from unirt.rewrite.builtin.unbake import UnbakeReshape
    from unirt.rewrite.builtin.unit_kernel_axis import UnitKernelAxis

    return (PinDims, UnbakeReshape, PoolRank, UnitKernelAxis, GlobalPool, ReduceScalar,
            ResizeConstant, FocusSlice, ClipForms, Decompose, Fold, OpsetConvert)


@hookimpl
def register_rewrites(register: Callable[[Any], None]) -> None:
    for rewrite in builtin_rewrites():
        register(rewrite)
