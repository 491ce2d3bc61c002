"""Tuning: the fastest backend whose numbers are right, measured on the model.

One measurement behind ``prefer="fastest"``, ``unirt tune`` and ``load(tune="background")``.
Every candidate is verified first (:func:`unirt.evidence.verify.verify`: a child process, seeded
inputs at every shape set, compared with the reference, and the verdict cached where ``load`` reads
it), then the verified ones are timed side by side in children of their own, round after round in
rotating order, so that a noisy machine slows them alike.

The ranking is cached per (model, machine, precision, options, shapes, tolerance) with the
engine versions it was measured with: a lookup (the default route, at every ``load``) needs no
engine import, and an entry whose versions no longer match what is installed is measured again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unirt.evidence import TIMING_SECTION

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.operating import InputSets
    from unirt.model.info import ModelInfo
    from unirt.plugin.registry import Registry

logger = logging.getLogger("unirt")

CACHE_SECTION = TIMING_SECTION
RESULT_FILE = "ranking.json"
#: The operating point a model was last tuned at, per model and machine (see :func:`remembered`).
POINT_FILE = "point.json"
VERSION = 3
ROUNDS = 6
RUNS_PER_ROUND = 5
WARMUP = 2
#: Seconds between timed calls: engines are timed as applications call them, with gaps, not
#: back to back (measured: back-to-back timing in children ranked OpenVINO first on a small
#: CNN that ONNX Runtime runs 20% faster when called at a frame rate).
PAUSE_S = 0.002

#: ``progress(done, total, what)`` while measuring: the CLI draws a bar with it.
Progress = Callable[[int, int, str], None]


def _timeout() -> float:
    from unirt.evidence.verify import verify_timeout

    return verify_timeout()


@dataclass
class Ranking:
    """Candidates that passed, fastest first, with median seconds per run; those that did not
    pass, with why; and the figures behind them. ``cached``: read from the cache, nothing was
    measured now. ``versions``: engine versions of the candidates when it was measured."""

    order: list[str]
    median_s: dict[str, float]
    rejected: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    versions: dict[str, str | None] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    max_abs: dict[str, float] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    #: A candidate was left out for a reason that is not the engine's (a time-out on a busy
    #: machine, unirt's harness failing): such a ranking is used once, never cached.
    transient: bool = False
    #: The digest of the user's input sets it was measured on ("" for generated inputs).
    inputs: str = ""
    #: The share of the CPU other processes used around the timing (None: not known); over
    #: :data:`unirt.process.busy.BUSY_SHARE` the ranking is used once, never cached.
    busy: float | None = None

    @property
    def winner(self) -> str | None:
        return self.order[0] if self.order else None

    def describe(self, name: str) -> str:
        if name in self.rejected:
            return self.rejected[name]
        rank = self.order.index(name) + 1 if name in self.order else None
        figures = ", ".join(f"{n} {self.median_s[n] * 1e3:.3g} ms" for n in self.order)
        source = " (cached)" if self.cached else ""
        from unirt.evidence.operating import SHORT_DIGEST, shape_text

        at = shape_text(self.shapes) if self.shapes else ""
        on = f" on your inputs ({self.inputs[:SHORT_DIGEST]})" if self.inputs else ""
        where = f" at {at}{on}" if at else on
        return f"fastest #{rank} of {len(self.order)} that pass{where}: {figures}{source}"

    def as_dict(self) -> dict[str, Any]:
        return {"order": self.order, "median_s": self.median_s, "rejected": self.rejected,
                "versions": self.versions, "candidates": self.candidates,
                "max_abs": self.max_abs, "load_s": self.load_s, "precision": self.precision,
                "shapes": self.shapes, "inputs": self.inputs}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], cached: bool = False) -> Ranking:
        order = [str(n) for n in doc["order"]]
        median = {str(k): float(v) for k, v in doc["median_s"].items()}
        if set(order) != set(median):
            raise ValueError("ranking order and figures disagree")
        return cls(order, median, dict(doc.get("rejected", {})), cached,
                   dict(doc.get("versions", {})), list(doc.get("candidates", order)),
                   dict(doc.get("max_abs", {})), dict(doc.get("load_s", {})),
                   dict(doc.get("precision", {})), dict(doc.get("shapes", {})),
                   inputs=str(doc.get("inputs") or ""))


def candidate_pool(registry: Registry, names: Sequence[str], left_out: Collection[str] = ()
                   ) -> tuple[list[str], dict[str, str | None], dict[str, str]]:
    """The backends among ``names`` (minus ``left_out``) that can run here, with their engine
    versions (what a ranking is measured with), and the others with why not: the pool
    ``prefer="fastest"``, ``unirt tune`` and background tuning rank."""
    pool: list[str] = []
    versions: dict[str, str | None] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name in left_out:
            continue
        avail = registry.backend(name).available()
        if avail.available:
            pool.append(name)
            versions[name] = avail.version
        else:
            skipped[name] = avail.reason or "not available"
    return pool, versions, skipped


def _key(info: ModelInfo, precision: str, options: Mapping[str, Mapping[str, Any]],
         shapes: Mapping[str, Sequence[int]] | None, tolerance: float | None,
         ranges: Mapping[str, tuple[float, float]] | None = None,
         inputs: InputSets | None = None) -> str:
    """The tuning key: no engine version in it, so a lookup imports no engine (the versions are
    kept inside the entry and compared where they matter). The user's input sets, when given,
    key it by their shapes and digest."""
    from unirt.evidence.hints import VERSION as HINTS
    from unirt.evidence.inputs import shape_sets
    from unirt.evidence.values import specs_json
    from unirt.store.cache import artifact_key

    shape_set = inputs.first_shapes if inputs is not None else \
        shape_sets(info.inputs, shapes)[0][1]
    extra: dict[str, Any] = {"input_ranges": specs_json(ranges)} if ranges else {}
    if inputs is not None:
        extra["inputs"] = inputs.digest
    else:  # generated inputs follow the graph's hints (a function of the model and this)
        extra["input_hints"] = HINTS
    return artifact_key(CACHE_SECTION, info, versions={"fastest": VERSION},
                        shapes={k: list(v) for k, v in shape_set.items()}, precision=precision,
                        options={**_machine_options(options, tolerance), **extra})

def _machine_options(options: Mapping[str, Mapping[str, Any]], tolerance: float | None
                     ) -> dict[str, Any]:
    """What a ranking depends on besides the model and its inputs: this machine, the backend
    options, the tolerance."""
    from unirt.process.machine import cpu_name

    return {"machine": f"{cpu_name()} x{os.cpu_count()}",
            "options": {k: dict(v) for k, v in options.items()}, "tolerance": tolerance}


@dataclass(frozen=True)
class OperatingPoint:
    """Where a model was last tuned on this machine: the shapes asked for (``None``: the
    generated ones), the value ranges, and the digest of the user's input sets ("" for
    generated values). A later plain ``load(path)`` ranks and verifies there, not at shapes
    it would guess."""

    shapes: dict[str, tuple[int, ...]] | None
    ranges: dict[str, Any]  # input name -> a (LO, HI) range or a Values set
    inputs: str

    def as_dict(self) -> dict[str, Any]:
        from unirt.evidence.values import specs_json

        return {"shapes": None if self.shapes is None else
                {k: list(v) for k, v in self.shapes.items()},
                "ranges": specs_json(self.ranges), "inputs": self.inputs}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> OperatingPoint:
        from unirt.evidence.values import spec_from_json

        shapes = doc.get("shapes")
        return cls(None if shapes is None else
                   {str(k): tuple(int(d) for d in v) for k, v in shapes.items()},
                   {str(k): spec_from_json(v) for k, v in (doc.get("ranges") or {}).items()},
                   str(doc.get("inputs") or ""))


def _point_key(info: ModelInfo, precision: str, options: Mapping[str, Mapping[str, Any]],
               tolerance: float | None) -> str:
    from unirt.store.cache import artifact_key

    return artifact_key(CACHE_SECTION, info, versions={"fastest": VERSION, "point": 1},
                        shapes="operating point", precision=precision,
                        options=_machine_options(options, tolerance))


def remembered(info: ModelInfo, precision: str = "exact",
               options: Mapping[str, Mapping[str, Any]] | None = None,
               tolerance: float | None = None) -> OperatingPoint | None:
    """The operating point ``unirt tune`` (or ``prefer="fastest"``) last measured this model
    at on this machine, or None; a lookup, no engine imported."""
    from unirt.store.cache import ArtifactCache

    cache = ArtifactCache()
    if not cache.has_section(CACHE_SECTION):  # nothing was ever tuned here
        return None
    try:
        doc = cache.read_json(CACHE_SECTION, _point_key(info, precision, options or {},
                                                        tolerance), POINT_FILE)
        return None if doc is None else OperatingPoint.from_dict(doc)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        logger.warning("unreadable operating point for %s; ignored", info.name)
        return None


def lookup(info: ModelInfo, precision: str = "exact",
           options: Mapping[str, Mapping[str, Any]] | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None,
           tolerance: float | None = None,
           ranges: Mapping[str, tuple[float, float]] | None = None,
           inputs: InputSets | None = None) -> Ranking | None:
    """The cached ranking for this model on this machine, or None; never measures, imports no
    engine. The caller checks the winner's version against what is installed."""
    from unirt.errors import UnirtError
    from unirt.store.cache import ArtifactCache

    cache = ArtifactCache()
    if not cache.has_section(CACHE_SECTION):  # nothing was ever ranked here
        return None
    try:
        key = _key(info, precision, options or {}, shapes, tolerance, ranges, inputs)
    except UnirtError:
        return None
    try:
        doc = cache.read_json(CACHE_SECTION, key, RESULT_FILE)
        return None if doc is None else Ranking.from_dict(doc, cached=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        logger.warning("unreadable fastest-backend ranking %s; ignored", key)
        return None


def recall_point(info: ModelInfo, precision: str = "exact",
                 options: Mapping[str, Mapping[str, Any]] | None = None,
                 tolerance: float | None = None
                 ) -> tuple[dict[str, tuple[int, ...]], dict[str, Any], InputSets | None] | None:
    """(shapes, value ranges, input sets) of the operating point :func:`remembered` for this
    model, ready to measure or look verdicts up at; None when there is none, when it is the
    generated default (nothing to change), or when its input sets are no longer in the cache
    (the winner's verdict is keyed by them)."""
    point = remembered(info, precision, options, tolerance)
    if point is None or (point.shapes is None and not point.ranges and not point.inputs):
        return None
    inputs = None
    if point.inputs:
        from unirt.evidence.operating import recall

        inputs = recall(point.inputs)
        if inputs is None:
            logger.info("unirt: the input sets %s was tuned on are no longer in the cache; "
                        "run unirt tune again to use its result", info.name)
            return None
    shapes = dict(point.shapes or {})
    if inputs is not None:
        shapes = {**inputs.first_shapes, **shapes}
    return shapes, dict(point.ranges), inputs


def rank(info: ModelInfo, candidates: Sequence[str], versions: Mapping[str, str | None],
         precision: str, options: Mapping[str, Mapping[str, Any]],
         shapes: Mapping[str, Sequence[int]] | None = None,
         tolerance: float | None = None, *, registry: Registry | None = None,
         progress: Progress | None = None, remeasure: bool = False,
         nice: int = 0, keep: bool = True,
         ranges: Mapping[str, tuple[float, float]] | None = None,
         inputs: InputSets | None = None) -> Ranking:
    """The ranking of ``candidates`` on ``info``: cached when measured for the same candidates
    and engine versions, else measured now (and cached unless ``keep`` is False: background
    tuning keeps only a ranking this process confirmed, see :func:`store`). ``remeasure``
    measures regardless (``unirt tune``); ``nice`` lowers the children's priority. ``ranges``:
    value ranges of generated inputs (in the key); ``inputs``: the user's input sets
    (:mod:`unirt.evidence.operating`): every candidate is verified on them and timed on the
    first."""
    if not remeasure:
        known = lookup(info, precision, options, shapes, tolerance, ranges, inputs)
        if known is not None and set(known.candidates) == set(candidates) and all(
                known.versions.get(n) == versions.get(n) for n in candidates):
            return known
    from unirt import progress as events
    from unirt.evidence.operating import shape_text

    at = shape_text(inputs.first_shapes) if inputs is not None else ""
    with events.step(events.Step.RANK, None, info.name,
                     f"{len(candidates)} candidates" + (f" at {at}" if at else "")) as running:
        ranking = _measure(info, candidates, versions, precision, options, shapes, tolerance,
                           registry, progress, nice, ranges, inputs)
        running.detail = f"fastest: {ranking.winner or 'none'} at {shape_text(ranking.shapes)}"
    if keep:
        store(info, ranking, precision, options, shapes, tolerance, ranges, inputs)
    return ranking


def store(info: ModelInfo, ranking: Ranking, precision: str,
          options: Mapping[str, Mapping[str, Any]],
          shapes: Mapping[str, Sequence[int]] | None, tolerance: float | None,
          ranges: Mapping[str, tuple[float, float]] | None = None,
          inputs: InputSets | None = None) -> None:
    """Cache ``ranking`` as the tuning result the default route opens (replacing an older one),
    and where it was measured as the model's operating point (:func:`remembered`), with the
    user's input sets kept when small (:func:`unirt.evidence.operating.remember`); not a ranking in
    which a candidate was left out for a transient reason."""
    from unirt.evidence.operating import remember
    from unirt.store.cache import ArtifactCache

    if ranking.transient:
        logger.info("unirt: ranking of %s not cached: %s", info.name, "; ".join(
            f"{n}: {why}" for n, why in ranking.rejected.items()))
        return
    key = _key(info, precision, options, shapes, tolerance, ranges, inputs)
    cache = ArtifactCache()
    # a new measurement replaces the old one
    cache.write_json(CACHE_SECTION, key, RESULT_FILE, ranking.as_dict(),
                     {"model": info.name, "kind": "fastest-backend ranking"})
    if inputs is not None:
        remember(inputs)
    point = OperatingPoint(None if not shapes else {k: tuple(v) for k, v in shapes.items()},
                           dict(ranges or {}), inputs.digest if inputs is not None else "")
    cache.write_json(CACHE_SECTION, _point_key(info, precision, options, tolerance),
                     POINT_FILE, point.as_dict(),
                     {"model": info.name, "kind": "operating point"})


def _measure(info: ModelInfo, candidates: Sequence[str], versions: Mapping[str, str | None],
             precision: str, options: Mapping[str, Mapping[str, Any]],
             shapes: Mapping[str, Sequence[int]] | None, tolerance: float | None,
             registry: Registry | None, progress: Progress | None, nice: int,
             ranges: Mapping[str, tuple[float, float]] | None = None,
             inputs: InputSets | None = None) -> Ranking:
    """Verify every candidate (cached verdicts reused), then time the verified ones, on the
    user's input sets when given (timed on the first), else on generated ones."""
    # Imported here: a lookup (every default load) needs none of the measuring machinery.
    from unirt import progress as events
    from unirt.evidence.child_ops import new_state, run_feeds
    from unirt.evidence.probe import NO_REFERENCE, run_sets
    from unirt.evidence.verify import VerifyStatus, feed_sets, verify
    from unirt.plugin.registry import get_registry
    from unirt.process.busy import BUSY_SHARE, others_now
    from unirt.process.isolation import HARNESS, TIMEOUT, Worker

    reg = registry or get_registry()
    source = info.source()
    timeout = _timeout()
    _, shape_list, feeds_all = feed_sets(info, shapes, ranges, inputs)
    ranking = Ranking([], {}, versions=dict(versions), candidates=list(candidates),
                      shapes={k: list(v) for k, v in shape_list[0].items()},
                      inputs=inputs.digest if inputs is not None else "")
    feeds: Any = feeds_all[0]
    total = len(candidates) * 2
    step = 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(step, total, what)

    passed: list[str] = []
    for name in candidates:
        tick(f"verifying {name}")
        if reg.backend(name).is_reference:
            passed.append(name)
            ranking.max_abs[name] = 0.0
            continue
        v = verify(info, name, versions.get(name), precision, options.get(name, {}), shapes,
                   tolerance=tolerance, timeout=timeout, registry=reg, ranges=ranges,
                   inputs=inputs)
        if v.status != VerifyStatus.VERIFIED:
            # a time-out, a kill, unirt's harness: not the engine's answer (no reference is)
            ranking.transient |= not v.about_engine and v.result.status != NO_REFERENCE
            ranking.rejected[name] = v.result.reason if v.status == VerifyStatus.REJECTED \
                else f"{v.status}: {v.result.reason}"
            continue
        passed.append(name)
        ranking.max_abs[name] = max((o.max_abs for o in v.result.outputs), default=0.0)
    workers: dict[str, Worker] = {}
    times: dict[str, list[float]] = {}
    before: float | None = None
    spec = None if registry is None else registry.spec()
    try:
        for name in passed:
            tick(f"opening {name}")
            w = Worker(new_state, nice=nice or None)
            with events.step(events.Step.TIME, name, info.name, "open and warm up"):
                opened, sets = run_sets(w, source, name, [feeds], precision,
                                        options.get(name), runs=WARMUP, timeout=timeout,
                                        registry=spec)
            if not opened.ok or not sets or sets[0].outputs is None:
                ranking.transient |= (opened.status if not opened.ok else
                                      sets[0].outcome.status if sets else "") in (
                                          TIMEOUT, HARNESS)
                why = opened.describe() if not opened.ok else (
                    sets[0].outcome.describe() if sets else "nothing ran")
                ranking.rejected[name] = f"failed while timing: {why}"
                w.close()
                continue
            ranking.load_s[name] = opened.value["load_s"]
            ranking.precision[name] = opened.value["precision"]
            workers[name] = w
            times[name] = []
        before = others_now() if len(workers) > 1 else None
        with events.step(events.Step.TIME, ", ".join(workers) or None, info.name,
                         f"{ROUNDS} rounds, interleaved"):
            for r in range(ROUNDS):
                order = list(workers)
                order = order[r % len(order):] + order[:r % len(order)] if order else order
                for name in order:
                    out = workers[name].call(run_feeds, feeds, RUNS_PER_ROUND, None, False,
                                             PAUSE_S, timeout=timeout)
                    if out.ok:
                        times[name].extend(out.value["times"])
                    else:
                        ranking.transient |= out.status in (TIMEOUT, HARNESS)
                        ranking.rejected[name] = f"failed while timing: {out.describe()}"
                        workers.pop(name).close()
                        times.pop(name, None)
    finally:
        for w in workers.values():
            w.close()
    if before is not None:
        after = others_now()
        ranking.busy = max(before, after if after is not None else 0.0)
        if ranking.busy > BUSY_SHARE:
            ranking.transient = True
            logger.warning("unirt: %s was ranked while other processes used %.0f%% of the "
                           "CPU: the ranking is used for this load only, not cached (run "
                           "unirt tune on a quiet machine)", info.name, 100 * ranking.busy)
    from statistics import median

    ranking.median_s = {n: median(t) for n, t in times.items()
                        if t and n not in ranking.rejected}
    ranking.order = sorted(ranking.median_s, key=ranking.median_s.__getitem__)
    return ranking
