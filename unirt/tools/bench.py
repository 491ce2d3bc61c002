"""``unirt bench``: load time and latency of a model on several backends, measured fairly.

Each backend runs in its own child process (a crash or hang is a row in the report, not the end
of the run) and all of them are measured in one run, interleaved: round after round, each
backend runs a slice of its iterations, in rotating order, so that noise from a shared machine
hits every backend alike and the ratios between them hold.

Load time is measured twice per backend: *cold* in a first child with an empty artifact cache
(conversion, compilation), then *warm* in a second child with the cache that the first one left.
The cold child also runs once at each shape: ncnn converts a model with dynamic dims at the first
run at each shape, not at load, so its ~2 s pnnx conversion would otherwise vanish into the warm
child's untimed warmup. Conversion is its own figure (``convert_s``, from the engine's
``details["convert_s"]``), wherever it happened.

Two modes: *latency* sends one request at a time; *throughput* keeps N in flight (N threads on
one session, the model opened with the backend's ``throughput_options``: OpenVINO's THROUGHPUT
hint, so each thread's infer request runs on a CPU stream) and reports requests per second of
wall time. Runs are a count (``runs``) or a time (``duration``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unirt import progress as progress_events
from unirt.errors import UnirtError
from unirt.evidence.child_ops import feeds_for, new_state, open_session, peak_rss
from unirt.evidence.probe import shape_label
from unirt.model.info import ModelInfo, ModelSource, read_model
from unirt.process import timeouts
from unirt.process.isolation import CRASHED, ERROR, TIMEOUT, OutcomeStatus, Worker
from unirt.words import Word

DEFAULT_TIMEOUT = timeouts.BENCH.seconds


# -- results -------------------------------------------------------------------------------------
class BenchMode(Word):
    """How requests are sent: one at a time (latency), or several in flight (throughput)."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


@dataclass
class BenchResult:
    """One (backend, shape) row. ``status``: ``OK``, ``ERROR`` (unirt failing to measure
    included), ``CRASHED`` or ``TIMEOUT``."""

    backend: str
    shape: str
    status: OutcomeStatus = OutcomeStatus.OK
    reason: str = ""
    precision: str | None = None
    cold_load_s: float | None = None
    warm_load_s: float | None = None
    #: Importing the engine and the backend's availability check in a fresh child, apart from
    #: the load (numpy and unirt are already imported there).
    import_s: float | None = None
    #: Converting or compiling for this shape in the cold child (``details["convert_s"]``): at
    #: load for a static model, at the first run at this shape for ncnn on dynamic dims, where
    #: the load alone does not show it. None: the engine does not say.
    convert_s: float | None = None
    #: The first run at this shape in the cold child (a lazy conversion included).
    first_run_s: float | None = None
    latencies_s: list[float] = field(default_factory=list)
    peak_rss_bytes: int | None = None
    batch: int = 1
    mode: BenchMode = BenchMode.LATENCY
    #: Requests in flight (threads on the one session); 1 in latency mode.
    requests: int = 1
    #: Wall time of the timed runs (with several in flight, less than their latencies' sum).
    wall_s: float = 0.0
    #: Streams the engine ran the requests on, where it says (OpenVINO's NUM_STREAMS).
    streams: int | None = None

    def _pct(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(self.latencies_s, q)) * 1e3

    @property
    def min_ms(self) -> float | None:
        return None if not self.latencies_s else min(self.latencies_s) * 1e3

    @property
    def mean_ms(self) -> float | None:
        return None if not self.latencies_s else statistics.fmean(self.latencies_s) * 1e3

    @property
    def median_ms(self) -> float | None:
        return None if not self.latencies_s else statistics.median(self.latencies_s) * 1e3

    @property
    def p10_ms(self) -> float | None:
        return self._pct(10)

    @property
    def p90_ms(self) -> float | None:
        return self._pct(90)

    @property
    def p99_ms(self) -> float | None:
        return self._pct(99)

    @property
    def requests_per_s(self) -> float | None:
        """Completed requests per second of wall time (all requests in flight together)."""
        return None if not self.latencies_s or self.wall_s <= 0 else \
            len(self.latencies_s) / self.wall_s

    @property
    def throughput(self) -> float | None:
        """Samples per second (batch size counted): at the median latency in latency mode, from
        requests per second of wall time in throughput mode."""
        if self.mode == BenchMode.THROUGHPUT:
            rps = self.requests_per_s
            return None if rps is None else self.batch * rps
        m = self.median_ms
        return None if not m else self.batch * 1e3 / m

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "shape": self.shape, "status": self.status,
                "reason": self.reason, "precision": self.precision, "mode": str(self.mode),
                "requests": self.requests, "streams": self.streams,
                "import_s": self.import_s, "convert_s": self.convert_s,
                "cold_load_s": self.cold_load_s, "warm_load_s": self.warm_load_s,
                "first_run_s": self.first_run_s, "min_ms": self.min_ms,
                "mean_ms": self.mean_ms, "p10_ms": self.p10_ms, "median_ms": self.median_ms,
                "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
                "requests_per_s": self.requests_per_s,
                "throughput_per_s": self.throughput, "peak_rss_mb":
                    None if self.peak_rss_bytes is None else self.peak_rss_bytes / 2**20,
                "runs": len(self.latencies_s), "wall_s": self.wall_s}


@dataclass
class BenchReport:
    model: str
    machine: dict[str, Any]
    results: list[BenchResult]
    #: Each input's declared shape (symbolic dims by name): what a sweep's axis is called.
    declared: dict[str, list[Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "machine": self.machine, "declared": self.declared,
                "results": [r.as_dict() for r in self.results]}


def machine_info(backends: Sequence[str]) -> dict[str, Any]:
    """CPU model, core count, Python and engine versions, for the report's header."""
    from unirt.plugin.inventory import backends as list_backends
    from unirt.process.machine import cpu_name

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
    duration: float | None = None,
    mode: BenchMode | str = BenchMode.LATENCY,
    requests: int | None = None,
) -> BenchReport:
    """Measure ``model`` on ``backends`` (default: every available one) at each of ``shapes``.

    ``progress(message, done, total)`` is called as work advances. ``feeds``: input arrays used
    at every shape (the others generated); ``ranges``: input name -> (LO, HI) of generated
    values. ``duration``: seconds of timed runs per backend and shape (spread over the rounds)
    instead of ``runs`` calls. ``mode="throughput"``: ``requests`` calls in flight at once
    (threads on one session; default: the engine's optimal number where it says, else the
    core count), the model opened with the backend's ``throughput_options``.
    """
    try:
        mode = BenchMode(mode)
    except ValueError:
        raise UnirtError(f"unknown bench mode {mode!r}; use one of: "
                         f"{', '.join(m.value for m in BenchMode)}") from None
    if runs < 1 or warmup < 0 or rounds < 1:
        raise UnirtError("runs and rounds must be >= 1 and warmup >= 0")
    if duration is not None and not duration > 0:
        raise UnirtError(f"duration must be a positive number of seconds, not {duration!r}")
    if requests is not None and requests < 1:
        raise UnirtError(f"requests in flight must be >= 1, not {requests}")
    info = read_model(model)
    plan = _Plan(info, list(backends) if backends else [], _feeds_per_shape(
        info, shapes, seed, feeds, ranges), runs, warmup, rounds, threads, precision, timeout,
        duration, mode, requests)
    run = _Run(plan, progress)
    with _empty_cache():
        try:
            for name in plan.names:
                run.load(name)
            for shape_feeds in plan.feeds_per_shape:
                run.time_shape(shape_feeds)
            run.measure_memory()
        finally:
            run.close()
    return run.report()


def _feeds_per_shape(info: ModelInfo, shapes: Sequence[Mapping[str, Sequence[int]]], seed: int,
                     feeds: Mapping[str, np.ndarray] | None,
                     ranges: Mapping[str, Sequence[float]] | None
                     ) -> list[dict[str, np.ndarray]]:
    """The inputs of each shape of the sweep: the caller's arrays where given, the rest
    generated within what the graph accepts (its hints) and the caller's ranges."""
    from unirt.evidence.hints import graph_hints, hinted_feeds
    from unirt.evidence.inputs import fill_dynamic, make_inputs
    from unirt.evidence.values import check_ranges

    checked = check_ranges(info.inputs, ranges, "--input-range") if ranges else None
    hints = graph_hints(info)  # what the graph accepts, where the caller said nothing
    return [hinted_feeds(info, feeds, s, seed, checked) if feeds else
            make_inputs(info.inputs, fill_dynamic(info.inputs, s, warn=i == 0,
                                                  sizes=hints.sizes()),
                        seed, hints.under(checked)) for i, s in enumerate(shapes)]


@contextlib.contextmanager
def _empty_cache() -> Iterator[None]:
    """A private, empty artifact cache for the children (they inherit the variable): *cold*
    means nothing built before, whatever the user's cache holds."""
    previous = os.environ.get("UNIRT_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="unirt-bench-cache-") as cache:
        os.environ["UNIRT_CACHE_DIR"] = cache
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("UNIRT_CACHE_DIR", None)
            else:
                os.environ["UNIRT_CACHE_DIR"] = previous


@dataclass
class _Plan:
    """What one ``bench`` call measures, checked."""

    info: ModelInfo
    names: list[str]
    feeds_per_shape: list[dict[str, np.ndarray]]
    runs: int
    warmup: int
    rounds: int
    threads: int | None
    precision: str
    timeout: float
    duration: float | None
    mode: BenchMode
    requests: int | None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from unirt.plugin.registry import get_registry
        from unirt.tools.compare import default_backends

        self.names = self.names or default_backends(exclude_reference=False)
        self.options = {n: dict(get_registry().backend(n).throughput_options)
                        if self.mode == BenchMode.THROUGHPUT else {} for n in self.names}


class _Run:
    """One benchmark under way: a warm child per backend that loaded, the rows filled as the
    rounds go, and the children that died (a crashed or hung child took its session along)."""

    def __init__(self, plan: _Plan, progress: Callable[[str, int, int], None] | None) -> None:
        self.plan = plan
        self.source = plan.info.source()
        self.progress = progress
        n = len(plan.names)
        self.total = n * 2 + len(plan.feeds_per_shape) * plan.rounds * n
        self.done = 0
        self.results: dict[tuple[str, str], BenchResult] = {}
        self.failed: dict[str, BenchResult] = {}
        self.workers: dict[str, Worker] = {}
        self.in_flight: dict[str, int] = {}
        self.dead: dict[str, Any] = {}

    def tick(self, msg: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(msg, self.done, self.total)

    def load(self, name: str) -> None:
        """Open ``name`` cold (empty cache: conversion and compilation, then the first run at
        each shape, where a lazy conversion happens) and warm (the cache the cold one left);
        the warm child stays for the timed runs."""
        plan = self.plan
        with progress_events.step(progress_events.Step.BENCH_LOAD, name, plan.info.name,
                                  "cold and warm") as running:
            firsts: list[dict[str, Any] | None] = [None] * len(plan.feeds_per_shape)
            about: dict[str, Any] = {}
            with Worker(new_state) as cold:
                first = cold.call(open_session, self.source, name, plan.precision,
                                  plan.options[name], plan.threads, timeout=plan.timeout)
                if first.ok:
                    # The first run at each shape, where a lazy conversion happens (ncnn on
                    # dynamic dims): it fills the cache the warm child uses.
                    got = cold.call(_child_first_runs, plan.feeds_per_shape,
                                    timeout=plan.timeout)
                    if got.ok:
                        firsts, about = got.value["runs"], got.value["details"]
            self.tick(f"{name}: cold load")
            w = Worker(new_state)
            warm = w.call(open_session, self.source, name, plan.precision, plan.options[name],
                          plan.threads, timeout=plan.timeout)
            self.tick(f"{name}: warm load")
            running.detail = warm.status if first.ok else first.status
        bad = first if not first.ok else warm if not warm.ok else None
        if bad is not None:
            w.close()
            status = bad.status if bad.status in (CRASHED, TIMEOUT) else ERROR
            self.failed[name] = BenchResult(name, "", status, bad.describe())
            return
        self.workers[name] = w
        streams = about.get("num_streams")
        self.in_flight[name] = 1 if plan.mode == BenchMode.LATENCY else plan.requests or int(
            about.get("optimal_requests") or os.cpu_count() or 1)
        for feeds, once in zip(plan.feeds_per_shape, firsts):
            first_value = next(iter(feeds.values())) if feeds else None
            batch = first_value.shape[0] if first_value is not None and first_value.ndim else 1
            self.results[(name, shape_label(feeds))] = BenchResult(
                name, shape_label(feeds), precision=first.value["precision"],
                cold_load_s=first.value["load_s"], warm_load_s=warm.value["load_s"],
                import_s=first.value.get("import_s"), batch=int(batch), mode=plan.mode,
                requests=self.in_flight[name],
                streams=streams if isinstance(streams, int) else None,
                convert_s=None if once is None else once["convert_s"],
                first_run_s=None if once is None else once["run_s"])

    def timed(self, name: str, res: BenchResult, feeds: dict[str, np.ndarray], n: int,
              seconds: float | None, keep: bool = True) -> None:
        """``n`` calls (or ``seconds`` of them) on ``name``'s warm child, kept in ``res``."""
        if res.status != OutcomeStatus.OK:
            return
        if name in self.dead:
            _fail(res, self.dead[name])
            return
        wait = self.plan.timeout if seconds is None else self.plan.timeout + seconds
        out = self.workers[name].call(_child_timed, feeds, n, seconds, self.in_flight[name],
                                      timeout=wait)
        if out.ok:
            if keep:
                res.latencies_s.extend(out.value["times"])
                res.wall_s += out.value["wall_s"]
            return
        _fail(res, out)
        if out.status in (CRASHED, TIMEOUT):
            self.dead[name] = out

    def time_shape(self, feeds: dict[str, np.ndarray]) -> None:
        """Warm-up, then the rounds at one shape, the backends' order rotated each round so
        that none always runs first (or right after the same neighbour)."""
        plan = self.plan
        label = shape_label(feeds)
        per_round = max(1, -(-plan.runs // plan.rounds))
        slice_s = None if plan.duration is None else plan.duration / plan.rounds
        with progress_events.step(progress_events.Step.BENCH_RUN,
                                  ", ".join(self.workers) or None, plan.info.name, label):
            if plan.warmup:
                for name in self.workers:
                    self.timed(name, self.results[(name, label)], feeds,
                               max(plan.warmup, self.in_flight[name]), None, keep=False)
            for r in range(plan.rounds):
                order = list(self.workers)
                order = order[r % len(order):] + order[:r % len(order)] if order else order
                for name in order:
                    self.tick(f"{name} {label}: round {r + 1}/{plan.rounds}")
                    self.timed(name, self.results[(name, label)], feeds, per_round, slice_s)

    def measure_memory(self) -> None:
        """Each live child's peak resident memory, on every row of its backend."""
        for name, w in self.workers.items():
            if name in self.dead:
                continue
            rss = w.call(peak_rss, timeout=30)
            for (n, _), res in self.results.items():
                if n == name and rss.ok:
                    res.peak_rss_bytes = rss.value

    def close(self) -> None:
        for w in self.workers.values():
            w.close()

    def report(self) -> BenchReport:
        """A backend that failed to load has one row; the others one per shape, in sweep
        order."""
        plan = self.plan
        ordered = [r for n in plan.names for r in (
            [self.failed[n]] if n in self.failed else
            [self.results[(n, shape_label(f))] for f in plan.feeds_per_shape])]
        machine = {**machine_info(plan.names), "threads": plan.threads, "mode": str(plan.mode)}
        declared = {t.name: list(t.shape) if t.shape is not None else []
                    for t in plan.info.inputs}
        return BenchReport(plan.info.name, machine, ordered, declared)


def _fail(res: BenchResult, outcome: Any) -> None:
    res.status = outcome.status if outcome.status in (CRASHED, TIMEOUT) else ERROR
    res.reason = outcome.describe()


# -- in the child ---------------------------------------------------------------------------------
def _convert_s(state: dict[str, Any]) -> float | None:
    value = state["sess"].details.get("convert_s")
    return float(value) if isinstance(value, (int, float)) else None


def _child_first_runs(state: dict[str, Any], feed_sets: Sequence[Mapping[str, np.ndarray]]
                      ) -> dict[str, Any]:
    """Run once at each shape on the cold session: per shape, the run's time and the seconds
    spent converting for it (at load, counted at the first shape, and in the run itself).
    A shape the engine refuses gets None (the timed runs say why)."""
    import time

    runs: list[dict[str, Any] | None] = []
    before = 0.0
    for i, feeds in enumerate(feed_sets):
        start = time.perf_counter()
        try:
            state["sess"].run(dict(feeds))
        except Exception:  # refused here; the timed runs report it as that row's error
            runs.append(None)
            continue
        took = time.perf_counter() - start
        after = _convert_s(state)
        runs.append({"run_s": took, "convert_s": None if after is None else
                     after - (before if i else 0.0)})
        before = after or 0.0
    keep = ("num_streams", "optimal_requests", "performance_hint")
    return {"runs": runs, "details": {k: v for k, v in state["sess"].details.items()
                                      if k in keep}}


def _child_timed(state: dict[str, Any], feeds: Mapping[str, np.ndarray], runs: int,
                 duration_s: float | None, requests: int) -> dict[str, Any]:
    """``runs`` calls, or calls until ``duration_s`` has passed, ``requests`` of them in
    flight at once (threads on the one session). Each call's latency, and the wall time."""
    import threading
    import time

    arrays = dict(feeds_for(state, dict(feeds)))
    run = state["sess"].run
    lock = threading.Lock()
    started = [0]
    times: list[float] = []
    errors: list[BaseException] = []
    begin = time.perf_counter()
    deadline = None if duration_s is None else begin + duration_s

    def take() -> bool:
        with lock:
            if errors:
                return False
            if deadline is None:
                if started[0] >= runs:
                    return False
            elif started[0] and time.perf_counter() >= deadline:
                return False
            started[0] += 1
            return True

    def worker() -> None:
        mine = []
        try:
            while take():
                t0 = time.perf_counter()
                run(arrays)
                mine.append(time.perf_counter() - t0)
        except BaseException as exc:  # handed to the caller below, as the call's error
            with lock:
                errors.append(exc)
        with lock:
            times.extend(mine)

    if requests <= 1:
        worker()
    else:
        pool = [threading.Thread(target=worker, daemon=True) for _ in range(requests)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    wall = time.perf_counter() - begin
    if errors:
        raise errors[0]
    return {"times": times, "wall_s": wall}
