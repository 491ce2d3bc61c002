"""The model converted down to the highest opset the target engine loads.

Engines lag the ONNX standard: a model exported at a new opset is refused outright by an engine
that knows only older ones, although its ops usually exist there in an older form. The fix in
every deployment write-up is to re-export at the old opset; ``onnx.version_converter`` does the
same on the graph, op by op. Only the default domain moves. When the converter has no adapter
for an op (or produces a model the checker rejects), nothing changes and the log says why.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from unirt.plugin.rewrite import GRAPH, Change, Rewrite, RewriteContext
from unirt.rewrite.graph import opset_of

if TYPE_CHECKING:  # pragma: no cover - registering the built-ins imports no onnx
    import onnx

log = logging.getLogger(__name__)


class OpsetConvert(Rewrite):
    name = "opset_convert"
    summary = "default-domain opset converted down to what the engine loads (version_converter)"

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        import onnx

        target = context.opset
        current = opset_of(model)
        if target is None or target >= current:
            return []
        from onnx import version_converter

        try:
            converted = version_converter.convert_version(model, target)
            onnx.checker.check_model(converted)
        except Exception as exc:  # no adapter for an op, or a result the checker refuses
            log.info("opset_convert: cannot convert opset %d to %d: %s", current, target,
                     str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            return []
        if opset_of(converted) != target:
            log.info("opset_convert: converter returned opset %d, not %d",
                     opset_of(converted), target)
            return []
        before = [n.op_type for n in model.graph.node]
        model.CopyFrom(converted)
        changes = [Change(GRAPH, "opset", f"default-domain opset {current} -> {target} by "
                                          "onnx.version_converter")]
        after = [n.op_type for n in model.graph.node]
        if before != after:
            changes.append(Change(GRAPH, "nodes", f"{len(before)} nodes -> {len(after)} in "
                                                  "the older ops' form"))
        return changes
