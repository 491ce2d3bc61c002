"""What a graph says about the values and sizes its inputs accept.

Generated inputs (N(0,1) floats, ints 0..3, dynamic dims at 32) are rejected by real models
before any engine is judged: a VAD branches on ``Equal(sr, 16000)``, token ids index an
embedding table, a recognizer's AveragePool kernel is taller than a 32-pixel image, a reflect Pad
needs more samples than 32. The graph says so, and reading it is cheap next to a verification:
the values an integer input is compared with, the rows of the table it indexes, and the smallest
sizes at which ONNX shape inference finds no kernel larger than its data. What is found here fills
only what the user left unsaid (their ranges, value sets and shapes win) and is said out loud
(:meth:`InputHints.describe`).

The analysis is bounded (a budget of shape inferences and seconds), never raises (a model it
cannot read gets no hints), and is cached per model digest, in the process and in the artifact
cache: it is consulted for every verification key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unirt.evidence.inputs import dynamic_dims, feeds_for
from unirt.evidence.values import Values, ValueSpec, spec_json
from unirt.tensor import is_static, normalize_dim

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnx

    from unirt.model.info import ModelInfo

logger = logging.getLogger("unirt")

#: Bumped when what the analysis finds changes: cached hints (and keys built on them) then miss.
VERSION = 2
CACHE_SECTION = "input-hints"
HINTS_FILE = "hints.json"
#: Sizes tried for a dynamic axis other than the batch, smallest first (the first is the default
#: every generated input used before hints).
CANDIDATE_SIZES = (32, 48, 64, 96, 128, 160, 224, 256, 320)
#: The most shape inferences, and seconds, one model's size search may take; past either the
#: sizes found so far stand (or today's defaults, when none was found).
MAX_INFERENCES = 24
TIME_BUDGET_S = 1.5
#: Constants larger than this are not read for values (a comparison is with a few numbers).
MAX_CONSTANT_ELEMENTS = 4096
#: A comparison with more distinct values than this is a one-hot (a range), not a value set.
MAX_VALUE_SET = 8

_COMPARISONS = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"})
#: Ops that pass a value through unchanged in what it can be (dtype, layout aside), on input 0.
_TRANSPARENT = frozenset({"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten",
                          "Expand", "Transpose", "Slice", "CastLike"})
#: Ops a boolean condition passes through on its way to an If.
_LOGIC = frozenset({"Not", "And", "Or", "Xor", "Cast", "Identity", "Squeeze", "Unsqueeze",
                    "Reshape"})
_POOLS = frozenset({"AveragePool", "MaxPool", "LpPool"})
_CONVS = frozenset({"Conv", "ConvInteger"})
#: Ops whose outputs are metadata (shapes, counts, indices): a zero there is not a collapse.
_META = frozenset({"Shape", "Size", "Constant", "ConstantOfShape", "NonZero", "Range",
                   "Compress", "Unique", "TopK", "NonMaxSuppression"})


@dataclass(frozen=True)
class InputHints:
    """What :func:`graph_hints` found: ``values`` (input -> a
    :class:`~unirt.evidence.values.Values` set
    or a (LO, HI) range), ``dims`` (dim symbol or ``"input[axis]"`` -> base size), ``other_dims``
    (the second size verification tries for that symbol, one the graph also accepts) and one
    readable line per hint in ``notes``."""

    values: dict[str, ValueSpec] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    other_dims: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.values or self.dims)

    def describe(self) -> str:
        """The notes, one per line (empty when the graph says nothing)."""
        return "\n".join(self.notes)

    def under(self, given: Mapping[str, ValueSpec] | None) -> dict[str, ValueSpec]:
        """The value specs to generate with: the hints, with the caller's ``given`` ranges or
        value sets winning for every input they name."""
        return {**self.values, **dict(given or {})}

    def sizes(self) -> dict[str, tuple[int, int]]:
        """Symbol -> (base, other) sizes, as :func:`unirt.evidence.inputs.shape_sets` takes them."""
        return {sym: (base, self.other_dims.get(sym, base)) for sym, base in self.dims.items()}

    def key(self) -> dict[str, Any]:
        """The hints as they go into a cache key (empty when there are none, so that keys of
        models without hints stay what they were)."""
        if not self:
            return {}
        return {"version": VERSION,
                "values": {k: spec_json(v) for k, v in sorted(self.values.items())},
                "dims": dict(sorted(self.dims.items())),
                "other": dict(sorted(self.other_dims.items()))}

    def as_dict(self) -> dict[str, Any]:
        return {"values": {k: spec_json(v) for k, v in self.values.items()},
                "dims": dict(self.dims), "other_dims": dict(self.other_dims),
                "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> InputHints:
        values: dict[str, ValueSpec] = {}
        for name, spec in doc["values"].items():
            if isinstance(spec, Mapping):
                values[str(name)] = Values(tuple(spec["values"]))
            else:
                lo, hi = spec
                values[str(name)] = (lo, hi)
        return cls(values, {str(k): int(v) for k, v in doc["dims"].items()},
                   {str(k): int(v) for k, v in doc["other_dims"].items()},
                   [str(n) for n in doc["notes"]])


_memo: dict[str, InputHints] = {}
_memo_lock = threading.Lock()


def graph_hints(info: ModelInfo) -> InputHints:
    """What ``info``'s graph says its inputs accept (see the module's docstring); empty hints
    for a model it cannot analyse. Memoised per model digest, and kept in the artifact cache."""
    from unirt.store.cache import ArtifactCache, artifact_key, model_digest

    try:
        digest = model_digest(info)
    except OSError as exc:  # the file went away: nothing to say about it
        logger.debug("no input hints for %s: %s", info.name, exc)
        return InputHints()
    with _memo_lock:
        known = _memo.get(digest)
    if known is not None:
        return known
    key = artifact_key(CACHE_SECTION, digest, versions={"input_hints": VERSION})
    cache = ArtifactCache()
    hints: InputHints | None = None
    try:
        doc = cache.read_json(CACHE_SECTION, key, HINTS_FILE)
        hints = None if doc is None else InputHints.from_dict(doc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.debug("unreadable input hints %s (%s); computed again", key, exc)
    if hints is None:
        try:
            hints = _analyse(info)
        except Exception as exc:  # a question about the model, never a reason to fail
            logger.debug("no input hints for %s: %s: %s", info.name, type(exc).__name__, exc)
            hints = InputHints()
        else:
            cache.write_json(CACHE_SECTION, key, HINTS_FILE, hints.as_dict(),
                             {"model": info.name, "kind": "input hints"})
    with _memo_lock:
        _memo[digest] = hints
    return hints


# -- the graph, flattened ----------------------------------------------------------------------
class _Graph:
    """Every node of every graph (subgraphs refer to outer values by name), with producers,
    consumers and the values of small constants."""

    def __init__(self, proto: onnx.ModelProto):
        from onnx import numpy_helper

        self.nodes: list[Any] = []
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[tuple[Any, int]]] = {}
        self.values: dict[str, np.ndarray] = {}
        self.dims: dict[str, tuple[int, ...]] = {}
        for graph in _graphs(proto.graph):
            for t in graph.initializer:
                self.dims[t.name] = tuple(int(d) for d in t.dims)
                self._value(t.name, t, numpy_helper)
            for n in graph.node:
                self.nodes.append(n)
                for o in n.output:
                    if o:
                        self.producer[o] = n
                for i, name in enumerate(n.input):
                    if name:
                        self.consumers.setdefault(name, []).append((n, i))
                if n.op_type == "Constant" and n.output:
                    self._constant(n, numpy_helper)

    def _value(self, name: str, tensor: Any, numpy_helper: Any) -> None:
        import math

        from onnx import TensorProto

        if tensor.data_location == TensorProto.EXTERNAL \
                or math.prod(tensor.dims) > MAX_CONSTANT_ELEMENTS:
            return
        try:
            self.values[name] = numpy_helper.to_array(tensor)
        except Exception:  # a stripped or odd tensor: its dims still count
            return

    def _constant(self, n: Any, numpy_helper: Any) -> None:
        import numpy as np

        out = n.output[0]
        for a in n.attribute:
            if a.name == "value" and a.HasField("t"):
                self.dims[out] = tuple(int(d) for d in a.t.dims)
                self._value(out, a.t, numpy_helper)
            elif a.name in ("value_int", "value_float"):
                self.values[out] = np.asarray(a.i if a.name == "value_int" else a.f)
                self.dims[out] = ()
            elif a.name in ("value_ints", "value_floats"):
                vals = list(a.ints if a.name == "value_ints" else a.floats)
                self.values[out] = np.asarray(vals)
                self.dims[out] = (len(vals),)

    def constant(self, name: str, depth: int = 0) -> np.ndarray | None:
        """The values ``name`` can hold when it is a constant, looking through ops that keep
        the set of values (Cast, Reshape, Expand...); None when it is computed at run time."""
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        if node is None or depth > 8 or node.op_type not in _TRANSPARENT or not node.input:
            return None
        return self.constant(node.input[0], depth + 1)

    def folded(self, name: str) -> np.ndarray | None:
        """The value of ``name`` when it is computed from small constants only (a Pad's pads
        built by Concat/Reshape/Transpose of constants, as exporters write them), evaluated with
        ONNX's reference evaluator on just those nodes; None when it needs run-time values or
        more than a few nodes."""
        found = self.constant(name)
        if found is not None:
            return found
        import numpy as np
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        chain: list[Any] = []
        leaves: set[str] = set()
        todo, seen = [name], {name}
        while todo:
            current = todo.pop()
            if current in self.values:
                leaves.add(current)
                continue
            node = self.producer.get(current)
            if node is None or len(chain) >= 32 or any(a.HasField("g") for a in node.attribute):
                return None
            chain.append(node)
            for i in node.input:
                if i and i not in seen:
                    seen.add(i)
                    todo.append(i)
        order = {id(n): k for k, n in enumerate(self.nodes)}
        chain.sort(key=lambda n: order[id(n)])
        try:
            graph = helper.make_graph(
                chain, "fold", [], [helper.make_tensor_value_info(name, 0, None)],
                [numpy_helper.from_array(self.values[v], v) for v in sorted(leaves)])
            results: Any = ReferenceEvaluator(helper.make_model(graph)).run(None, {})
            value = np.asarray(results[0])
        except Exception as exc:
            logger.debug("input hints: cannot fold %s: %s", name, exc)
            return None
        self.values[name] = value
        return value

    def table_rows(self, name: str, axis: int, depth: int = 0) -> int | None:
        """The size of ``axis`` of a constant table (an initializer, a Constant), through
        Cast/Identity; None when the table is computed."""
        if name in self.dims:
            dims = self.dims[name]
            return dims[axis] if -len(dims) <= axis < len(dims) else None
        node = self.producer.get(name)
        if node is None or depth > 4 or node.op_type not in ("Cast", "Identity", "CastLike"):
            return None
        return self.table_rows(node.input[0], axis, depth + 1)

    def reach(self, start: str) -> Iterator[tuple[Any, int]]:
        """Every (node, input index) where the value of ``start`` arrives, through ops that
        pass it on unchanged (on their data input), bounded."""
        seen = {start}
        todo = [start]
        steps = 0
        while todo and steps < 4000:
            name = todo.pop(0)
            for node, idx in self.consumers.get(name, ()):
                steps += 1
                yield node, idx
                passes = (node.op_type in _TRANSPARENT and idx == 0) or (
                    node.op_type == "Gather" and idx == 0 and node.input[1] in self.values)
                if passes:
                    for o in node.output:
                        if o and o not in seen:
                            seen.add(o)
                            todo.append(o)

    def conditions(self, start: str) -> int:
        """How many If conditions (and Where selections) the boolean ``start`` decides."""
        count = 0
        seen = {start}
        todo = [start]
        while todo and len(seen) < 500:
            name = todo.pop()
            for node, idx in self.consumers.get(name, ()):
                if (node.op_type == "If" and idx == 0) or (node.op_type == "Where" and idx == 0):
                    count += 1
                elif node.op_type in _LOGIC:
                    for o in node.output:
                        if o and o not in seen:
                            seen.add(o)
                            todo.append(o)
        return count


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


# -- values --------------------------------------------------------------------------------------
def _value_hint(g: _Graph, name: str, kind: str) -> tuple[ValueSpec, str] | None:
    """(spec, note) for one integer or bool input, or None when the graph says nothing."""
    import numpy as np

    if "mask" in name.lower():
        return Values((1,)), f"{name}: all ones (an attention mask, by its name)"
    compared: list[float] = []
    conds = 0
    one_hot: tuple[int, int] | None = None
    rows: int | None = None
    terminal: list[str] = []
    for node, idx in g.reach(name):
        op = node.op_type
        if op in _COMPARISONS and idx in (0, 1) and len(node.input) == 2:
            other = g.constant(node.input[1 - idx])
            if other is None:
                continue
            flat = [v.item() for v in np.asarray(other).reshape(-1)]
            distinct = list(dict.fromkeys(flat))
            if len(distinct) <= MAX_VALUE_SET:
                new = [v for v in distinct if v not in compared]
                compared += new
                conds += g.conditions(node.output[0])
            elif op == "Equal" and all(float(v).is_integer() for v in distinct):
                lo, hi = int(min(distinct)), int(max(distinct))
                if hi - lo + 1 == len(distinct):
                    one_hot = (lo, hi)
        elif op == "Gather" and idx == 1:
            axis = int(_attr(node, "axis", 0))
            found = g.table_rows(node.input[0], axis)
            if found:
                rows = found if rows is None else min(rows, found)
        elif not (op in _TRANSPARENT and idx == 0):
            terminal.append(op if not (op == "Where" and idx == 0) else "Where?")
    if compared:
        if kind == "b":
            compared = [int(bool(v)) for v in compared]
        shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in compared)
        them = "them" if len(compared) > 1 else "it"
        where = (f" in {conds} If condition{'s' if conds != 1 else ''}" if conds else "")
        return (Values(tuple(dict.fromkeys(compared))),
                f"{name}: one of {shown} (compared with {them}{where})")
    if rows is not None and kind in "iu":
        return (0, rows - 1), (f"{name}: 0..{rows - 1} (indices into a {rows}-row table a "
                               "Gather reads)")
    if one_hot is not None and kind in "iu":
        return one_hot, (f"{name}: {one_hot[0]}..{one_hot[1]} (compared with each value of "
                         f"{one_hot[0]}..{one_hot[1]}: a one-hot)")
    if terminal and all(op in ("Mul", "Where?") for op in terminal):
        return Values((1,)), (f"{name}: all ones (only multiplied into, or selecting, a float "
                              "path: a mask)")
    return None


# -- sizes ---------------------------------------------------------------------------------------
@dataclass
class _Dim:
    """One dynamic dimension symbol and where it appears."""

    symbol: str
    batch: bool
    places: list[tuple[str, int]]


def _dynamic_dims(info: ModelInfo) -> list[_Dim]:
    """The dynamic dims as :func:`unirt.evidence.inputs.shape_sets` names them (a named symbol, or
    ``input[axis]`` for a placeholder), batch when first seen on axis 0."""
    out: dict[str, _Dim] = {}
    for t in info.inputs:
        if t.shape is None or t.dtype is None:
            continue
        for axis, sym in dynamic_dims(t):
            out.setdefault(sym, _Dim(sym, axis == 0, [])).places.append((t.name, axis))
    return list(out.values())


def _state_batches(info: ModelInfo) -> list[str]:
    """Unnamed dims that are a recurrent state's batch: the only dynamic dim of a rank-3 input,
    on axis 1 (``[layers, batch, hidden]``, as LSTM/GRU take their state); at 32 the state
    disagrees with a batch-1 input and the RNN refuses it."""
    out = []
    for t in info.inputs:
        if t.shape is None or t.dtype is None or t.dtype.kind != "f" or len(t.shape) != 3:
            continue
        dynamic = [axis for axis, d in enumerate(t.shape) if not is_static(d)]
        if dynamic == [1] and not isinstance(normalize_dim(t.shape[1]), str):
            out.append(f"{t.name}[1]")
    return out


class _Sizes:
    """Shape inference on a weightless copy with the inputs' dims set, and the checks that
    ONNX shape inference does not make (a kernel larger than its data, a reflect Pad wider than
    its input): what a size costs to try, counted against the budget."""

    def __init__(self, info: ModelInfo, proto: onnx.ModelProto, graph: _Graph,
                 dims: list[_Dim]):
        self.info, self.proto, self.graph, self.dims = info, proto, graph, dims
        self.calls = 0
        self.deadline = time.monotonic() + TIME_BUDGET_S

    @property
    def spent(self) -> bool:
        return self.calls >= MAX_INFERENCES or time.monotonic() > self.deadline

    def problem(self, sizes: Mapping[str, int]) -> str | None:
        """Why the model cannot run at ``sizes`` (symbol -> size; batch symbols at 1), or None."""
        import onnx

        self.calls += 1
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        where = {(name, axis): sizes.get(d.symbol, 1) for d in self.dims
                 for name, axis in d.places}
        for value in model.graph.input:
            if not value.type.HasField("tensor_type"):
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if (value.name, axis) in where:
                    dim.Clear()
                    dim.dim_value = where[(value.name, axis)]
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False,
                                                         strict_mode=True, data_prop=True)
        except Exception as exc:
            return f"shape inference fails ({str(exc).strip().splitlines()[0][:160]})"
        return self._check(inferred)

    def _check(self, inferred: onnx.ModelProto) -> str | None:
        shapes: dict[str, list[int | None]] = {}
        for graph in _graphs(inferred.graph):
            declared = {v.name for v in (*graph.input, *graph.output)}
            for v in (*graph.input, *graph.value_info, *graph.output):
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                    # A negative size an exporter declared (PaddlePaddle's -1) is a dynamic
                    # dim, not one that inference found empty.
                    shapes[v.name] = [
                        d.dim_value if d.HasField("dim_value") and not (
                            v.name in declared and d.dim_value < 0) else None
                        for d in v.type.tensor_type.shape.dim]
        g = self.graph
        for node in g.nodes:
            op = node.op_type
            data = shapes.get(node.input[0]) if node.input else None
            if not data or len(data) < 3:
                if op == "Pad" and data:
                    found = self._pad(node, data)
                    if found:
                        return found
                continue
            if op in _POOLS or op in _CONVS:
                found = self._kernel(node, data, shapes)
                if found:
                    return found
            elif op == "Pad":
                found = self._pad(node, data)
                if found:
                    return found
        for name, dims in shapes.items():
            node = g.producer.get(name)
            if name in self.info.constants or node is None or node.op_type in _META:
                continue
            if any(d is not None and (d < 0 or (d == 0 and node.op_type not in ("Slice",)))
                   for d in dims):
                return f"a {node.op_type} output is empty"
        return None

    def _kernel(self, node: Any, data: list[int | None],
                shapes: Mapping[str, list[int | None]]) -> str | None:
        if str(_attr(node, "auto_pad", "NOTSET")).startswith("SAME"):
            return None
        kernel = _attr(node, "kernel_shape")
        if kernel is None and node.op_type in _CONVS and len(node.input) > 1:
            w = shapes.get(node.input[1]) or list(self.graph.dims.get(node.input[1], ()))
            kernel = w[2:] if w else None
        if not kernel:
            return None
        spatial = data[2:]
        n = len(spatial)
        pads = list(_attr(node, "pads", None) or [0] * 2 * n)
        dilations = list(_attr(node, "dilations", None) or [1] * n)
        for i, (size, k) in enumerate(zip(spatial, kernel)):
            if size is None or k is None or len(pads) < 2 * n or len(dilations) < n:
                continue
            if size + pads[i] + pads[i + n] < dilations[i] * (k - 1) + 1:
                sizes = "x".join("?" if s is None else str(s) for s in spatial)
                article = "an" if node.op_type[0] in "AEIOU" else "a"
                return (f"{article} {node.op_type} kernel {'x'.join(map(str, kernel))} is larger "
                        f"than its input {sizes}")
        return None

    def _pad(self, node: Any, data: list[int | None]) -> str | None:
        if str(_attr(node, "mode", "constant")) != "reflect":
            return None
        pads: list[int] | None
        if len(node.input) > 1 and node.input[1]:
            given = self.graph.folded(node.input[1])
            pads = None if given is None else [int(p) for p in given.reshape(-1)]
        else:
            pads = _attr(node, "pads")
        if not pads:
            return None
        rank = len(data)
        axes = list(range(rank))
        if len(node.input) > 3 and node.input[3]:
            given = self.graph.constant(node.input[3])
            if given is None:
                return None
            axes = [int(a) % rank for a in given.reshape(-1)]
        if len(pads) != 2 * len(axes):
            return None
        for i, axis in enumerate(axes):
            size = data[axis]
            if size is not None and max(pads[i], pads[i + len(axes)]) >= size:
                return (f"a reflect Pad of {max(pads[i], pads[i + len(axes)])} needs an input "
                        f"longer than {size}")
        return None


def _size_hints(info: ModelInfo, graph: _Graph, proto: onnx.ModelProto,
                traced: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """(base sizes, other sizes, notes): the smallest candidate sizes at which nothing in the
    graph collapses, when the defaults (32, and 64 for the second set) do not fit."""
    dims = _dynamic_dims(info)
    states = _state_batches(info)
    for d in dims:
        d.batch = d.batch or d.symbol in states
    state_notes = [f"{sym.split('[')[0]}: dim 1 at 1 (then 2; a recurrent state's batch, as "
                   "the batch of the other inputs)" for sym in states]
    hinted_states = {sym: 1 for sym in states}
    free = [d for d in dims if not d.batch and d.symbol not in traced]
    if not free:
        return hinted_states, {sym: 2 for sym in states}, state_notes
    sizes = _Sizes(info, proto, graph, dims)
    default = {**{d.symbol: CANDIDATE_SIZES[0] for d in free}, **traced}
    first = sizes.problem(default)
    base = dict(default)
    if first is not None:
        for size in CANDIDATE_SIZES[1:]:
            if sizes.spent:
                return hinted_states, {sym: 2 for sym in states}, state_notes
            if sizes.problem({**default, **{d.symbol: size for d in free}}) is None:
                base.update({d.symbol: size for d in free})
                break
        else:
            logger.debug("input hints: no candidate size fits %s (%s)", info.name, first)
            return hinted_states, {sym: 2 for sym in states}, state_notes
        for d in free:  # each symbol back down as far as it goes
            for size in CANDIDATE_SIZES:
                if size >= base[d.symbol] or sizes.spent:
                    break
                if sizes.problem({**base, d.symbol: size}) is None:
                    base[d.symbol] = size
                    break
    other: dict[str, int] = {}
    for d in free:  # the second size verification tries must fit too
        tries = [s for s in CANDIDATE_SIZES if s > base[d.symbol]]
        if base[d.symbol] == CANDIDATE_SIZES[0]:  # today's second size first, where it fits
            tries.sort(key=lambda s: s != 2 * CANDIDATE_SIZES[0])
        for size in tries:
            if sizes.spent:
                break
            if sizes.problem({**base, d.symbol: size}) is None:
                other[d.symbol] = size
                break
    changed = {d.symbol for d in free if base[d.symbol] != CANDIDATE_SIZES[0]
               or other.get(d.symbol, 2 * CANDIDATE_SIZES[0]) != 2 * CANDIDATE_SIZES[0]}
    hinted = {s: base[s] for s in changed}
    others = {s: other.get(s, base[s]) for s in changed}
    notes = list(state_notes)
    why = f"at {CANDIDATE_SIZES[0]} {first}" if first else "the second size must fit too"
    for t in info.inputs:
        axes = [(axis, d.symbol) for d in dims if d.symbol in changed
                for name, axis in d.places if name == t.name]
        if axes:
            axes.sort()
            notes.append(f"{t.name}: dim{'s' if len(axes) > 1 else ''} "
                         f"{','.join(str(a) for a, _ in axes)} at "
                         f"{', '.join(str(hinted[s]) for _, s in axes)} (then "
                         f"{', '.join(str(others[s]) for _, s in axes)}; {why})")
    return {**hinted_states, **hinted}, {**{s: 2 for s in states}, **others}, notes


def _traced(info: ModelInfo) -> tuple[dict[str, int], list[str]]:
    """Sizes the graph bakes (a Reshape holding the traced size), by symbol, with their note."""
    from unirt.evidence.traced import traced_shapes

    shapes = traced_shapes(info)
    if not shapes:
        return {}, []
    found: dict[str, int] = {}
    notes = []
    for d in _dynamic_dims(info):
        for name, axis in d.places:
            shape = shapes.get(name)
            if shape is not None and axis < len(shape) and not d.batch:
                found.setdefault(d.symbol, int(shape[axis]))
    for name, shape in shapes.items():
        notes.append(f"{name}: {'x'.join(map(str, shape))} (the size the graph was traced at, "
                     "baked into a Reshape)")
    return found, notes


def _inline_decided(proto: onnx.ModelProto, graph: _Graph, values: Mapping[str, ValueSpec]
                    ) -> int:
    """Replace each main-graph If whose condition the hinted values decide (``Equal(sr,
    16000)`` with sr at its first value) by the branch it takes, and drop the exported
    value_info: ONNX shape inference does not carry concrete sizes into subgraphs, and a kernel
    too large for its data sits in a branch as often as not. Returns how many were inlined."""
    import numpy as np
    from onnx import helper

    for name, spec in values.items():
        if isinstance(spec, Values) and name not in graph.values:
            graph.values[name] = np.asarray(spec.items[0])
    inlined = 0
    for _ in range(4):  # a branch may hold another decided If
        nodes: list[Any] = []
        changed = False
        for node in proto.graph.node:
            cond = graph.folded(node.input[0]) if node.op_type == "If" else None
            if cond is None or np.asarray(cond).size != 1:
                nodes.append(node)
                continue
            branch = next((a.g for a in node.attribute
                           if a.name == ("then_branch" if bool(np.asarray(cond).reshape(-1)[0])
                                         else "else_branch")), None)
            if branch is None:
                nodes.append(node)
                continue
            nodes.extend(branch.node)
            proto.graph.initializer.extend(branch.initializer)
            nodes.extend(helper.make_node("Identity", [b.name], [o])
                         for b, o in zip(branch.output, node.output) if o)
            inlined += 1
            changed = True
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        if not changed:
            break
    _fold_shape_inputs(proto, graph)
    for g in _graphs(proto.graph):
        del g.value_info[:]
    return inlined


#: Inputs that shape inference needs as values (pads, target shapes, slice bounds, axes).
_SHAPE_INPUTS = {"Pad": (1, 3), "Reshape": (1,), "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3),
                 "Expand": (1,), "Tile": (1,), "Unsqueeze": (1,), "Squeeze": (1,)}
#: The most constant chains folded into initializers for one model.
MAX_FOLDS = 64


def _fold_shape_inputs(proto: onnx.ModelProto, graph: _Graph) -> None:
    """Point the shape inputs of the main graph's nodes that exporters compute from constants
    (a Pad's pads built by Concat/Reshape/Cast) at folded initializers: ONNX's data propagation
    does not follow such chains, and without the value a Pad's output has no size."""
    from onnx import numpy_helper

    folds = 0
    for node in proto.graph.node:
        for k in _SHAPE_INPUTS.get(node.op_type, ()):
            if k >= len(node.input) or not node.input[k] or node.input[k] in graph.dims:
                continue
            producer = graph.producer.get(node.input[k])
            if producer is None or producer.op_type == "Constant" or folds >= MAX_FOLDS:
                continue
            folds += 1
            value = graph.folded(node.input[k])
            if value is None:
                continue
            name = f"unirt_folded_{folds}"
            proto.graph.initializer.append(numpy_helper.from_array(value, name))
            node.input[k] = name


def _analyse(info: ModelInfo) -> InputHints:
    from unirt.model.info import load_proto, strip_weights

    started = time.monotonic()
    proto = load_proto(info)
    graph = _Graph(proto)
    values: dict[str, ValueSpec] = {}
    notes: list[str] = []
    for t in info.inputs:
        if t.dtype is None or t.dtype.kind not in "iub":
            continue
        found = _value_hint(graph, t.name, t.dtype.kind)
        if found is not None:
            values[t.name], note = found
            notes.append(note)
    dims: dict[str, int] = {}
    other: dict[str, int] = {}
    if any(not d.batch for d in _dynamic_dims(info)):
        traced, traced_notes = _traced(info)
        strip_weights(proto)
        _inline_decided(proto, graph, values)
        graph = _Graph(proto)
        dims, other, size_notes = _size_hints(info, graph, proto, traced)
        for sym, size in traced.items():
            dims.setdefault(sym, size)
            other.setdefault(sym, size)
        notes += traced_notes + size_notes
    logger.debug("input hints for %s in %.3f s: %s", info.name, time.monotonic() - started,
                 "; ".join(notes) or "none")
    return InputHints(values, dims, other, notes)


def hinted_feeds(info: ModelInfo, feeds: Mapping[str, np.ndarray] | None,
                 shapes: Mapping[str, Sequence[int]] | None, seed: int,
                 ranges: Mapping[str, ValueSpec] | None = None) -> dict[str, np.ndarray]:
    """:func:`unirt.evidence.inputs.feeds_for` with what the graph says its inputs accept filling
    what the caller left unsaid (the given feeds, shapes and ranges win): the one way ``run``,
    ``compare``, ``bench`` and the others complete a feed set."""
    return feeds_for(info, feeds, shapes, seed, ranges, hints=graph_hints(info))
