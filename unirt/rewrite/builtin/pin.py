"""Dynamic input dims fixed to the sizes the caller gave, for engines that need static shapes.

Some engines (and some of their layers) only load a model whose every input dim is a number; the
sizes a user passes to ``load(input_shapes=)`` or ``--shape`` say which numbers. Pinning writes
them into the declared inputs and re-runs shape inference, so the value_info and outputs that
depended on a symbolic dim say the same number downstream. Only dims declared dynamic change: a
given size that contradicts a static dim, or has the wrong rank, leaves that input alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext
from unirt.rewrite.graph import dims_of, pinned_inputs, reinfer, set_input_dims

if TYPE_CHECKING:  # pragma: no cover - registering the built-ins imports no onnx
    import onnx

log = logging.getLogger(__name__)


class PinDims(Rewrite):
    name = "pin_dims"
    summary = "dynamic input dims set to the given input shapes (engines needing static shapes)"

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        if not context.input_shapes:
            return []
        pinned = pinned_inputs(model, context.input_shapes)
        changes: list[Change] = []
        todo: dict[str, list[int]] = {}
        for vi in model.graph.input:
            dims = dims_of(vi)
            if vi.name not in context.input_shapes or vi.name not in pinned or dims is None:
                continue
            if all(isinstance(d, int) for d in dims):
                continue  # already static
            todo[vi.name] = pinned[vi.name]
            shown = [d if d is not None else "?" for d in dims]
            changes.append(Change(vi.name, "input",
                                  f"dims {shown} pinned to {pinned[vi.name]}"))
        if not todo:
            return []
        set_input_dims(model, todo)
        reinfer(model)
        return changes
