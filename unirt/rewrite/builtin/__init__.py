"""The built-in rewrites, registered through the ``register_rewrites`` hook exactly as a
third-party plugin registers its own (this package is in :data:`unirt.plugins.BUILTIN_PLUGINS`).

Each rewrite is its own module; :data:`BUILTIN_REWRITES` is the list, in the order the pipeline
tries them. The modules import onnx only inside ``apply``: registering costs no model library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...hookspecs import hookimpl
from ..base import Rewrite
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

#: In application order: the shapes first (pinned dims and un-baked sizes are what the later
#: rewrites read), then node repairs, then folding what they left constant, then the opset
#: (converted last: the repairs are written in the model's own opset).
BUILTIN_REWRITES: tuple[type[Rewrite], ...] = (
    PinDims,
    UnbakeReshape,
    PoolRank,
    UnitKernelAxis,
    GlobalPool,
    ReduceScalar,
    ResizeConstant,
    FocusSlice,
    ClipForms,
    Decompose,
    Fold,
    OpsetConvert,
)


@hookimpl
def register_rewrites(register: Callable[[Any], None]) -> None:
    for rewrite in BUILTIN_REWRITES:
        register(rewrite)
