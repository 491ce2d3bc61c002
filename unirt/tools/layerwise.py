"""``--layerwise``: the node where a backend's numbers first go wrong, and whether that node is
to blame.

A model's output being wrong says nothing about where. The search exposes a few intermediate
tensors per round as extra graph outputs (a k-ary search along the topological order, so a big
model is never asked for every tensor at once) and compares each with the reference's, float,
integer and boolean alike (a quantized model goes wrong in its int8/int32 part first, and a
float-only search then blames the Cast that leaves it).

A k-ary search assumes that once a tensor agrees, everything before it agrees; a graph with
branches breaks that (a float branch that agrees sits between an integer one that does not and
the join). So the blamed node's inputs are checked: when one of them already differs, the
search starts again below its producer, until the node found has inputs that agree and an
output that does not.

Even then the node need not be wrong: differences within tolerance at its inputs can become
large at its output (Softmax over inputs of magnitude 1e9). The node is run alone, a one-node
model fed the reference's values of its inputs, on the backend and on the reference: wrong alone
is an engine bug in that node; right alone, it is run on the reference with the *backend's*
input values: when that reproduces the backend's output, the inputs' differences explain it (an
ill-conditioned or cumulative case, said with the magnitudes), and otherwise the backend computes
the node differently inside the model (a fusion with its neighbours). Every engine run happens
in a child (:mod:`unirt.process.isolation`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unirt.errors import UnirtError
from unirt.evidence.agreement import tolerance, within
from unirt.evidence.child_ops import new_state
from unirt.evidence.hints import hinted_feeds
from unirt.evidence.probe import DEFAULT_TIMEOUT, reference_name, run_sets
from unirt.model.info import ModelInfo, ModelSource, read_model
from unirt.process.isolation import Worker
from unirt.words import Word

logger = logging.getLogger("unirt")


class LayerStatus(Word):
    DIVERGES = "diverges"
    NO_DIVERGENCE = "no divergence"
    #: The divergence moves or vanishes with the tensors exposed: the engine computes the model
    #: differently when intermediates are outputs (fusion), so it cannot be located this way.
    UNSTABLE = "unstable"
    ERROR = "error"


class _Unstable(Exception):
    """Raised by the search when the node it ends at agrees after all (see UNSTABLE)."""


class Alone(Word):
    """What running the blamed node alone, on the reference's values of its inputs, showed."""

    #: Wrong alone: the engine computes this node wrong (a kernel bug).
    WRONG = "wrong alone"
    #: Right alone, and the reference fed the backend's inputs gives the backend's output: the
    #: inputs' (small) differences are amplified here. Not the engine's fault at this node.
    AMPLIFIED = "right alone, amplifies its inputs' differences"
    #: Right alone, but the reference on the backend's inputs does not give the backend's
    #: output: the engine computes the node differently inside the model (fused with others).
    IN_CONTEXT = "right alone, wrong inside the model"
    #: The one-node model could not be run (the reason is in the report).
    UNCHECKED = "not checked alone"


@dataclass
class TensorError:
    """How one tensor differs: ``max_abs``, ``max_rel`` (normwise: ``max_abs / magnitude``),
    ``magnitude`` (largest ``|reference|``), ``differing`` (values not equal, for integer and
    boolean tensors), ``ok`` (within tolerance; integers and booleans must be equal)."""

    name: str
    dtype: str
    max_abs: float
    max_rel: float
    magnitude: float
    ok: bool
    differing: int = 0
    size: int = 0
    problem: str | None = None

    def text(self) -> str:
        if self.problem:
            return f"{self.name} ({self.dtype}): {self.problem}"
        if self.dtype.startswith(("int", "uint", "bool")):
            if not self.differing:
                return f"{self.name} ({self.dtype}): equal"
            return (f"{self.name} ({self.dtype}): {self.differing} of {self.size} values "
                    f"differ, by up to {self.max_abs:.4g}")
        if not self.magnitude:
            return f"{self.name}: max abs {self.max_abs:.3g} where the reference is all 0"
        return (f"{self.name}: max abs {self.max_abs:.3g}, rel {self.max_rel:.2g} of "
                f"magnitude {self.magnitude:.3g}")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def tensor_error(name: str, got: Any, ref: Any, precision: str = "exact",
                 atol: float | None = None, rtol: float | None = None) -> TensorError:
    """Compare one tensor with the reference's (any numeric or boolean dtype)."""
    a, r = np.asarray(got), np.asarray(ref)
    dtype = str(r.dtype)
    if a.shape != r.shape:
        return TensorError(name, dtype, float("inf"), float("inf"), 0.0, False, size=r.size,
                           problem=f"shape {list(a.shape)} != reference {list(r.shape)}")
    if r.dtype.kind in "OUSV" or a.dtype.kind in "OUSV":
        equal = bool(np.array_equal(a, r))
        return TensorError(name, dtype, 0.0 if equal else float("inf"),
                           0.0 if equal else float("inf"), 0.0, equal, size=r.size,
                           problem=None if equal else "non-numeric values differ")
    if r.size == 0:
        return TensorError(name, dtype, 0.0, 0.0, 0.0, True)
    # Flat: a rank-0 tensor (DynamicQuantizeLinear's scale) would make ``d`` a numpy scalar.
    fa, fr = a.astype(np.float64).reshape(-1), r.astype(np.float64).reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(fa - fr)
    both_nan = np.isnan(fa) & np.isnan(fr)
    d[both_nan | (fa == fr)] = 0.0  # equal infinities, NaN where the reference has NaN
    finite = fr[np.isfinite(fr)]
    magnitude = float(np.abs(finite).max()) if finite.size else 0.0
    max_abs = float(np.nanmax(d)) if not np.isnan(d).all() else float("nan")
    if np.isnan(d).any():
        max_abs = float("inf")  # NaN where the reference has a number, or the other way
    differing = int(np.count_nonzero(d))
    max_rel = max_abs / magnitude if magnitude else (0.0 if max_abs == 0 else float("inf"))
    ok = within(a, r, *tolerance(precision, r, atol, rtol))
    return TensorError(name, dtype, max_abs, max_rel, magnitude, ok, differing, int(r.size))


@dataclass
class LayerStep:
    """A node on the divergence path: the errors at its outputs and inputs (max abs, and in
    ``tensors`` relative error and magnitude too), and what running it alone showed."""

    node: str
    op: str
    index: int
    output_errors: dict[str, float]
    input_errors: dict[str, float]
    tensors: dict[str, TensorError] = field(default_factory=dict)
    alone: Alone = Alone.UNCHECKED
    #: The one-node run's errors on the backend (against the reference), or why it did not run.
    alone_errors: dict[str, TensorError] = field(default_factory=dict)
    alone_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["tensors"] = {k: v.as_dict() for k, v in self.tensors.items()}
        d["alone_errors"] = {k: v.as_dict() for k, v in self.alone_errors.items()}
        d["alone"] = str(self.alone)
        return d


@dataclass
class LayerwiseReport:
    """``first``: the node the search ends at (inputs agree, output does not); ``verdict``:
    one sentence on whether it is to blame (confirmed alone, amplified, inside the model);
    ``ill_conditioned``: the sentence naming an ill-conditioned node, when it is one;
    ``origin``: where the amplified difference comes from, when the search walked upstream."""

    model: str
    backend: str
    status: str  # LayerStatus
    reason: str = ""
    first: LayerStep | None = None
    probes: list[dict[str, Any]] = field(default_factory=list)  # node index, tensor, errors
    rounds: int = 0
    verdict: str = ""
    ill_conditioned: str = ""
    origin: LayerStep | None = None
    restarts: int = 0  # searches restarted because the node found had an input that differed

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "status": str(self.status),
                "reason": self.reason, "first": self.first.as_dict() if self.first else None,
                "probes": self.probes, "rounds": self.rounds, "verdict": self.verdict,
                "ill_conditioned": self.ill_conditioned, "restarts": self.restarts,
                "origin": self.origin.as_dict() if self.origin else None}

    def text(self) -> str:
        """The report as the CLI prints it."""
        head = f"layerwise {self.backend}: "
        if self.status != LayerStatus.DIVERGES or self.first is None:
            return head + str(self.status) + (f" ({self.reason})" if self.reason else "")
        f = self.first
        outs = "; ".join(f.tensors[k].text() for k in f.output_errors if k in f.tensors)
        ins = "; ".join(f.tensors[k].text() for k in f.input_errors if k in f.tensors)
        lines = [head + f"first divergence at node {f.node!r} ({f.op}, #{f.index}) after "
                 f"{self.rounds} rounds", f"  output: {outs}", f"  inputs: {ins or 'model inputs'}"]
        if self.verdict:
            lines.append(f"  {self.verdict}")
        if self.ill_conditioned:
            lines.append(f"  ill-conditioned: {self.ill_conditioned}")
        if self.reason:
            lines.append(f"  note: {self.reason}")
        return "\n".join(lines)


# -- graph surgery ------------------------------------------------------------------------------
def typed_tensors(proto: Any) -> dict[str, Any]:
    """ValueInfo of every tensor whose element type is known after shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shape inference fails on some real models: use what is declared
        inferred = proto
    g = inferred.graph
    return {v.name: v for v in [*g.value_info, *g.input, *g.output]
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}


def with_outputs(proto: Any, names: Sequence[str], typed: Mapping[str, Any]) -> Any:
    """A copy of ``proto`` with ``names`` added to its outputs (typed where the type is known:
    an untyped output is named only, which ONNX Runtime accepts)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(typed[n] if n in typed else onnx.ValueInfoProto(name=n))
            have.add(n)
    return m


def subgraph_model(proto: Any, nodes: Sequence[Any], values: Mapping[str, np.ndarray],
                   outputs: Sequence[str] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """A model of ``nodes`` alone (in the given order) and its feeds.

    A tensor the nodes consume but do not produce is an initializer of the model when it is one
    there or comes out of a Constant node; otherwise an input, fed ``values[name]`` (the
    reference's value). Outputs: ``outputs``, or the tensors the nodes produce that the model's
    outputs or its other nodes read. Opsets and model-local functions are kept.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {i.name: i for i in g.initializer}
    constants = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    produced = {o for n in nodes for o in n.output if o}
    consumed: list[str] = []
    for n in nodes:
        consumed += [i for i in n.input if i and i not in produced and i not in consumed]
    graph_inputs, initializers, feeds = [], [], {}
    for name in consumed:
        if name in inits:
            initializers.append(inits[name])
        elif name not in values:
            raise UnirtError(f"no value for tensor {name!r} (its type is unknown)")
        elif name in constants:
            initializers.append(numpy_helper.from_array(np.asarray(values[name]), name))
        else:
            arr = np.asarray(values[name])
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)))
            feeds[name] = arr
    if outputs is None:
        # The cut's boundary: what the model's outputs or its other nodes read (a tensor no
        # node reads, Dropout's mask, is no part of what the model computes).
        chosen = {id(n) for n in nodes}
        read_outside = {i for n in g.node if id(n) not in chosen for i in n.input}
        read_outside |= {o.name for o in g.output}
        outputs = [o for n in nodes for o in n.output if o in read_outside]
        if not outputs:  # dead nodes only: what they produce that the set does not read
            inside = {i for n in nodes for i in n.input}
            outputs = [o for n in nodes for o in n.output if o and o not in inside]
    outs = []
    for name in outputs:
        if name in values:
            arr = np.asarray(values[name])
            outs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape)))
        else:
            outs.append(onnx.ValueInfoProto(name=name))
    graph = helper.make_graph([_copy(n) for n in nodes], f"{g.name or 'graph'}_sub",
                              graph_inputs, outs, initializers)
    m = helper.make_model(graph, opset_imports=list(proto.opset_import),
                          producer_name="unirt", ir_version=proto.ir_version)
    m.functions.extend(proto.functions)
    return m, feeds


def _copy(node: Any) -> Any:
    import onnx

    n = onnx.NodeProto()
    n.CopyFrom(node)
    return n


# -- running ------------------------------------------------------------------------------------
class Prober:
    """Runs models on the reference and on the backend in two long-lived children.

    Modified copies are written to ``workdir``, next to links to the model's external data, so
    they still find their weights."""

    def __init__(self, info: ModelInfo, backend: str, precision: str, atol: float | None,
                 rtol: float | None, timeout: float, workdir: Path) -> None:
        import onnx

        self.info, self.backend = info, backend
        self.precision, self.atol, self.rtol, self.timeout = precision, atol, rtol, timeout
        self.workdir = workdir
        self.proto = onnx.load(str(info.path), load_external_data=False) if info.path else \
            onnx.load_from_string(info.data or b"")
        for f in info.external_data:
            target = workdir / f.relative_to(info.path.parent) if info.path else None
            if target is not None and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f, target)
        self.typed = typed_tensors(self.proto)
        self.ref_worker, self.be_worker = Worker(new_state), Worker(new_state)
        self.count = 0

    def save(self, model: Any) -> str:
        import onnx

        self.count += 1
        path = self.workdir / f"probe{self.count}.onnx"
        onnx.save(model, str(path))
        return str(path)

    def run(self, model: Any, feeds: Mapping[str, np.ndarray], outputs: list[str] | None,
            who: str) -> dict[str, np.ndarray]:
        """``model``'s outputs on the reference (``who="reference"``) or the backend; raises
        UnirtError with the outcome when the run fails."""
        path = self.save(model)
        ref = who == "reference"
        worker = self.ref_worker if ref else self.be_worker
        backend, precision = (reference_name(), "exact") if ref else (self.backend,
                                                                      self.precision)
        opened, sets = run_sets(worker, path, backend, [dict(feeds)], precision,
                                outputs=outputs, timeout=self.timeout)
        bad = opened if not opened.ok else sets[0].outcome
        if not bad.ok:
            raise UnirtError(f"{'the reference' if ref else backend} failed: {bad.describe()}")
        assert sets[0].outputs is not None  # an ok outcome carries outputs
        return dict(sets[0].outputs)

    def compare(self, got: Mapping[str, Any], ref: Mapping[str, Any],
                names: Sequence[str]) -> dict[str, TensorError]:
        return {t: tensor_error(t, got[t], ref[t], self.precision, self.atol, self.rtol)
                for t in names}

    def close(self) -> None:
        self.ref_worker.close()
        self.be_worker.close()


class _Search:
    """The state of one layerwise search on a model (see the module's docstring)."""

    def __init__(self, prober: Prober, feeds: dict[str, np.ndarray], fanout: int,
                 report: LayerwiseReport) -> None:
        self.p, self.feeds, self.fanout, self.report = prober, feeds, fanout, report
        self.nodes = list(prober.proto.graph.node)
        self.inits = {t.name for t in prober.proto.graph.initializer}
        # One tensor stands for each node whose outputs have a known type (any element type).
        self.cands: list[tuple[int, str]] = []
        self.pos: dict[int, int] = {}
        self.producer: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                self.producer[o] = i
            typed = [o for o in n.output if o in prober.typed]
            if typed:
                self.pos[i] = len(self.cands)
                self.cands.append((i, typed[0]))
        self.ref_values: dict[str, np.ndarray] = {}
        self.got_values: dict[str, np.ndarray] = {}

    def errors(self, tensors: list[str], keep: bool = False) -> dict[str, TensorError]:
        """One round: the model with ``tensors`` as extra outputs, on both sides."""
        model = with_outputs(self.p.proto, tensors, self.p.typed)
        try:
            ref = self.p.run(model, self.feeds, tensors, "reference")
            got = self.p.run(model, self.feeds, tensors, "backend")
        except UnirtError as exc:
            raise UnirtError(f"with extra outputs, {exc}") from exc
        self.report.rounds += 1
        if keep:
            self.ref_values.update({t: ref[t] for t in tensors})
            self.got_values.update({t: got[t] for t in tensors})
        return self.p.compare(got, ref, tensors)

    def note(self, pos: int, e: TensorError) -> None:
        self.report.probes.append({"index": self.cands[pos][0], "tensor": e.name,
                                   "max_abs": e.max_abs, "max_rel": e.max_rel,
                                   "magnitude": e.magnitude, "ok": e.ok})

    def bisect(self, hi: int) -> int:
        """The first candidate at or below ``hi`` (which diverges) whose predecessors, as far
        as the k-ary search sees, agree."""
        lo = -1
        while hi - lo > 1:
            span = hi - lo - 1
            step = max(1, -(-span // self.fanout))
            picks = list(range(lo + step, hi, step))[:self.fanout]
            tensors = [self.cands[q][1] for q in picks]
            errs = self.errors(tensors)
            for q, t in zip(picks, tensors):
                self.note(q, errs[t])
            first_bad = next((q for q, t in zip(picks, tensors) if not errs[t].ok), None)
            if first_bad is None:
                lo = picks[-1]
            else:
                hi = first_bad
                earlier = [q for q in picks if q < first_bad]
                lo = earlier[-1] if earlier else lo
        return hi

    def step(self, idx: int) -> tuple[LayerStep, list[str]]:
        """The node at ``idx`` with every probed output and input; and its inputs that differ."""
        node = self.nodes[idx]
        outs = [o for o in node.output if o and o in self.p.typed]
        ins = [i for i in dict.fromkeys(node.input)
               if i and i in self.p.typed and i not in self.inits]
        errs = self.errors(outs + [i for i in ins if i not in outs], keep=True)
        s = LayerStep(node.name or f"#{idx}", node.op_type, idx,
                      {t: errs[t].max_abs for t in outs}, {t: errs[t].max_abs for t in ins},
                      {t: errs[t] for t in outs + ins})
        bad_ins = [i for i in ins if not errs[i].ok and i in self.producer]
        return s, bad_ins

    def find(self, hi: int) -> LayerStep:
        """The node whose inputs agree and whose output does not, at or below candidate ``hi``:
        after each k-ary search, an input that already differs restarts it below its
        producer."""
        while True:
            hi = self.bisect(hi)
            s, bad_ins = self.step(self.cands[hi][0])
            if not bad_ins and all(s.tensors[t].ok for t in s.output_errors
                                   if t in s.tensors):
                raise _Unstable(
                    f"node {s.node!r} ({s.op}) diverged with some tensors exposed and agrees "
                    "with others: the engine computes the model differently depending on "
                    "which intermediates are outputs (fusion), so layerwise cannot locate it; "
                    "`unirt reduce` on the model can")
            if not bad_ins:
                return s
            earliest = min(bad_ins, key=lambda t: self.producer[t])
            producer = self.producer[earliest]
            self.cands[self.pos[producer]] = (producer, earliest)
            logger.info("layerwise: node %s has input %s that already differs; searching "
                        "again below its producer", s.node, earliest)
            self.report.restarts += 1
            hi = self.pos[producer]

    def alone(self, s: LayerStep) -> None:
        """Run the node alone on the reference's values of its inputs (and, when it is right
        alone, the reference on the backend's values), and set ``s.alone``."""
        node = self.nodes[s.index]
        outs = [o for o in node.output if o]
        try:
            values = {**self.ref_values, **{k: v for k, v in self.feeds.items()}}
            model, feeds = subgraph_model(self.p.proto, [node], values, outs)
            ref = self.p.run(model, feeds, outs, "reference")
            got = self.p.run(model, feeds, outs, "backend")
        except UnirtError as exc:
            s.alone, s.alone_note = Alone.UNCHECKED, f"alone: {exc}"
            return
        s.alone_errors = self.p.compare(got, ref, outs)
        if not all(e.ok for e in s.alone_errors.values()):
            s.alone = Alone.WRONG
            return
        # Right alone: does the reference, given the backend's inputs, give the backend's
        # output? Then the inputs' differences explain the output's.
        backend_in = {**self.feeds, **{k: v for k, v in self.got_values.items()}}
        model_b, feeds_b = subgraph_model(self.p.proto, [node], {**self.ref_values,
                                                                **backend_in}, outs)
        try:
            ref_b = self.p.run(model_b, feeds_b, outs, "reference")
        except UnirtError as exc:
            s.alone, s.alone_note = Alone.UNCHECKED, f"alone on the backend's inputs: {exc}"
            return
        probed = [o for o in outs if o in self.got_values]
        replay = self.p.compare({o: self.got_values[o] for o in probed}, ref_b, probed)
        s.alone = Alone.AMPLIFIED if all(e.ok for e in replay.values()) else Alone.IN_CONTEXT

    def origin(self, s: LayerStep, steps: int = 8) -> LayerStep | None:
        """Walk up from ``s`` along the input with the largest relative difference to the node
        where that difference appears (its own inputs equal, or 10x smaller relatively)."""
        cur = s
        for _ in range(steps):
            ins = [cur.tensors[i] for i in cur.input_errors if i in self.producer]
            worst = max(ins, key=lambda e: e.max_rel, default=None)
            if worst is None or not worst.max_rel:
                return None if cur is s else cur
            up, _ = self.step(self.producer[worst.name])
            up_ins = [up.tensors[i].max_rel for i in up.input_errors]
            if not up_ins or max(up_ins) * 10 <= worst.max_rel:
                self.alone(up)
                return up
            cur = up
        self.report.reason = (self.report.reason + "; " if self.report.reason else "") + (
            f"the difference is already there {steps} nodes upstream, at node {cur.node!r} "
            f"({cur.op}, #{cur.index}): rounding accumulated along the model")
        return None


def _ill_conditioned(s: LayerStep) -> str:
    """``Softmax input magnitude 6.8e9: a 1e-06 relative difference becomes 0.12 at the
    output``, from the input with the largest relative difference."""
    ins = [s.tensors[i] for i in s.input_errors if i in s.tensors and s.tensors[i].max_rel]
    outs = [s.tensors[o] for o in s.output_errors if o in s.tensors]
    if not ins or not outs:
        return ""
    worst_in = max(ins, key=lambda e: e.max_rel)
    worst_out = max(outs, key=lambda e: e.max_abs)
    return (f"{s.op} input magnitude {worst_in.magnitude:.2g}: a {worst_in.max_rel:.1g} "
            f"relative difference becomes {worst_out.max_abs:.2g} at the output")


def _verdict(report: LayerwiseReport, s: LayerStep) -> None:
    name = f"node {s.node!r} ({s.op})"
    if s.alone == Alone.WRONG:
        worst = max(s.alone_errors.values(), key=lambda e: e.max_rel)
        report.verdict = (f"confirmed: {name} is wrong alone, on the reference's values of its "
                          f"inputs ({worst.text()})")
    elif s.alone == Alone.IN_CONTEXT:
        report.verdict = (f"{name} is right alone but wrong inside the model: the backend "
                          "computes it differently there (fused with its neighbours?)")
    elif s.alone == Alone.AMPLIFIED:
        within_tol = all(s.tensors[i].ok for i in s.input_errors if i in s.tensors)
        report.verdict = (f"not an engine bug at {name}: it is right alone, and its inputs' "
                          "differences" + (", within tolerance," if within_tol else "")
                          + " explain its output's (the divergence is "
                          + ("cumulative, from upstream)" if within_tol else "upstream)"))
        if within_tol:
            report.ill_conditioned = _ill_conditioned(s)
        o = report.origin
        if o is not None:
            where = f"node {o.node!r} ({o.op}, #{o.index})"
            if o.alone == Alone.WRONG:
                report.verdict += f"; it starts at {where}, which is wrong alone"
            elif o.alone == Alone.UNCHECKED:
                report.verdict += f"; it starts at {where} (not checked alone: {o.alone_note})"
            else:
                report.verdict += (f"; it starts at {where}, which is right alone (rounding "
                                   "of a different order)")
    else:
        report.verdict = f"{name} could not be run alone: {s.alone_note}"


def layerwise(
    model: ModelSource,
    backend: str,
    feeds: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    precision: str = "exact",
    atol: float | None = None,
    rtol: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    fanout: int = 8,
    confirm: bool = True,
) -> LayerwiseReport:
    """Find the node where ``backend`` first diverges, and whether it is to blame.

    Each round exposes up to ``fanout`` tensors spread over the remaining range as extra
    outputs, so the number of rounds grows as log base ``fanout + 1`` of the node count (plus a
    search per input found already differing). ``confirm``: run the node found alone (see the
    module's docstring); the report's ``verdict`` says what that showed.
    """
    info = read_model(model)
    all_feeds = hinted_feeds(info, feeds, shapes, seed)
    workdir = Path(tempfile.mkdtemp(prefix="unirt-layerwise-"))
    report = LayerwiseReport(info.name, backend, LayerStatus.NO_DIVERGENCE)
    prober = None
    try:
        prober = Prober(info, backend, precision, atol, rtol, timeout, workdir)
        search = _Search(prober, all_feeds, fanout, report)
        if not search.cands:
            report.status, report.reason = LayerStatus.ERROR, "no intermediate tensor to probe"
            return report
        # The model's outputs and the last candidate: a diverging one is where the search
        # starts (the earliest, by its producer).
        ends = [o.name for o in prober.proto.graph.output
                if search.producer.get(o.name) in search.pos]
        last = search.cands[-1][1]
        errs = search.errors(list(dict.fromkeys([*ends, last])))
        bad = [t for t, e in errs.items() if not e.ok]
        for t, e in errs.items():
            search.note(search.pos[search.producer[t]], e)
        if not bad:
            report.reason = ("the outputs agree with the reference with intermediate tensors "
                             "exposed; where they differ without them, the engine computes the "
                             "model differently when intermediates are outputs (fusion), and "
                             "`unirt reduce` can locate the failure")
            return report
        earliest = min(bad, key=lambda t: search.producer[t])
        start = search.pos[search.producer[earliest]]
        search.cands[start] = (search.producer[earliest], earliest)
        try:
            first = search.find(start)
        except _Unstable as exc:
            report.status, report.reason = LayerStatus.UNSTABLE, str(exc)
            return report
        report.status, report.first = LayerStatus.DIVERGES, first
        if confirm:
            search.alone(first)
            if first.alone == Alone.AMPLIFIED:
                report.origin = search.origin(first)
            _verdict(report, first)
        return report
    except UnirtError as exc:
        report.status, report.reason = LayerStatus.ERROR, str(exc)
        return report
    finally:
        if prober is not None:
            prober.close()
        shutil.rmtree(workdir, ignore_errors=True)
