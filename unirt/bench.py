"""``unirt bench``: load time and latency of a model on several backends, measured fairly.

Each backend runs in its own child process (a crash or hang is a row in the report, not the end
of the run) and all of them are measured in one run, interleaved: round after round, each
backend runs a slice of its iterations, in rotating order, so that noise from a shared machine
hits every backend alike and the ratios between them hold.

Load time is measured twice per backend: *cold* in a first child with an empty artifact cache
(conversion, compilation), then *warm* in a second child with the cache that the first one left.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import progress as progress_events
from .errors import UnirtError
from .isolation import Worker
from .model import ModelInfo, ModelSource, read_model
from .probe import _child_init, _child_open, _child_peak_rss, _child_run, shape_label

DEFAULT_TIMEOUT = 600.0


# -- results -------------------------------------------------------------------------------------
@dataclass
class BenchResult:
    """One (backend, shape) row. ``status`` is ``ok``, ``error``, ``crashed`` or ``timeout``."""

    backend: str
    shape: str
    status: str = "ok"
    reason: str = ""
    precision: str | None = None
    cold_load_s: float | None = None
    warm_load_s: float | None = None
    #: Importing the engine and the backend's availability check in a fresh child, apart from
    #: the load (numpy and unirt are already imported there).
    import_s: float | None = None
    latencies_s: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    batch: int = 1

    def _pct(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(self.latencies_s, q))

    @property
    def median_ms(self) -> float | None:
        return None if not self.latencies_s else statistics.median(self.latencies_s) * 1e3

    @property
    def p90_ms(self) -> float | None:
        v = self._pct(90)
        return None if v is None else v * 1e3

    @property
    def p99_ms(self) -> float | None:
        v = self._pct(99)
        return None if v is None else v * 1e3

    @property
    def throughput(self) -> float | None:
        """Samples per second at the median latency (batch size counted)."""
        m = self.median_ms
        return None if not m else self.batch * 1e3 / m

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "shape": self.shape, "status": self.status,
                "reason": self.reason, "precision": self.precision,
                "import_s": self.import_s, "cold_load_s": self.cold_load_s,
                "warm_load_s": self.warm_load_s, "median_ms": self.median_ms,
                "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
                "throughput_per_s": self.throughput, "peak_rss_mb":
                    None if self.peak_rss_bytes is None else self.peak_rss_bytes / 2**20,
                "runs": len(self.latencies_s)}


@dataclass
class BenchReport:
    model: str
    machine: dict[str, Any]
    results: list[BenchResult]

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "machine": self.machine,
                "results": [r.as_dict() for r in self.results]}


def machine_info(backends: Sequence[str]) -> dict[str, Any]:
    """CPU model, core count, Python and engine versions, for the report's header."""
    from .inventory import backends as list_backends
    from .inventory import cpu_name

    versions = {b.name: b.version for b in list_backends() if b.name in backends}
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "engines": versions}


def bench(
    model: ModelSource | ModelInfo,
    backends: Sequence[str] | None = None,
    shapes: Sequence[Mapping[str, Sequence[int]]] = ({},),
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    precision: str = "exact",
    seed: int = 0,
    rounds: int = 10,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str, int, int], None] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    ranges: Mapping[str, Sequence[float]] | None = None,
) -> BenchReport:
    """Measure ``model`` on ``backends`` (default: every available one) at each of ``shapes``.

    ``progress(message, done, total)`` is called as work advances. ``feeds``: input arrays used
    at every shape (the others generated); ``ranges``: input name -> (LO, HI) of generated
    values.
    """
    from .compare import default_backends
    from .inputs import check_ranges, feeds_for, make_inputs
    from .plugins import get_registry

    if runs < 1 or warmup < 0 or rounds < 1:
        raise UnirtError("runs and rounds must be >= 1 and warmup >= 0")
    info = read_model(model)
    names = list(backends) if backends else default_backends(exclude_reference=False)
    for n in names:
        get_registry().backend(n)
    checked = check_ranges(info.inputs, ranges, "--input-range") if ranges else None
    feeds_per_shape = [feeds_for(info, feeds, s, seed, checked) if feeds else
                       make_inputs(info.inputs, s, seed, checked) for s in shapes]
    source = info.source()
    total = len(names) * 2 + len(feeds_per_shape) * rounds * len(names)
    done = 0

    def tick(msg: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(msg, done, total)

    results: dict[tuple[str, str], BenchResult] = {}
    workers: dict[str, Worker] = {}
    previous_cache = os.environ.get("UNIRT_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="unirt-bench-cache-") as cache:
        os.environ["UNIRT_CACHE_DIR"] = cache  # cold means an empty cache; children inherit it
        try:
            failed: dict[str, BenchResult] = {}
            for name in names:
                with progress_events.step(progress_events.Step.BENCH_LOAD, name, info.name,
                                          "cold and warm") as running:
                    with Worker(_child_init) as cold:
                        first = cold.call(_child_open, source, name, precision, {}, threads,
                                          timeout=timeout)
                    tick(f"{name}: cold load")
                    w = Worker(_child_init)
                    warm = w.call(_child_open, source, name, precision, {}, threads,
                                  timeout=timeout)
                    tick(f"{name}: warm load")
                    running.detail = warm.status if first.ok else first.status
                bad = first if not first.ok else warm if not warm.ok else None
                if bad is not None:
                    w.close()
                    status = bad.status if bad.status in ("crashed", "timeout") else "error"
                    failed[name] = BenchResult(name, "", status, bad.describe())
                    continue
                workers[name] = w
                for feeds in feeds_per_shape:
                    label = shape_label(feeds)
                    batch = next(iter(feeds.values())).shape[0] if feeds and next(
                        iter(feeds.values())).ndim else 1
                    results[(name, label)] = BenchResult(
                        name, label, precision=first.value["precision"],
                        cold_load_s=first.value["load_s"], warm_load_s=warm.value["load_s"],
                        import_s=first.value.get("import_s"), batch=int(batch))
            per_round = max(1, -(-runs // rounds))
            dead: dict[str, Any] = {}  # a crashed or hung child took its session with it

            def timed(name: str, res: BenchResult, feeds: dict[str, np.ndarray], n: int,
                      keep: bool = True) -> None:
                if res.status != "ok":
                    return
                if name in dead:
                    _fail(res, dead[name])
                    return
                out = workers[name].call(_child_run, feeds, n, None, False, timeout=timeout)
                if out.ok:
                    if keep:
                        res.latencies_s.extend(out.value["times"])
                    return
                _fail(res, out)
                if out.status in ("crashed", "timeout"):
                    dead[name] = out

            for feeds in feeds_per_shape:
                label = shape_label(feeds)
                with progress_events.step(progress_events.Step.BENCH_RUN,
                                          ", ".join(workers) or None, info.name, label):
                    if warmup:
                        for name in workers:
                            timed(name, results[(name, label)], feeds, warmup, keep=False)
                    for r in range(rounds):
                        order = list(workers)
                        order = order[r % len(order):] + order[:r % len(order)] \
                            if order else order
                        for name in order:
                            tick(f"{name} {label}: round {r + 1}/{rounds}")
                            timed(name, results[(name, label)], feeds, per_round)
            for name, w in workers.items():
                if name in dead:
                    continue
                rss = w.call(_child_peak_rss, timeout=30)
                for (n, _), res in results.items():
                    if n == name and rss.ok:
                        res.peak_rss_bytes = rss.value
        finally:
            for w in workers.values():
                w.close()
            if previous_cache is None:
                os.environ.pop("UNIRT_CACHE_DIR", None)
            else:
                os.environ["UNIRT_CACHE_DIR"] = previous_cache
    # A backend that failed to load has one row; the others one per shape, in sweep order.
    ordered = [r for n in names for r in ([failed[n]] if n in failed else
                                          [results[(n, shape_label(f))] for f in feeds_per_shape])]
    return BenchReport(info.name, machine_info(names), ordered)


def _fail(res: BenchResult, outcome: Any) -> None:
    res.status = outcome.status if outcome.status in ("crashed", "timeout") else "error"
    res.reason = outcome.describe()
