"""Constant folding and shape simplification, by onnxslim.

Exporters leave arithmetic on constants and Shape->Gather->Unsqueeze->Concat chains that feed a
Reshape; several engines refuse the dynamic pieces (ncnn's converter wants a simplified graph,
the fix every ncnn write-up starts with: onnxsim). Folding is whole-graph surgery that a
well-kept library does better than a hand-rolled pass. onnxslim is used rather than onnxsim:
it is pure python (one wheel for every platform and Python >= 3.8, where onnxsim ships a 10 MB
native wheel per platform and Python, and its current release needs Python >= 3.11 while unirt
supports 3.10), actively maintained, and gave the same graph on the model measured (500 nodes
folded to 100 in 0.25 s, outputs equal). It is the ``fold`` extra; without it this rewrite
does nothing and says so in the log.

onnxslim folds constants by running onnxruntime on pieces of the user's model, in-process: an
engine on a model not known to be safe, so it runs in a child process
(:func:`unirt.process.isolation.run_isolated`), which gets the serialized model and sends back the
serialized result. A child that crashes, hangs past :data:`TIMEOUT` or raises leaves the model
as it was, and the log says why.

Dynamic dims stay dynamic: only the inputs that ``context.input_shapes`` pins are pinned before
folding, and a result that fixes any other declared dim, or renames or drops an input or
output, is thrown away.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from typing import TYPE_CHECKING

from unirt.plugin.rewrite import GRAPH, Change, Rewrite, RewriteContext
from unirt.process import timeouts
from unirt.rewrite.graph import Dim, dims_of, pinned_inputs, set_input_dims

if TYPE_CHECKING:  # pragma: no cover - registering the built-ins imports no onnx
    import onnx

log = logging.getLogger(__name__)

#: Seconds the child may fold for (the 500-node model measured takes 0.25 s; a large detector
#: a few seconds): past this, folding is given up and the model left as it was.
TIMEOUT = timeouts.TOOL.seconds


def slim_bytes(data: bytes) -> bytes:
    """onnxslim on a serialized model, the result serialized: what the child runs (module level,
    so that the child imports it by name; bytes both ways, the form a pipe carries)."""
    import onnx
    import onnxslim

    result = onnxslim.slim(onnx.load_model_from_string(data))
    if not isinstance(result, onnx.ModelProto):
        raise TypeError(f"onnxslim returned {type(result).__name__}, not a model")
    return result.SerializeToString()


def _slim_isolated(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """:func:`slim_bytes` run in a child; None (and the reason logged) when it did not finish."""
    import onnx

    from unirt.process.isolation import run_isolated

    try:
        data = model.SerializeToString()
    except ValueError as exc:  # over protobuf's 2 GB
        log.info("fold: model cannot be serialized for the child: %s", exc)
        return None
    outcome = run_isolated(_CHILD_FN, data, timeout=TIMEOUT)
    if not outcome.ok:
        log.info("fold: onnxslim in a child process: %s; model left as it was",
                 (outcome.describe().strip().splitlines() or ["failed"])[0][:300])
        return None
    try:
        return onnx.load_model_from_string(outcome.value)
    except Exception as exc:
        log.info("fold: the child's result is not a model: %s", exc)
        return None


#: What the child runs (a seam for tests: one that crashes shows the model left untouched).
_CHILD_FN = slim_bytes


def _io(graph: onnx.GraphProto) -> tuple[list[tuple[str, list[Dim] | None]], ...]:
    return ([(v.name, dims_of(v)) for v in graph.input
             if v.name not in {i.name for i in graph.initializer}],
            [(v.name, dims_of(v)) for v in graph.output])


def _keeps_dynamic(before: list[tuple[str, list[Dim] | None]],
                   after: list[tuple[str, list[Dim] | None]]) -> str | None:
    """Why ``after`` does not keep the names and dynamic dims of ``before``; None when it does."""
    if [n for n, _ in before] != [n for n, _ in after]:
        return f"names changed: {[n for n, _ in before]} -> {[n for n, _ in after]}"
    for (name, old), (_, new) in zip(before, after):
        if old is None or new is None:
            continue
        if len(old) != len(new):
            return f"'{name}' rank changed: {old} -> {new}"
        for d_old, d_new in zip(old, new):
            if not isinstance(d_old, int) and isinstance(d_new, int):
                return f"'{name}' dynamic dim fixed: {old} -> {new}"
    return None


def _essence(graph: onnx.GraphProto) -> tuple[bytes, ...]:
    """The graph's computation: nodes, constants and declared I/O, without value_info."""
    return (b"".join(n.SerializeToString() for n in graph.node),
            b"".join(sorted(i.SerializeToString() for i in graph.initializer)),
            b"".join(v.SerializeToString() for v in graph.input),
            b"".join(v.SerializeToString() for v in graph.output))


class Fold(Rewrite):
    name = "fold"
    summary = "constant folding and shape simplification (onnxslim)"

    def apply(self, model: onnx.ModelProto, context: RewriteContext) -> list[Change]:
        import onnx

        if importlib.util.find_spec("onnxslim") is None:
            log.info("fold: onnxslim is not installed (pip install 'unirt[fold]'); skipped")
            return []
        work = onnx.ModelProto()
        work.CopyFrom(model)
        pins = {n: s for n, s in pinned_inputs(work, context.input_shapes).items()
                if n in context.input_shapes}
        set_input_dims(work, pins)
        inputs_before, outputs_before = _io(work.graph)
        result = _slim_isolated(work)
        if result is None:
            return []
        inputs_after, outputs_after = _io(result.graph)
        why = (_keeps_dynamic(inputs_before, inputs_after)
               or (None if pins else _keeps_dynamic(outputs_before, outputs_after)))
        if why is not None:
            log.info("fold: onnxslim result discarded, %s", why)
            return []
        if _essence(result.graph) == _essence(model.graph):
            return []  # nothing to fold: keep the original bytes (value_info, names, order)
        old = Counter(n.op_type for n in model.graph.node)
        new = Counter(n.op_type for n in result.graph.node)
        changes = [Change(name, "input", f"pinned to {dims} before folding")
                   for name, dims in pins.items()
                   if any(not isinstance(d, int) for d in (dims_of(
                       next(v for v in model.graph.input if v.name == name)) or []))]
        for op in sorted(set(old) | set(new)):
            if old[op] != new[op]:
                changes.append(Change(GRAPH, op, f"{old[op]} {op} nodes -> {new[op]}"))
        if len(model.graph.initializer) != len(result.graph.initializer):
            changes.append(Change(GRAPH, "initializers",
                                  f"{len(model.graph.initializer)} initializers -> "
                                  f"{len(result.graph.initializer)}"))
        if not changes:
            changes.append(Change(GRAPH, "*", "simplified: same op counts, edited attributes "
                                              "or constants"))
        model.CopyFrom(result)
        return changes
