"""The input sizes a model is known to run at although its declared dynamic dims say otherwise.

An export traced at one size can bake that size into a Reshape target while declaring the axis
dynamic: every other size fails on every engine, the reference included. Rewrites that know such
patterns say where the original runs (:meth:`unirt.plugin.rewrite.Rewrite.traced_sizes`), so that
verification, the input hints and ``load(rewrite=[...])`` judge the model at a size it accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from unirt.evidence.inputs import shape_sets
from unirt.model.info import ModelInfo, load_proto
from unirt.plugin.registry import Registry, get_registry
from unirt.plugin.rewrite import Rewrite

logger = logging.getLogger("unirt")


def rewrite_traced_shapes(registry: Registry, info: ModelInfo, names: Sequence[str]
                          ) -> dict[str, tuple[int, ...]]:
    """The input shapes at which the *original* runs, for rewrites that change what the model
    accepts (``Rewrite.traced_sizes``: un-baking a traced Reshape size): the sizes to verify at
    when the user gave none. Empty when none of ``names`` says (any size will do).
    ``load(rewrite=[...])`` and ``unirt rewrite --only`` both verify there."""
    rewrites = [registry.rewrite(n) for n in names]
    if not any(type(r).traced_sizes is not Rewrite.traced_sizes for r in rewrites):
        return {}
    model = load_proto(info)  # small constants kept: a Reshape's shape is one
    traced: dict[str, dict[int, int]] = {}
    for r in rewrites:
        for inp, dims in r.traced_sizes(model).items():
            traced.setdefault(inp, {}).update(dims)
    if not traced:
        return {}
    base = shape_sets(info.inputs)[0][1]
    return {i: tuple(dims.get(k, d) for k, d in enumerate(base[i]))
            for i, dims in traced.items() if i in base}


def traced_shapes(info: ModelInfo, registry: Registry | None = None
                  ) -> dict[str, tuple[int, ...]]:
    """Input shapes at which the model is known to run although its declared dynamic dims do
    not, by every registered rewrite's :meth:`~unirt.rewrite.Rewrite.traced_sizes` (a Reshape
    baking the traced size); empty when nothing says so (:func:`rewrite_traced_shapes` with
    every registered rewrite)."""
    registry = registry or get_registry()
    try:
        return rewrite_traced_shapes(registry, info, list(registry.rewrites))
    except Exception as exc:  # a question about the model, never a reason to fail verifying
        logger.debug("no traced sizes for %s: %s", info.name, exc)
        return {}
