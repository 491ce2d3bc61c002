"""``prefer="fastest"``: route to the fastest backend whose numbers pass, measured on the model.

Every available candidate opens the model in a child of its own, runs it once on seeded inputs
at the model's shape (judged against the reference like any verification), and the ones that
pass are timed side by side, round after round in rotating order, so that a noisy machine slows
them alike. The ranking and the figures behind it are cached per (model, machine, engine
versions, precision, options, shapes), so only the first load pays for the measurement.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .isolation import Worker
from .model import ModelInfo
from .probe import (
    _child_init,
    _child_run,
    judge,
    reference_outputs,
    run_sets,
)

logger = logging.getLogger("unirt")

FASTEST = "fastest"
CACHE_SECTION = "fastest"
RESULT_FILE = "ranking.json"
VERSION = 1
ROUNDS = 5
RUNS_PER_ROUND = 3
WARMUP = 2

def _timeout() -> float:
    from .verify import DEFAULT_TIMEOUT, TIMEOUT_ENV

    return float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)


@dataclass
class Ranking:
    """Candidates that passed, fastest first, with median seconds per run; and those that did
    not pass, with why. ``cached``: read from the cache, nothing was measured now."""

    order: list[str]
    median_s: dict[str, float]
    rejected: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def describe(self, name: str) -> str:
        if name in self.rejected:
            return self.rejected[name]
        rank = self.order.index(name) + 1 if name in self.order else None
        figures = ", ".join(f"{n} {self.median_s[n] * 1e3:.3g} ms" for n in self.order)
        source = " (cached)" if self.cached else ""
        return f"fastest #{rank} of {len(self.order)} that pass: {figures}{source}"

    def as_dict(self) -> dict[str, Any]:
        return {"order": self.order, "median_s": self.median_s, "rejected": self.rejected}


def rank(info: ModelInfo, candidates: Sequence[str], versions: Mapping[str, str | None],
         precision: str, options: Mapping[str, Mapping[str, Any]],
         shapes: Mapping[str, Sequence[int]] | None = None,
         tolerance: float | None = None) -> Ranking:
    """Measure (or read from the cache) the ranking of ``candidates`` on ``info``."""
    from .cache import ArtifactCache, artifact_key
    from .inputs import make_inputs
    from .inventory import cpu_name
    from .verify import probe_shapes

    shape_set = probe_shapes(info.inputs, shapes)[0]
    key = artifact_key(CACHE_SECTION, info, versions={"engines": dict(versions),
                                                      "fastest": VERSION},
                       shapes={k: list(v) for k, v in shape_set.items()}, precision=precision,
                       options={"machine": f"{cpu_name()} x{os.cpu_count()}",
                                "candidates": list(candidates),
                                "options": {k: dict(v) for k, v in options.items()},
                                "tolerance": tolerance})
    cache = ArtifactCache()
    entry = cache.lookup(CACHE_SECTION, key)
    if entry is not None:
        try:
            doc = json.loads((entry / RESULT_FILE).read_text())
            return Ranking(doc["order"], doc["median_s"], doc["rejected"], cached=True)
        except (OSError, ValueError, KeyError):
            logger.warning("unreadable fastest-backend ranking %s; measuring again", key)
    feeds = make_inputs(info.inputs, shape_set, seed=0)
    ranking = _measure(info, candidates, feeds, precision, options, tolerance)

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / RESULT_FILE).write_text(json.dumps(ranking.as_dict(), indent=1))
        return {"model": info.name, "kind": "fastest-backend ranking"}

    cache.get_or_build(CACHE_SECTION, key, build)
    return ranking


def _measure(info: ModelInfo, candidates: Sequence[str], feeds: dict[str, Any],
             precision: str, options: Mapping[str, Mapping[str, Any]],
             tolerance: float | None) -> Ranking:
    source = info.source()
    timeout = _timeout()
    ref_open, reference = reference_outputs(source, [feeds], timeout=timeout)
    workers: dict[str, Worker] = {}
    rejected: dict[str, str] = {}
    times: dict[str, list[float]] = {}
    try:
        for name in candidates:
            w = Worker(_child_init)
            opened, sets = run_sets(w, source, name, [feeds], precision, options.get(name),
                                    runs=1, timeout=timeout)
            result = judge(name, opened, sets, reference, precision, tolerance)
            if not ref_open.ok or not result.passed:
                w.close()
                rejected[name] = result.reason or result.status
                continue
            workers[name] = w
            times[name] = []
        for name, w in list(workers.items()):  # untimed warm-up
            out = w.call(_child_run, feeds, WARMUP, None, False, timeout=timeout)
            if not out.ok:
                rejected[name] = out.describe()
                workers.pop(name).close()
        for r in range(ROUNDS):
            order = list(workers)
            order = order[r % len(order):] + order[:r % len(order)] if order else order
            for name in order:
                out = workers[name].call(_child_run, feeds, RUNS_PER_ROUND, None, False,
                                         timeout=timeout)
                if out.ok:
                    times[name].extend(out.value["times"])
                else:
                    rejected[name] = out.describe()
                    workers.pop(name).close()
                    times.pop(name, None)
    finally:
        for w in workers.values():
            w.close()
    medians = {n: statistics.median(t) for n, t in times.items() if t and n not in rejected}
    order = sorted(medians, key=medians.__getitem__)
    return Ranking(order, medians, rejected)
