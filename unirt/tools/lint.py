"""Lint: what is wrong with a model before any engine sees it, each problem tied to a node.

Why: engines report a broken model each in their own words, or crash, and the usual export
mistakes only show when the model is run at another size: a PyTorch ``MaxPool3d`` applied to a
4-D tensor (a kernel of three dims on two spatial axes, refused by every engine), a
``dynamic_axes`` export whose Reshape still carries the size seen while tracing (it runs at that
size and fails at every other). :func:`lint` finds these from the graph alone, names the node and
op, and leaves machine-readable facts in :attr:`Finding.detail` for the rewrites that repair
them (the opt-in un-baking of a traced Reshape size reads ``baked-dynamic-dim`` findings).

What it checks:

* the ONNX checker and strict shape inference with data propagation: ``check_model(full_check=
  True)`` run as its two halves (the structural check, then strict inference), so that each
  failure is classified and tied to the node and op onnx names in its message;
* attributes that disagree with the input's rank: a pooling or convolution ``kernel_shape``,
  ``strides``, ``dilations`` or ``pads`` for another number of spatial axes than the input has;
* declared-dynamic input dims pinned to one size: a Reshape whose output has a fixed element
  count while its input varies with the dim, or a fixed size met where the dim must match
  (broadcasting, Expand, Concat) coming from a constant Slice, ConstantOfShape or Expand;
* initializers no node uses;
* an opset or IR version the installed engines cannot load, from their op-support tables.

Nothing here runs an engine or is called by ``unirt.load``; ``onnx`` is imported on first use.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from unirt.words import Word

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from unirt.model.info import ModelInfo, ModelSource, NodeInfo, TypeFact
    from unirt.plugin.inventory import EngineLimits
    from unirt.plugin.registry import Registry
    from unirt.tensor import Dim

logger = logging.getLogger("unirt")


class Severity(Word):
    """How bad a finding is. ERROR: no engine can run the model as it is (``unirt lint`` exits
    1). WARNING: it runs, but not as declared (a dynamic dim pinned to one size), or not on
    some installed engine, or it carries dead weight. INFO: worth knowing, nothing to fix."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


class Code(Word):
    """The stable ids of lint's checks (``Finding.code``): scripts and rewrites match on these,
    never on message text."""

    CHECKER = "checker"
    SHAPE_INFERENCE = "shape-inference"
    POOL_KERNEL_RANK = "pool-kernel-rank"
    CONV_KERNEL_RANK = "conv-kernel-rank"
    BAKED_DYNAMIC_DIM = "baked-dynamic-dim"
    UNUSED_INITIALIZER = "unused-initializer"
    OPSET_UNSUPPORTED = "opset-unsupported"
    IR_UNSUPPORTED = "ir-unsupported"


@dataclass(frozen=True)
class Finding:
    """One problem. ``node`` is the node's name (``"Op#i"`` for an unnamed node, ``None`` for a
    problem of the model as a whole), ``op`` its op type; ``message`` is one line naming both;
    ``detail`` holds the facts as plain JSON values (for a node: ``graph``, the subgraph path,
    ``""`` for the main graph, and ``index``, the node's position in that graph)."""

    severity: Severity
    code: str
    node: str | None
    op: str | None
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.severity}: {self.message} [{self.code}]"

    def as_dict(self) -> dict[str, Any]:
        return {"severity": str(self.severity), "code": str(self.code), "node": self.node,
                "op": self.op, "message": self.message, "detail": dict(self.detail)}


@dataclass(frozen=True)
class LintReport:
    """Every finding on one model, errors first."""

    model: str
    findings: tuple[Finding, ...]

    def of(self, *severities: Severity) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity in severities)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return self.of(Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return self.of(Severity.WARNING)

    @property
    def infos(self) -> tuple[Finding, ...]:
        return self.of(Severity.INFO)

    @property
    def ok(self) -> bool:
        """No errors (warnings and infos allowed): what ``unirt lint``'s exit status says."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        found = Counter(str(f.severity) for f in self.findings)
        return {str(s): found.get(str(s), 0) for s in Severity}

    def summary(self) -> str:
        """``"1 error, 2 warnings, 0 infos"`` or ``"no findings"``."""
        if not self.findings:
            return "no findings"
        return ", ".join(f"{n} {s}{'' if n == 1 else 's'}" for s, n in self.counts().items())

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "ok": self.ok, "counts": self.counts(),
                "findings": [f.as_dict() for f in self.findings]}

    def __str__(self) -> str:
        return "\n".join([f"{self.model}: {self.summary()}", *map(str, self.findings)])


def lint(model: ModelSource | ModelInfo, *, backends: Sequence[str] | None = None,
         registry: Registry | None = None) -> LintReport:
    """Lint ``model`` (a path, bytes, an ``onnx.ModelProto`` or a read
    :class:`~unirt.model.info.ModelInfo`). ``backends``: whose opset/IR limits to check (default:
    every registered backend that is available; ``()``: none). A model that cannot be read at
    all raises :class:`~unirt.errors.ModelError` as :func:`~unirt.model.info.read_model` does; every
    other problem is a finding."""
    from unirt.model.info import read_model

    info = read_model(model)
    g = _Graph(info)
    findings: list[Finding] = []
    findings += _checker(g)
    findings += _attribute_ranks(g)
    findings = _shape_inference(g, findings)
    findings += _baked_dims(g)
    findings += _unused_initializers(g)
    findings += _engine_limits(info, registry, backends)
    findings.sort(key=lambda f: _RANK[f.severity])
    return LintReport(info.name, tuple(findings))


# -- the model as lint reads it -----------------------------------------------------------------
#: A name given to an unnamed dynamic input dim before inference, so that it propagates and a
#: node that pins it can be traced back to it.
_ANON = "unirt:{input}[{dim}]"


class _Graph:
    """The facts every check shares: the proto (weights stripped), per-tensor types from strict
    shape inference with data propagation (or, when that fails, the tolerant inference
    :class:`~unirt.model.info.ModelInfo` already holds), small integer constants, producers, and
    which symbolic dims vary with a declared-dynamic input dim."""

    def __init__(self, info: ModelInfo) -> None:
        import onnx

        from unirt.model.info import facts_of, iter_graphs, load_proto, strip_weights

        self.info = info
        proto = load_proto(info)
        strip_weights(proto)
        self.proto = proto
        self.graphs = list(iter_graphs(proto.graph))
        initializers = {t.name for t in proto.graph.initializer}
        #: symbolic dim -> the declared input dims it stands for: (input, dim index, dim_param)
        self.declared: dict[str, set[tuple[str, int, str | None]]] = {}
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        self._name_dims(copy, initializers)
        self.strict_error: str | None = None
        try:
            inferred = onnx.shape_inference.infer_shapes(copy, check_type=True, strict_mode=True,
                                                         data_prop=True)
            self.facts: Mapping[str, TypeFact] = facts_of(inferred)
        except Exception as exc:
            self.strict_error = str(exc)
            self.facts = info.value_types
            # The tolerant facts know input dims only by their declared names.
            self.declared = {k: v for k, v in self.declared.items() if not k.startswith("unirt:")}
        self.labels: list[tuple[str, str, int]] = []  # per info.nodes: (label, graph, index)
        seen: Counter[str] = Counter()
        for i, n in enumerate(info.nodes):
            self.labels.append((n.name or f"{n.op_type}#{i}", n.graph, seen[n.graph]))
            seen[n.graph] += 1
        self.producers: dict[str, int] = {}
        for i, n in enumerate(info.nodes):
            for o in n.outputs:
                if o:
                    self.producers.setdefault(o, i)
        self.consts = self._int_constants()
        self.origins = self._origins()

    def _name_dims(self, copy: onnx.ModelProto, initializers: set[str]) -> None:
        from unirt.tensor import normalize_dim

        for v in copy.graph.input:
            if v.name in initializers or v.type.WhichOneof("value") != "tensor_type":
                continue
            if not v.type.tensor_type.HasField("shape"):
                continue
            for i, d in enumerate(v.type.tensor_type.shape.dim):
                if d.HasField("dim_value") and d.dim_value >= 0:
                    continue
                param = normalize_dim(d.dim_param) if d.HasField("dim_param") else None
                if not isinstance(param, str):
                    param = _ANON.format(input=v.name, dim=i)
                    d.dim_param = param
                self.declared.setdefault(param, set()).add(
                    (v.name, i, None if param.startswith("unirt:") else param))

    def _int_constants(self) -> dict[str, tuple[int, ...]]:
        """Small integer tensors fixed in the model (initializers, Constant nodes): the shapes,
        ends and sizes a node can bake."""
        from onnx import AttributeProto, numpy_helper

        out: dict[str, tuple[int, ...]] = {}

        def keep(name: str, t: Any) -> None:
            if t.data_type in (6, 7) and math.prod(t.dims) <= 64:  # INT32, INT64
                # stripped or external data cannot be read: not a shape anyway
                with contextlib.suppress(Exception):
                    out.setdefault(name, tuple(int(x) for x in numpy_helper.to_array(t).ravel()))

        for _, graph in self.graphs:
            for t in graph.initializer:
                keep(t.name, t)
            for n in graph.node:
                if n.op_type != "Constant" or not n.output:
                    continue
                for a in n.attribute:
                    if a.type == AttributeProto.TENSOR:
                        keep(n.output[0], a.t)
                    elif a.name == "value_ints":
                        out.setdefault(n.output[0], tuple(int(x) for x in a.ints))
                    elif a.name == "value_int":
                        out.setdefault(n.output[0], (int(a.i),))
        return out

    def _origins(self) -> dict[str, frozenset[tuple[str, int, str | None]]]:
        """Symbolic dim -> the declared input dims it varies with. Declared names stand for
        themselves; a name shape inference made up (``unk__3``: the length after a strided
        Conv) varies with every declared dim the inputs of the node that first produced it
        carry. Empty for a name that varies with no input (a data-dependent size)."""
        origins = {k: frozenset(v) for k, v in self.declared.items()}
        for n in self.info.nodes:
            src: set[tuple[str, int, str | None]] = set()
            for name in n.inputs:
                for d in self.dims(name) or ():
                    if isinstance(d, str):
                        src |= origins.get(d, frozenset())
            for name in n.outputs:
                for d in self.dims(name) or ():
                    if isinstance(d, str) and d not in origins:
                        origins[d] = frozenset(src)
        return origins

    def dims(self, name: str) -> tuple[Dim, ...] | None:
        fact = self.facts.get(name) if name else None
        return None if fact is None else fact.dims

    def rank(self, name: str) -> int | None:
        fact = self.facts.get(name) if name else None
        return None if fact is None else fact.rank

    def variable(self, d: Dim) -> bool:
        return isinstance(d, str) and bool(self.origins.get(d))

    def node_detail(self, index: int) -> dict[str, Any]:
        _, graph, position = self.labels[index]
        return {"graph": graph, "index": position}

    def finding(self, severity: Severity, code: Code, index: int, text: str,
                **detail: Any) -> Finding:
        """A finding on node ``index`` of ``info.nodes``; ``text`` follows ``"Op 'name': "``."""
        node = self.info.nodes[index]
        label = self.labels[index][0]
        return Finding(severity, code, label, node.op_type, f"{node.op_type} '{label}': {text}",
                       {**self.node_detail(index), **detail})

    def find_node(self, name: str, op: str | None) -> int | None:
        for i, n in enumerate(self.info.nodes):
            if n.name == name and (op is None or n.op_type == op):
                return i
        return None


def _standard(node: NodeInfo) -> bool:
    return node.domain in ("", "ai.onnx")


# -- the ONNX checker and strict shape inference ------------------------------------------------
#: Shape inference finding the model's own type annotation (``value_info``, a declared output)
#: at odds with what it infers: a stale annotation, which ONNX Runtime merges with a warning and
#: runs (measured on the real-corpus ``slanet_plus``): a warning, not an error.
_STALE = ("Inferred shape and existing shape differ", "Inferred elem type differs from existing",
          "differs from existing")
#: A node whose input went untyped because an earlier node failed inference.
_CASCADE = "expected to have type but instead is null"
_CHECKER_NODE = re.compile(r"Name: (?P<node>\S*) OpType: (?P<op>\S+)", re.IGNORECASE)
_INFERENCE_NODE = re.compile(r"\(op_type:(?P<op>[^,()]+), node name: (?P<node>[^()]*?)\):\s*")
_TAG = re.compile(r"^(\s*\[[A-Za-z]+\]\s*)+")


def parse_checker_error(text: str) -> tuple[str | None, str | None, str]:
    """(node name, op type, message) from an ``onnx.checker`` error: its first line is the
    problem, a ``==> Context: Bad node spec for node. Name: n OpType: Relu`` line names the
    node. ``None`` where the text names no node (a problem of the graph)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    message = lines[0] if lines else text.strip()
    m = _CHECKER_NODE.search(text)
    if m is None:
        return None, None, message
    return (m.group("node") or None), m.group("op"), message


def parse_inference_errors(text: str) -> list[tuple[str | None, str | None, str]]:
    """[(node name, op type, message)] from an ``onnx.shape_inference`` error in strict mode:
    one per failing node (``(op_type:MaxPool, node name: p1): [ShapeInferenceError] ...``; a
    node inside a subgraph is the innermost one named). A message naming no node is one entry
    with ``None`` for both."""
    out: list[tuple[str | None, str | None, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        matches = list(_INFERENCE_NODE.finditer(line))
        if not matches:
            if not out or out[-1][0] is not None:
                out.append((None, None, _TAG.sub("", line).strip()))
            continue
        last = matches[-1]
        message = _TAG.sub("", line[last.end():]).strip() or line.strip()
        out.append((last.group("node").strip() or None, last.group("op").strip(), message))
    named = [e for e in out if e[0] is not None or e[1] is not None]
    return named or out[:1]


def _benign(message: str) -> bool:
    """A complaint engines accept (an output declared without a shape, custom ops, an opset
    newer than the installed onnx): the same list :func:`~unirt.model.info.validate_graph` lets
    pass, here an info rather than an error."""
    from unirt.model.info import BENIGN_CHECKER_ERRORS

    return any(p in message for p in BENIGN_CHECKER_ERRORS)


def _checker(g: _Graph) -> list[Finding]:
    """The structural half of ``check_model(full_check=True)`` on the file itself (so that
    external data is resolved next to the model); then, when it fails, each main-graph node on
    its own, since the checker stops at its first complaint."""
    import onnx

    info = g.info
    try:
        if info.path is not None:
            onnx.checker.check_model(str(info.path), full_check=False)
        else:
            assert info.data is not None
            onnx.checker.check_model(info.data, full_check=False)
        return []
    except Exception as exc:
        first = str(exc)
    found = [parse_checker_error(first)]
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = g.proto.ir_version
    ctx.opset_imports = {o.domain: o.version for o in g.proto.opset_import}
    for n in g.proto.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in n.attribute):
            continue  # checked alone, a subgraph's outer-scope names would look undefined
        try:
            onnx.checker.check_node(n, ctx)
        except Exception as exc:
            message = parse_checker_error(str(exc))[2]
            found.append((n.name or None, n.op_type, message))
    out: list[Finding] = []
    seen: set[tuple[str | None, str]] = set()
    for node, op, message in found:
        if (node, message) in seen or (None, message) in seen:
            continue
        seen.add((node, message))
        out.append(_onnx_finding(g, Code.CHECKER, "ONNX checker", node, op, message))
    return out


def _onnx_finding(g: _Graph, code: Code, who: str, node: str | None, op: str | None,
                  message: str, severity: Severity | None = None) -> Finding:
    if severity is None:
        severity = Severity.INFO if _benign(message) else Severity.ERROR
    note = " (engines accept this)" if _benign(message) else ""
    index = g.find_node(node, op) if node else None
    if index is not None:
        return g.finding(severity, code, index, f"{who}: {message}{note}", onnx=message)
    if op is not None:
        return Finding(severity, code, node, op, f"{op} '{node or '?'}': {who}: {message}{note}",
                       {"onnx": message})
    return Finding(severity, code, None, None, f"{who}: {message}{note}", {"onnx": message})


def _shape_inference(g: _Graph, earlier: list[Finding]) -> list[Finding]:
    """``earlier`` and strict shape inference's complaints, one per node. A node that a more
    specific check already explains (a pooling kernel of the wrong rank) keeps that finding,
    with onnx's words added to its detail as ``onnx``."""
    if g.strict_error is None:
        return earlier
    explained: dict[str, list[int]] = {}
    for k, f in enumerate(earlier):
        if f.node and f.severity == Severity.ERROR:
            explained.setdefault(f.node, []).append(k)
    out = list(earlier)
    errors = parse_inference_errors(g.strict_error)
    for node, op, message in errors:
        ks = explained.get(node, []) if node is not None else []
        if ks:  # the finding on the attribute onnx names, else the node's first
            k = next((k for k in ks if str(out[k].detail.get("attribute")) in message), ks[0])
            out[k] = replace(out[k], detail={**out[k].detail, "shape_inference": message})
            continue
        severity = None
        if any(p in message for p in _STALE):
            severity, message = Severity.WARNING, f"{message} (the model's own annotation " \
                "disagrees with inference; engines infer their own)"
        elif _CASCADE in message and len(errors) > 1:
            severity, message = Severity.INFO, f"{message} (follows from the failure above)"
        out.append(_onnx_finding(g, Code.SHAPE_INFERENCE, "shape inference", node, op, message,
                                 severity))
    return out


# -- attributes against input ranks -------------------------------------------------------------
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "MaxUnpool"})
#: Convolutions -> the index of their weight input.
_CONVS = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3, "DeformConv": 1}
#: Attributes with one value per spatial axis (pads: two).
_SPATIAL_ATTRS = (("kernel_shape", 1), ("strides", 1), ("dilations", 1), ("pads", 2),
                  ("output_padding", 1))


def _attribute_ranks(g: _Graph) -> list[Finding]:
    """A pooling or convolution whose per-axis attributes are for another number of spatial axes
    than its input has: what PyTorch writes for ``MaxPool3d`` on a 4-D tensor. Every engine
    refuses it; ``pool-kernel-rank`` is what the pool-rank rewrite repairs."""
    out: list[Finding] = []
    for i, node in enumerate(g.info.nodes):
        if not _standard(node) or (node.op_type not in _POOLS and node.op_type not in _CONVS):
            continue
        if not node.inputs:
            continue
        rank = g.rank(node.inputs[0])
        if rank is None:
            continue
        code = Code.POOL_KERNEL_RANK if node.op_type in _POOLS else Code.CONV_KERNEL_RANK
        spatial = max(rank - 2, 0)
        for attr, per_axis in _SPATIAL_ATTRS:
            value = node.attributes.get(attr)
            if not isinstance(value, tuple) or not value or len(value) == per_axis * spatial:
                continue
            unit = "dims" if attr == "kernel_shape" else "values"
            out.append(g.finding(
                Severity.ERROR, code, i, f"{attr} has {len(value)} {unit}, input has rank {rank}",
                attribute=attr, value=list(value), length=len(value), input=node.inputs[0],
                input_rank=rank, expected=per_axis * spatial))
        w = _CONVS.get(node.op_type)
        if w is not None and len(node.inputs) > w and node.inputs[w]:
            wrank = g.rank(node.inputs[w])
            if wrank is not None and wrank != rank:
                out.append(g.finding(
                    Severity.ERROR, code, i, f"weight '{node.inputs[w]}' has rank {wrank}, "
                    f"input has rank {rank}", attribute=None, weight=node.inputs[w],
                    weight_rank=wrank, input=node.inputs[0], input_rank=rank, expected=rank))
    return out


# -- declared-dynamic dims pinned to one size ---------------------------------------------------
#: Ops whose inputs broadcast against each other (numpy rules): a dynamic dim meeting a fixed
#: size > 1 is pinned to it.
_BROADCAST = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Mean", "Sum", "Where", "Equal",
    "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "PRelu"})
#: Ops that make a tensor of a size written in the model: where a pinned size comes from.
_SIZE_SOURCES = frozenset({"Slice", "ConstantOfShape", "Expand", "Reshape", "Tile", "Range",
                           "Resize", "Pad"})
#: Of those, the ones whose every input is a size (the rest take data first).
_ALL_SIZES = frozenset({"ConstantOfShape", "Range"})


def _baked_dims(g: _Graph) -> list[Finding]:
    if not g.declared:
        return []
    out: list[Finding] = []
    seen: set[tuple[Any, ...]] = set()
    for i, node in enumerate(g.info.nodes):
        if not _standard(node) or not node.outputs or not node.outputs[0]:
            continue
        if node.op_type == "Reshape" and len(node.inputs) >= 2:
            found = _baked_reshape(g, i, node)
        elif node.op_type in _BROADCAST or node.op_type in ("Expand", "Concat"):
            found = _baked_meet(g, i, node)
        else:
            continue
        for f in found:
            key = (f.node, f.detail.get("input"), f.detail.get("dim"))
            if key not in seen:
                seen.add(key)
                out.append(f)
    return out + _baked_hidden(g, {f.node for f in out})


def _baked_hidden(g: _Graph, named: set[str | None]) -> list[Finding]:
    """Reshapes baking a traced size downstream of one that does: behind the first, shapes are
    static and the second looks like any Reshape. Found as the un-baking rewrite finds them
    (:func:`unirt.rewrite.builtin.unbake.all_baked`: detection re-run with the earlier ones
    freed), so that lint names every node the opt-in rewrite will edit."""
    from unirt.rewrite.builtin.unbake import all_baked

    if not any(n.op_type == "Reshape" for n in g.info.nodes):
        return []
    try:
        hidden = [b for b in all_baked(g.proto) if b.after]
    except Exception as exc:  # a model shape inference cannot follow once freed: say nothing
        logger.debug("lint: baked Reshapes after the first not traced: %s", exc)
        return []
    out: list[Finding] = []
    for b in hidden:
        i = next((k for k, n in enumerate(g.info.nodes) if not n.graph and n.op_type ==
                  "Reshape" and (n.name or n.outputs[0]) == b.node), None)
        if i is None or g.labels[i][0] in named:
            continue
        shape = g.consts.get(b.shape)
        what = f"the constant shape {list(shape)}" if shape is not None else "its shape"
        before = ", ".join(f"'{n}'" for n in b.after)
        out.append(g.finding(
            Severity.WARNING, Code.BAKED_DYNAMIC_DIM, i,
            f"input '{b.input}' dim {b.dim} is declared dynamic ('{b.dim_param}') but {what} "
            f"bakes it to {b.traced} too (hidden behind the baked Reshape {before}: shown once "
            f"that is freed); any other size fails", input=b.input, dim=b.dim,
            dim_param=b.dim_param, tensor=g.info.nodes[i].inputs[0], tensor_dim=None,
            derived=False, value=b.traced, constant=b.shape if shape is not None else None,
            shape=list(shape) if shape is not None else None, position=b.index,
            product_of=None, after=list(b.after)))
    return out


def _describe_dim(g: _Graph, tensor: str, index: int, sym: str
                  ) -> tuple[str, dict[str, Any]]:
    """How a message names a dynamic dim, and the facts of the declared input dim behind it."""
    origins = sorted(g.origins.get(sym, ()), key=lambda o: (o[0], o[1]))
    inp, dim, param = origins[0]
    named = f"('{param}')" if param else "(unnamed)"
    derived = sym not in g.declared
    if derived:
        text = f"dim {index} of '{tensor}' varies with input '{inp}' dim {dim}, declared " \
               f"dynamic {named},"
    else:
        text = f"input '{inp}' dim {dim} is declared dynamic {named}"
    facts = {"input": inp, "dim": dim, "dim_param": param, "tensor": tensor,
             "tensor_dim": index, "derived": derived}
    if len(origins) > 1:
        facts["origins"] = [list(o) for o in origins]
    return text, facts


def _positions(shape: Sequence[int] | None, value: int, prefer: int | None) -> int | None:
    if shape is None:
        return None
    hits = [k for k, v in enumerate(shape) if v == value]
    if not hits:
        return None
    return prefer if prefer in hits else hits[0]


def _baked_reshape(g: _Graph, i: int, node: NodeInfo) -> list[Finding]:
    """A Reshape whose output is fully determined while its input varies with a declared
    dynamic dim that the output does not carry: the element counts agree at one size only.
    ``[0, -1, 4]`` or ``[1, -1]`` leave an output dim unknown, and a shape computed with
    ``Shape`` carries the dim through: neither is flagged."""
    x, y = node.inputs[0], node.outputs[0]
    xd, yd = g.dims(x), g.dims(y)
    if xd is None or yd is None or any(d is None for d in (*xd, *yd)):
        return []
    in_syms = Counter(d for d in xd if isinstance(d, str))
    out_syms = Counter(d for d in yd if isinstance(d, str))
    if out_syms - in_syms:
        return []  # the output has a size the input does not: not determined by this node
    left = in_syms - out_syms
    if not left or not all(g.variable(s) for s in left):
        return []
    in_fixed = math.prod(d for d in xd if isinstance(d, int))
    out_fixed = math.prod(d for d in yd if isinstance(d, int))
    if in_fixed == 0 or out_fixed % in_fixed:
        return []
    value = out_fixed // in_fixed
    syms = list(left.elements())
    sym = syms[0]
    index = xd.index(sym)
    text, facts = _describe_dim(g, x, index, sym)
    shape_name = node.inputs[1]
    shape = g.consts.get(shape_name)
    position = _positions(shape, value, index) if len(syms) == 1 else None
    what = (f"the constant shape {list(shape)}" if shape is not None
            else f"its shape (computed to {_show(yd)})")
    if len(syms) == 1:
        tail = f"but {what} bakes it to {value}; any other size fails"
    else:
        names = ", ".join(f"'{s}'" for s in syms)
        tail = f"but {what} fixes the product of dims {names} at {value}; any other size fails"
    return [g.finding(Severity.WARNING, Code.BAKED_DYNAMIC_DIM, i, f"{text} {tail}",
                      **facts, value=value, constant=shape_name if shape is not None else None,
                      shape=list(shape) if shape is not None else None, position=position,
                      product_of=syms if len(syms) > 1 else None)]


def _baked_meet(g: _Graph, i: int, node: NodeInfo) -> list[Finding]:
    """A declared dynamic dim meeting a fixed size > 1 where the two must agree (broadcasting,
    Expand, the non-axis dims of Concat): shape inference takes the fixed size, and the model
    runs at that size only. Named at the node the size comes from where it is a constant
    Slice, ConstantOfShape or Expand (where an un-baking would edit it), else at the meeting."""
    yd = g.dims(node.outputs[0])
    if yd is None:
        return []
    axis = None
    operands = [n for n in node.inputs if n]
    if node.op_type == "Concat":
        a = node.attributes.get("axis")
        axis = a + len(yd) if isinstance(a, int) and a < 0 else a
    elif node.op_type == "Expand":
        operands = operands[:1]
    out: list[Finding] = []
    for name in operands:
        xd = g.dims(name)
        if xd is None or len(xd) > len(yd) or (axis is not None and len(xd) != len(yd)):
            continue
        offset = len(yd) - len(xd)
        for k, d in enumerate(xd):
            p = k + offset
            size = yd[p]
            if p == axis or not g.variable(d) or not isinstance(size, int) or size <= 1:
                continue
            assert isinstance(d, str)
            text, facts = _describe_dim(g, name, k, d)
            out.append(_meet_finding(g, i, node, name, p, size, text, facts))
    return out


def _meet_finding(g: _Graph, i: int, node: NodeInfo, tensor: str, p: int, size: int,
                  text: str, facts: dict[str, Any]) -> Finding:
    yd = g.dims(node.outputs[0]) or ()
    if node.op_type == "Expand" and len(node.inputs) > 1:
        shape = g.consts.get(node.inputs[1])
        position = None if shape is None else p - (len(yd) - len(shape))
        what = f"the constant shape {list(shape)}" if shape is not None else "its shape"
        return g.finding(Severity.WARNING, Code.BAKED_DYNAMIC_DIM, i,
                         f"{text} but {what} bakes it to {size}; any other size fails",
                         **facts, value=size, constant=node.inputs[1] if shape else None,
                         shape=list(shape) if shape is not None else None,
                         position=position if position is not None and position >= 0 else None)
    for other in node.inputs:
        od = g.dims(other) if other and other != tensor else None
        if od is None or p - (len(yd) - len(od)) < 0 or od[p - (len(yd) - len(od))] != size:
            continue
        where = f"meets it at {node.op_type} '{g.labels[i][0]}'"
        src = g.producers.get(other)
        if src is not None and g.info.nodes[src].op_type in _SIZE_SOURCES:
            s = g.info.nodes[src]
            for c in (s.inputs if s.op_type in _ALL_SIZES else s.inputs[1:]):
                values = g.consts.get(c)
                if values is not None and size in values:
                    return g.finding(
                        Severity.WARNING, Code.BAKED_DYNAMIC_DIM, src,
                        f"{text} but this node's constant '{c}' {list(values)} bakes it to "
                        f"{size} ({where}); any other size fails", **facts, value=size,
                        constant=c, shape=list(values), position=values.index(size),
                        meets={"node": g.labels[i][0], "op": node.op_type,
                               **g.node_detail(i)})
        kind = "a constant" if other in g.info.constants else "a tensor"
        return g.finding(Severity.WARNING, Code.BAKED_DYNAMIC_DIM, i,
                         f"{text} but meets a fixed size {size} here ({kind} '{other}' of "
                         f"shape {_show(od)}); any other size fails", **facts, value=size,
                         constant=None, shape=None, position=None, operand=other)
    return g.finding(Severity.WARNING, Code.BAKED_DYNAMIC_DIM, i,
                     f"{text} but meets a fixed size {size} here; any other size fails",
                     **facts, value=size, constant=None, shape=None, position=None)


def _show(dims: Iterable[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


# -- unused initializers ------------------------------------------------------------------------
def _unused_initializers(g: _Graph) -> list[Finding]:
    """Initializers no node reads and no graph returns: dead weight every engine loads (ONNX
    Runtime removes them with a warning of its own)."""
    from unirt.model.info import ELEMENT_BITS

    used: set[str] = set()
    for _, graph in g.graphs:
        for n in graph.node:
            used.update(n.input)
        used.update(o.name for o in graph.output)
    out: list[Finding] = []
    for path, graph in g.graphs:
        tensors = [*graph.initializer, *(s.values for s in graph.sparse_initializer)]
        for t in tensors:
            if t.name in used:
                continue
            import onnx

            type_name = onnx.TensorProto.DataType.Name(t.data_type) if t.data_type in \
                onnx.TensorProto.DataType.values() else str(t.data_type)
            bits = ELEMENT_BITS.get(type_name)
            size = None if bits is None else (math.prod(t.dims) * bits + 7) // 8
            where = f" in {path}" if path else ""
            out.append(Finding(
                Severity.WARNING, Code.UNUSED_INITIALIZER, None, None,
                f"initializer '{t.name}' {list(t.dims)}{where} is not used by any node",
                {"initializer": t.name, "graph": path, "dims": list(t.dims),
                 "dtype": type_name.lower(), "bytes": size}))
    return out


def _engine_limits(info: ModelInfo, registry: Registry | None,
                   backends: Sequence[str] | None) -> list[Finding]:
    import onnx

    from unirt.plugin.inventory import engine_limits

    out: list[Finding] = []
    opset = info.opsets.get("", info.opsets.get("ai.onnx"))
    known_opset, known_ir = onnx.defs.onnx_opset_version(), onnx.IR_VERSION
    if opset is not None and opset > known_opset:
        out.append(Finding(Severity.WARNING, Code.OPSET_UNSUPPORTED, None, None,
                           f"opset {opset} is newer than the installed onnx knows ({known_opset}):"
                           " the checker and shape inference cannot judge it",
                           {"opset": opset, "onnx_max_opset": known_opset}))
    if info.ir_version > known_ir:
        out.append(Finding(Severity.WARNING, Code.IR_UNSUPPORTED, None, None,
                           f"IR version {info.ir_version} is newer than the installed onnx knows "
                           f"({known_ir})", {"ir_version": info.ir_version,
                                             "onnx_max_ir": known_ir}))
    if backends is not None and not backends:
        return out
    limits = engine_limits(backends, registry)
    if not limits:
        return out
    if opset is not None:
        out += _version_finding(limits, "opset", opset, Code.OPSET_UNSUPPORTED,
                                lambda e: e.refused_opset, lambda e: e.measured_opset)
        out += _op_opsets(info, limits, opset)
    out += _version_finding(limits, "IR version", info.ir_version, Code.IR_UNSUPPORTED,
                            lambda e: e.refused_ir, lambda e: e.measured_ir)
    return out


def _engine(e: EngineLimits) -> str:
    return f"{e.backend} {e.version}" if e.version else e.backend


def _version_finding(limits: list[EngineLimits], what: str, value: int, code: Code,
                     refused: Any, measured: Any) -> list[Finding]:
    """One finding on the model's opset (or IR version) across the engines: ERROR when every
    engine is known to refuse it, WARNING when some do or when none was measured that high,
    INFO when only some were not measured that high."""
    refusing = [e for e in limits if refused(e) is not None and value >= refused(e)]
    untested = [e for e in limits if e not in refusing and measured(e) is not None
                and value > measured(e)]
    loading = [e.backend for e in limits if e not in refusing and e not in untested]
    if not refusing and not untested:
        return []
    parts = [f"{_engine(e)} refuses {what} {refused(e)} and above" for e in refusing]
    if untested:
        parts.append(", ".join(f"{_engine(e)}" for e in untested) + " measured only up to "
                     + ", ".join(sorted({str(measured(e)) for e in untested})))
    if loading:
        parts.append(f"{', '.join(loading)} load it")
        severity = Severity.WARNING if refusing else Severity.INFO
    elif untested:
        parts.append("no installed engine is known to load it")
        severity = Severity.WARNING
    else:
        parts.append("no installed engine loads it")
        severity = Severity.ERROR
    key = "opset" if what == "opset" else "ir_version"
    return [Finding(severity, code, None, None, f"{what} {value}: " + "; ".join(parts),
                    {key: value, "loads": loading,
                     "refused_by": {e.backend: {"version": e.version,
                                                "refuses_from": refused(e),
                                                "max": refused(e) - 1} for e in refusing},
                     "untested_on": {e.backend: measured(e) for e in untested}})]


def _op_opsets(info: ModelInfo, limits: list[EngineLimits], opset: int) -> list[Finding]:
    """Ops an engine refuses at the model's opset though it loads the opset itself."""
    from unirt.capability.features import op_key

    first: dict[str, NodeInfo] = {}
    for n in info.nodes:
        if _standard(n):
            first.setdefault(op_key(n.op_type, n.domain), n)
    out: list[Finding] = []
    for key, node in first.items():
        refusing = [e for e in limits
                    if (e.refused_opset is None or opset < e.refused_opset)
                    and key in e.op_refused_opset and opset >= e.op_refused_opset[key]]
        if not refusing:
            continue
        who = ", ".join(f"{_engine(e)} (from opset {e.op_refused_opset[key]})"
                        for e in refusing)
        label = node.name or key
        out.append(Finding(Severity.WARNING, Code.OPSET_UNSUPPORTED, label, node.op_type,
                           f"{node.op_type} '{label}': at opset {opset}, {who} refuses "
                           f"{node.op_type}", {"opset": opset, "op": key,
                                               "refused_by": {e.backend: {
                                                   "version": e.version,
                                                   "refuses_from": e.op_refused_opset[key],
                                                   "max": e.op_refused_opset[key] - 1}
                                                   for e in refusing}}))
    return out
