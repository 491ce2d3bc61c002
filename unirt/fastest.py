"""Tuning: the fastest backend whose numbers are right, measured on the model.

One measurement behind ``prefer="fastest"``, ``unirt tune`` and ``load(tune="background")``.
Every candidate is verified first (:func:`unirt.verify.verify`: a child process, seeded inputs
at every shape set, compared with the reference, and the verdict cached where ``load`` reads it),
then the verified ones are timed side by side in children of their own, round after round in
rotating order, so that a noisy machine slows them alike.

The ranking is cached per (model, machine, precision, options, shapes, tolerance) with the
engine versions it was measured with: a lookup (the default route, at every ``load``) needs no
engine import, and an entry whose versions no longer match what is installed is measured again.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelInfo
    from .plugins import Registry

logger = logging.getLogger("unirt")

CACHE_SECTION = "fastest"
RESULT_FILE = "ranking.json"
VERSION = 2
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
    from .verify import DEFAULT_TIMEOUT, TIMEOUT_ENV

    return float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)


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

    @property
    def winner(self) -> str | None:
        return self.order[0] if self.order else None

    def describe(self, name: str) -> str:
        if name in self.rejected:
            return self.rejected[name]
        rank = self.order.index(name) + 1 if name in self.order else None
        figures = ", ".join(f"{n} {self.median_s[n] * 1e3:.3g} ms" for n in self.order)
        source = " (cached)" if self.cached else ""
        return f"fastest #{rank} of {len(self.order)} that pass: {figures}{source}"

    def as_dict(self) -> dict[str, Any]:
        return {"order": self.order, "median_s": self.median_s, "rejected": self.rejected,
                "versions": self.versions, "candidates": self.candidates,
                "max_abs": self.max_abs, "load_s": self.load_s, "precision": self.precision,
                "shapes": self.shapes}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], cached: bool = False) -> Ranking:
        order = [str(n) for n in doc["order"]]
        median = {str(k): float(v) for k, v in doc["median_s"].items()}
        if set(order) != set(median):
            raise ValueError("ranking order and figures disagree")
        return cls(order, median, dict(doc.get("rejected", {})), cached,
                   dict(doc.get("versions", {})), list(doc.get("candidates", order)),
                   dict(doc.get("max_abs", {})), dict(doc.get("load_s", {})),
                   dict(doc.get("precision", {})), dict(doc.get("shapes", {})))


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
         ranges: Mapping[str, tuple[float, float]] | None = None) -> str:
    """The tuning key: no engine version in it, so a lookup imports no engine (the versions are
    kept inside the entry and compared where they matter)."""
    from .cache import artifact_key
    from .input_hints import graph_hints
    from .inputs import shape_sets, specs_json
    from .inventory import cpu_name

    hints = graph_hints(info)
    shape_set = shape_sets(info.inputs, shapes, sizes=hints.sizes())[0][1]
    return artifact_key(CACHE_SECTION, info, versions={"fastest": VERSION},
                        shapes={k: list(v) for k, v in shape_set.items()}, precision=precision,
                        options={"machine": f"{cpu_name()} x{os.cpu_count()}",
                                 "options": {k: dict(v) for k, v in options.items()},
                                 "tolerance": tolerance,
                                 **({"input_ranges": specs_json(ranges)} if ranges else {}),
                                 **({"input_hints": hints.key()} if hints else {})})


def lookup(info: ModelInfo, precision: str = "exact",
           options: Mapping[str, Mapping[str, Any]] | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None,
           tolerance: float | None = None,
           ranges: Mapping[str, tuple[float, float]] | None = None) -> Ranking | None:
    """The cached ranking for this model on this machine, or None; never measures, imports no
    engine. The caller checks the winner's version against what is installed."""
    from .cache import ArtifactCache
    from .errors import UnirtError

    try:
        key = _key(info, precision, options or {}, shapes, tolerance, ranges)
    except UnirtError:
        return None
    try:
        doc = ArtifactCache().read_json(CACHE_SECTION, key, RESULT_FILE)
        return None if doc is None else Ranking.from_dict(doc, cached=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        logger.warning("unreadable fastest-backend ranking %s; ignored", key)
        return None


def rank(info: ModelInfo, candidates: Sequence[str], versions: Mapping[str, str | None],
         precision: str, options: Mapping[str, Mapping[str, Any]],
         shapes: Mapping[str, Sequence[int]] | None = None,
         tolerance: float | None = None, *, registry: Registry | None = None,
         progress: Progress | None = None, remeasure: bool = False,
         nice: int = 0, keep: bool = True,
         ranges: Mapping[str, tuple[float, float]] | None = None,
         feeds: Mapping[str, Any] | None = None) -> Ranking:
    """The ranking of ``candidates`` on ``info``: cached when measured for the same candidates
    and engine versions, else measured now (and cached unless ``keep`` is False: background
    tuning keeps only a ranking this process confirmed, see :func:`store`). ``remeasure``
    measures regardless (``unirt tune``); ``nice`` lowers the children's priority. ``ranges``:
    value ranges of generated inputs (in the key); ``feeds``: arrays the candidates are timed
    on (``unirt tune --input``; verification runs on generated inputs at their shapes)."""
    if not remeasure:
        known = lookup(info, precision, options, shapes, tolerance, ranges)
        if known is not None and set(known.candidates) == set(candidates) and all(
                known.versions.get(n) == versions.get(n) for n in candidates):
            return known
    from . import progress as events

    with events.step(events.Step.RANK, None, info.name,
                     f"{len(candidates)} candidates") as running:
        ranking = _measure(info, candidates, versions, precision, options, shapes, tolerance,
                           registry, progress, nice, ranges, feeds)
        running.detail = f"fastest: {ranking.winner or 'none'}"
    if keep:
        store(info, ranking, precision, options, shapes, tolerance, ranges)
    return ranking


def store(info: ModelInfo, ranking: Ranking, precision: str,
          options: Mapping[str, Mapping[str, Any]],
          shapes: Mapping[str, Sequence[int]] | None, tolerance: float | None,
          ranges: Mapping[str, tuple[float, float]] | None = None) -> None:
    """Cache ``ranking`` as the tuning result the default route opens (replacing an older one);
    not one in which a candidate was left out for a transient reason."""
    from .cache import ArtifactCache

    if ranking.transient:
        logger.info("unirt: ranking of %s not cached: %s", info.name, "; ".join(
            f"{n}: {why}" for n, why in ranking.rejected.items()))
        return
    key = _key(info, precision, options, shapes, tolerance, ranges)
    # a new measurement replaces the old one
    ArtifactCache().write_json(CACHE_SECTION, key, RESULT_FILE, ranking.as_dict(),
                               {"model": info.name, "kind": "fastest-backend ranking"})


def _measure(info: ModelInfo, candidates: Sequence[str], versions: Mapping[str, str | None],
             precision: str, options: Mapping[str, Mapping[str, Any]],
             shapes: Mapping[str, Sequence[int]] | None, tolerance: float | None,
             registry: Registry | None, progress: Progress | None, nice: int,
             ranges: Mapping[str, tuple[float, float]] | None = None,
             given: Mapping[str, Any] | None = None) -> Ranking:
    """Verify every candidate (cached verdicts reused), then time the verified ones."""
    # Imported here: a lookup (every default load) needs none of the measuring machinery.
    from . import progress as events
    from .isolation import HARNESS, TIMEOUT, Worker
    from .plugins import get_registry
    from .probe import NO_REFERENCE, _child_init, _child_run, run_sets
    from .verify import VerifyStatus, feed_sets, verify

    reg = registry or get_registry()
    source = info.source()
    timeout = _timeout()
    _, _, feeds_all = feed_sets(info, shapes, ranges)
    ranking = Ranking([], {}, versions=dict(versions), candidates=list(candidates),
                      shapes={k: list(v) for k, v in feeds_all[0].shapes})
    feeds: Any = feeds_all[0] if not given else dict(given)
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
                   tolerance=tolerance, timeout=timeout, registry=reg, ranges=ranges)
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
    spec = None if registry is None else registry.spec()
    try:
        for name in passed:
            tick(f"opening {name}")
            w = Worker(_child_init, nice=nice or None)
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
        with events.step(events.Step.TIME, ", ".join(workers) or None, info.name,
                         f"{ROUNDS} rounds, interleaved"):
            for r in range(ROUNDS):
                order = list(workers)
                order = order[r % len(order):] + order[:r % len(order)] if order else order
                for name in order:
                    out = workers[name].call(_child_run, feeds, RUNS_PER_ROUND, None, False,
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
    ranking.median_s = {n: statistics.median(t) for n, t in times.items()
                        if t and n not in ranking.rejected}
    ranking.order = sorted(ranking.median_s, key=ranking.median_s.__getitem__)
    return ranking
