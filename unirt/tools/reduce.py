"""``unirt reduce``: shrink a model on which a backend fails to a few nodes that still fail the
same way, and write them with their inputs: the repro an engine's bug tracker asks for.

Polygraphy's ``debug reduce`` is the model. The reference (ONNX Runtime CPU) runs the model once
with every tensor exposed, so that any cut through the graph can be fed the reference's values of
the tensors it cuts. Then, over the nodes in topological order:

1. from the outputs backwards: the shortest prefix ``nodes[:b]`` that still fails;
2. from the inputs forwards: the shortest suffix ``nodes[a:b]`` of it that still fails;
3. node by node: each node whose removal keeps the failure is dropped (its output becomes an
   input fed the reference's value), which also drops unrelated branches the ranges kept.

"Fails the same way": the same kind of failure as the whole model (a crash, by the same signal;
an error; a timeout; numbers beyond tolerance against the reference), and, with ``match``, a
description that matches that regular expression (an engine error's message, say). A cut that
fails otherwise (an engine that refuses a shape tensor as an input) is not the bug sought.

Every engine run happens in a child (:mod:`unirt.process.isolation`): a crash is a data point, and
the reduction goes on. The reference's values of every tensor are held in memory: a model with
gigabytes of activations needs that much memory here.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unirt.errors import UnirtError
from unirt.evidence.hints import hinted_feeds
from unirt.evidence.probe import run_sets
from unirt.model.info import ModelSource, read_model
from unirt.process import timeouts
from unirt.process.isolation import CRASHED, HARNESS, TIMEOUT, Outcome, OutcomeStatus
from unirt.store.files import check_writable
from unirt.tools.layerwise import Prober, subgraph_model, tensor_error, with_outputs
from unirt.words import Word

logger = logging.getLogger("unirt")

#: Seconds an engine run may take before it counts as hung (a hang is a failure kind too, so
#: each hung attempt costs this much).
REDUCE_TIMEOUT = timeouts.REDUCE_STEP.seconds
#: The node-by-node pass runs only on a set this small (one engine run per node).
GREEDY_LIMIT = 64


class FailureKind(Word):
    """How a backend fails on a model; the words of :class:`~unirt.process.isolation.OutcomeStatus`
    for what went wrong in the child, plus wrong numbers."""

    CRASHED = OutcomeStatus.CRASHED.value
    ERROR = OutcomeStatus.ERROR.value
    TIMEOUT = OutcomeStatus.TIMEOUT.value
    WRONG = "wrong numbers"


@dataclass
class Failure:
    """How a backend fails on a model: ``kind``, and ``detail`` (the signal, the error's first
    line, or which outputs are wrong and by how much)."""

    kind: FailureKind
    detail: str
    signal: str | None = None

    def same_as(self, other: Failure, match: re.Pattern[str] | None = None) -> bool:
        """Whether this failure is ``other``'s kind (and signal), and matches ``match``."""
        if self.kind != other.kind or self.signal != other.signal:
            return False
        return match is None or bool(match.search(self.detail))

    def text(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else str(self.kind)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "detail": self.detail, "signal": self.signal}


@dataclass
class ReduceResult:
    """The written repro: ``path`` (the model), ``inputs`` (one ``.npy`` per input, next to
    it), the node counts, the ops kept, how the original and the repro fail on the backend,
    whether the reference runs the repro, the engine runs it took and the time."""

    model: str
    backend: str
    path: Path
    inputs: dict[str, Path]
    nodes_before: int
    nodes_after: int
    ops: list[str]
    original: Failure
    failure: Failure
    reference_runs: bool
    runs: int
    seconds: float
    steps: list[str] = field(default_factory=list)
    #: For wrong numbers: what the layerwise search says of the repro (the node to blame, or
    #: that the difference is an ill-conditioned amplification and likely no engine bug).
    diagnosis: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "path": str(self.path),
                "inputs": {k: str(v) for k, v in self.inputs.items()},
                "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
                "ops": self.ops, "original": self.original.as_dict(),
                "failure": self.failure.as_dict(), "reference_runs": self.reference_runs,
                "runs": self.runs, "seconds": self.seconds, "steps": self.steps,
                "diagnosis": self.diagnosis}

    def replay(self) -> str:
        """The command that shows the failure again on the written files."""
        given = " ".join(f"--input {k}={v}" for k, v in self.inputs.items())
        return f"unirt compare {self.path} --backends {self.backend} {given}".rstrip()


def _diagnose(path: Path, backend: str, feeds: Mapping[str, np.ndarray], precision: str,
              timeout: float) -> str:
    """The layerwise verdict on a repro that gives wrong numbers: a repro of an ill-conditioned
    amplification is no engine bug to file (a SqueezeNet repro can be its Softmax on inputs of
    magnitude 7e9), and the user should hear so before filing it."""
    from unirt.tools.layerwise import layerwise

    try:
        report = layerwise(path, backend, feeds=feeds, precision=precision, timeout=timeout)
    except UnirtError as exc:
        return f"not diagnosed: {exc}"
    parts = [report.verdict, f"ill-conditioned: {report.ill_conditioned}"
             if report.ill_conditioned else "", report.reason]
    return "; ".join(p for p in parts if p) or str(report.status)


def _failure(opened: Outcome, sets: list[Any]) -> Failure | None:
    """The failure of one run (``None``: it ran; the numbers are judged by the caller)."""
    bad = opened if not opened.ok else (sets[0].outcome if sets else opened)
    if bad.ok:
        return None
    if bad.status == HARNESS or bad.error_type in ("HarnessError", "IsolationError"):
        raise UnirtError(f"unirt could not run the backend in a child: {bad.describe()}")
    if bad.status == CRASHED:
        return Failure(FailureKind.CRASHED, bad.describe(), bad.signal or str(bad.exitcode))
    if bad.status == TIMEOUT:
        return Failure(FailureKind.TIMEOUT, bad.describe())
    return Failure(FailureKind.ERROR, " ".join((bad.describe() or "").split())[:500])


class _Reducer:
    def __init__(self, prober: Prober, values: dict[str, np.ndarray],
                 match: re.Pattern[str] | None) -> None:
        self.p, self.values, self.match = prober, values, match
        self.nodes = list(prober.proto.graph.node)
        self.runs = 0
        self.target: Failure | None = None

    def attempt(self, model: Any, feeds: Mapping[str, np.ndarray]) -> Failure | None:
        """Run ``model`` on the backend (in its child) and judge it against the reference's
        values of its outputs."""
        from unirt import progress

        with progress.step(progress.Step.REDUCE, self.p.backend,
                           f"{len(model.graph.node)} nodes") as running:
            failed = self._attempt(model, feeds)
            running.detail = "fails" if failed is not None else "runs"
        return failed

    def _attempt(self, model: Any, feeds: Mapping[str, np.ndarray]) -> Failure | None:
        self.runs += 1
        path = self.p.save(model)
        outputs = [o.name for o in model.graph.output]
        opened, sets = run_sets(self.p.be_worker, path, self.p.backend, [dict(feeds)],
                                self.p.precision, outputs=outputs, timeout=self.p.timeout)
        failed = _failure(opened, sets)
        if failed is not None:
            return failed
        got = sets[0].outputs or {}
        wrong = []
        for name in outputs:
            e = tensor_error(name, got.get(name), self.values[name], self.p.precision,
                             self.p.atol, self.p.rtol)
            if not e.ok:
                wrong.append(e.text())
        return Failure(FailureKind.WRONG, "; ".join(wrong)) if wrong else None

    def cut(self, keep: Sequence[int]) -> tuple[Any, dict[str, np.ndarray]]:
        return subgraph_model(self.p.proto, [self.nodes[i] for i in keep], self.values)

    def fails(self, keep: Sequence[int]) -> bool:
        if not keep:
            return False
        try:
            model, feeds = self.cut(keep)
        except UnirtError:  # a tensor without a value: this cut cannot be fed
            return False
        got = self.attempt(model, feeds)
        assert self.target is not None
        return got is not None and got.same_as(self.target, self.match)

    def smallest(self, lo: int, hi: int, fails_at: Callable[[int], bool]) -> int:
        """Binary search for the boundary: ``fails_at(hi)`` holds and ``fails_at(lo)`` is
        assumed not to; returns the value nearest ``lo`` at which it holds."""
        while abs(hi - lo) > 1:
            mid = (lo + hi) // 2
            if fails_at(mid):
                hi = mid
            else:
                lo = mid
        return hi


def reduce(
    model: ModelSource,
    backend: str,
    output: str | Path | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    precision: str = "exact",
    atol: float | None = None,
    rtol: float | None = None,
    timeout: float = REDUCE_TIMEOUT,
    match: str | None = None,
) -> ReduceResult:
    """Shrink ``model`` to a subgraph on which ``backend`` still fails the same way and write it
    to ``output`` (default: ``<model>.reduced.onnx`` in the current directory) with its inputs,
    ``<output stem>.<input>.npy`` next to it. See the module's docstring for the method.

    Raises :class:`~unirt.errors.UnirtError` when the backend does not fail on the model, when
    the reference cannot run it, or when ``match`` is not a valid regular expression.
    """
    from unirt.plugin.registry import get_registry

    started = time.perf_counter()
    get_registry().backend(backend)  # an unknown name: the error listing the registered ones
    try:
        pattern = re.compile(match) if match else None
    except re.error as exc:
        raise UnirtError(f"--match {match!r} is not a regular expression: {exc}") from None
    info = read_model(model)
    all_feeds = hinted_feeds(info, feeds, shapes, seed)
    out = check_writable(output or f"{Path(info.name).stem}.reduced.onnx", "--output",
                         inputs=[info.path])  # before any engine runs
    workdir = Path(tempfile.mkdtemp(prefix="unirt-reduce-"))
    prober = None
    try:
        prober = Prober(info, backend, precision, atol, rtol, timeout, workdir)
        nodes = list(prober.proto.graph.node)
        if not nodes:
            raise UnirtError(f"{info.name} has no nodes: nothing to reduce")
        r = _Reducer(prober, _every_value(prober, nodes, all_feeds, info.name), pattern)
        original = r.attempt(prober.proto, all_feeds)
        if original is None:
            raise UnirtError(f"{backend} runs {info.name} within tolerance of the reference "
                             "on these inputs: nothing to reduce (give the inputs it fails "
                             "on with --input, or other --shape / --atol / --rtol)")
        if pattern is not None and not pattern.search(original.detail):
            raise UnirtError(f"{backend} fails on {info.name} ({original.text()}), but not "
                             f"matching --match {match!r}")
        r.target = original
        steps = [f"{len(nodes)} nodes: {original.text()}"]
        logger.info("reduce: %s fails on %s (%s); %d nodes", backend, info.name,
                    original.text(), len(nodes))
        n = len(nodes)
        keep = _shrink(r, n, steps)
        final_model, final_feeds = r.cut(keep)
        final = r.attempt(final_model, final_feeds)
        if final is None or not final.same_as(original, pattern):
            # A flaky engine, or a cut that only fails with more around it: keep the whole.
            keep = list(range(n))
            final_model, final_feeds = prober.proto, all_feeds
            final = original
            steps.append("the reduced model did not fail again: the whole model is written")
        inputs = _write(final_model, final_feeds, out, info)
        reference_runs = _reference_runs(prober, out, final_feeds)
        result = ReduceResult(info.name, backend, out, inputs, n, len(keep),
                              [nodes[i].op_type for i in keep], original, final,
                              reference_runs, r.runs, time.perf_counter() - started, steps)
        if final.kind == FailureKind.WRONG:
            result.diagnosis = _diagnose(out, backend, final_feeds, precision, timeout)
        return result
    finally:
        if prober is not None:
            prober.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _every_value(prober: Prober, nodes: Sequence[Any], feeds: Mapping[str, np.ndarray],
                 name: str) -> dict[str, np.ndarray]:
    """The reference's value of every tensor (with the inputs): what feeds any cut."""
    every = list(dict.fromkeys(o for n in nodes for o in n.output if o))
    logger.info("reduce: running the reference with all %d tensors exposed", len(every))
    try:
        ref = prober.run(with_outputs(prober.proto, every, prober.typed), feeds, every,
                         "reference")
    except UnirtError as exc:
        raise UnirtError(f"the reference cannot run {name} with every tensor as an output, so "
                         f"its cuts cannot be fed: {exc}") from None
    return {**feeds, **ref}


def _shrink(r: _Reducer, n: int, steps: list[str]) -> list[int]:
    """The node indices of the smallest failing cut found: two bisections (the outputs side,
    then the inputs side), then dropping nodes one by one while it still fails."""
    # The whole graph as a cut (every unconsumed tensor an output) should fail too; when it
    # does not, the ranges below cannot be trusted, and only the node-by-node pass runs.
    keep = list(range(n))
    if r.fails(keep):
        b = r.smallest(-1, n - 1, lambda k: r.fails(list(range(k + 1))))
        a = r.smallest(b + 1, 0, lambda k: r.fails(list(range(k, b + 1))))
        keep = list(range(a, b + 1))
        steps.append(f"outputs side: nodes[:{b + 1}]; inputs side: nodes[{a}:{b + 1}] "
                     f"({len(keep)} nodes)")
        logger.info("reduce: %s", steps[-1])
    if len(keep) <= GREEDY_LIMIT:
        for i in reversed(list(keep)):
            trial = [k for k in keep if k != i]
            if trial and r.fails(trial):
                keep = trial
        steps.append(f"node by node: {len(keep)} nodes")
    else:
        steps.append(f"node by node skipped: {len(keep)} nodes > {GREEDY_LIMIT}")
    logger.info("reduce: %s", steps[-1])
    return keep


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "input"


def _write(model: Any, feeds: Mapping[str, np.ndarray], out: Path, info: Any) -> dict[str, Path]:
    """The model (with any external weights it uses loaded in) and one .npy per input."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    if info.external_data and info.path is not None:
        load_external_data_for_model(model, str(info.path.parent))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    paths = {}
    for name, value in feeds.items():
        p = out.with_name(f"{out.name.removesuffix('.onnx')}.{_safe(name)}.npy")
        np.save(p, np.asarray(value))
        paths[name] = p
    return paths


def _reference_runs(prober: Prober, path: Path, feeds: Mapping[str, np.ndarray]) -> bool:
    """Whether the reference runs the written repro (a repro the reference cannot run either
    is a bad model, not an engine bug)."""
    import onnx

    try:
        prober.run(onnx.load(str(path)), feeds, None, "reference")
    except UnirtError as exc:
        logger.warning("the reference cannot run the reduced model either: %s", exc)
        return False
    return True
