"""How a served model runs fastest on this machine: rows per engine call and engine calls at
once, measured on the model at load.

Why measured and not configured: both answers are the model's and the engine's, and a guess
either way costs throughput. On the 2-core CPU this was built on, ONNX Runtime runs ResNet-18
(3x224x224) at 122 images/s at batch 1 and 131 at batch 8 (1.07x), a dense model (four
1024x1024 MatMul+Relu) at 7.5x the rows/s at batch 16; two calls at once on one session that
already uses every core run ResNet-18 no faster (112 against 117 images/s), on a session
limited to one thread (``load(threads=1)``) 2x faster (119 against 60), and for a model whose
call takes microseconds they hide the server's hand-off of each call to an engine thread (a
tiny model served 3,450 against 2,420 requests/s to 8 clients).

So every batch size up to ``max_batch`` is timed with one caller, and the size served is the
largest whose rate is within :data:`TOLERANCE` of the best (with no wait, a cap on the rows per
call costs a lone request nothing, and a larger batch under load keeps the engine fed: with the
clients on the same cores, the served ResNet-18 gained 1.21x at batch 15 though the engine alone
gained 1.07x); batching is off when only batch 1 is. Then ``workers`` calls at once are timed
against one at that size, each handed from one thread to a pool as the server hands them
(:func:`_rate`), and served only when they are faster by more than :data:`TOLERANCE`.

The measurement times the session the server will serve (in this process: it has been verified
and has run), on generated rows of the shapes verification measured, for about a second (at most
:data:`BUDGET_S`); it is cached per model, backend and version, precision, shapes and machine,
so a restart pays nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.errors import UnirtError, first_line
from unirt.process.busy import BUSY_SHARE, others_share
from unirt.process.busy import machine_busy_s as _machine_busy_s

if TYPE_CHECKING:  # pragma: no cover
    from unirt.runtime.session import Session

logger = logging.getLogger("unirt")

#: Rates closer than this are taken as equal: about the noise of two interleaved rounds on a busy
#: machine. A batch size within it of the best is as good as the best; a second call at once
#: must beat one by more.
TOLERANCE = 0.05
#: Each configuration is timed for at least this many calls (each caller) and this long, in
#: interleaved rounds.
MIN_CALLS = 3
MIN_SECONDS = 0.1
ROUNDS = 2
#: About the most the measurement spends on one model at load: larger batch sizes are left out
#: when timing them would pass it.
BUDGET_S = 4.0
CACHE_SECTION = "serve-plan"
RESULT_FILE = "plan.json"
VERSION = "2"

RunFn = Callable[[dict[str, np.ndarray]], object]


@dataclass(frozen=True)
class Plan:
    """What the measurement found: ``max_batch`` rows per call (1: no batching) and ``slots``
    engine calls at once, with the rates behind them."""

    max_batch: int
    slots: int
    #: rows/s by (batch size, calls at once)
    rates: Mapping[tuple[int, int], float] = field(default_factory=dict)
    cached: bool = False
    #: the share of the machine's CPU other processes used while it was measured (None: unknown)
    others: float | None = None

    @property
    def busy(self) -> bool:
        """Measured while other processes took more than :data:`BUSY_SHARE` of the CPU."""
        return self.others is not None and self.others > BUSY_SHARE

    @property
    def batch_rates(self) -> dict[int, float]:
        """rows/s by batch size, one call at a time."""
        return {b: r for (b, s), r in sorted(self.rates.items()) if s == 1}

    def describe_batching(self) -> str:
        """The rates, in words, for the batching reason: ``measured rows/s 1: 122, 8: 131``."""
        return "measured rows/s " + ", ".join(
            f"{size}: {rate:,.0f}" for size, rate in self.batch_rates.items())

    def as_dict(self) -> dict[str, Any]:
        return {"max_batch": self.max_batch, "slots": self.slots,
                "rates": [{"batch": b, "slots": s, "rows_per_s": round(r, 2)}
                          for (b, s), r in sorted(self.rates.items())],
                "cached": self.cached,
                "others_cpu_share": None if self.others is None else round(self.others, 3)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], cached: bool = False) -> Plan:
        others = doc.get("others_cpu_share")
        return cls(int(doc["max_batch"]), int(doc["slots"]),
                   {(int(e["batch"]), int(e["slots"])): float(e["rows_per_s"])
                    for e in doc["rates"]}, cached, None if others is None else float(others))


def batch_sizes(max_batch: int) -> list[int]:
    """The sizes tried: powers of two below ``max_batch``, and ``max_batch``."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def choose_batch(rates: Mapping[int, float]) -> int:
    """The largest batch size whose rate (one caller) is within :data:`TOLERANCE` of the best;
    1 when none was measured."""
    if not rates:
        return 1
    best = max(rates.values())
    return max(size for size, rate in rates.items() if rate >= best * (1.0 - TOLERANCE))


def choose_slots(one: float, more: Mapping[int, float]) -> int:
    """More calls at once (``more``: callers -> rate) only when faster than ``one`` caller by
    more than :data:`TOLERANCE`; the fastest of them."""
    faster = {n: r for n, r in more.items() if r > one * (1.0 + TOLERANCE)}
    return max(faster, key=lambda n: faster[n]) if faster else 1


def _stack(row: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    if size == 1:
        return dict(row)
    return {n: np.ascontiguousarray(np.repeat(a, size, axis=0)) for n, a in row.items()}


def _rate(run: RunFn, feeds: dict[str, np.ndarray], rows: int, callers: int) -> float:
    """rows/s of ``run(feeds)`` with ``callers`` calls at once, dispatched as the server
    dispatches them: one thread hands each call to a pool of ``callers`` threads and waits for
    one to finish before it hands the next (so the hand-off, which a fast model's one call at a
    time waits on, is in the rate). At least MIN_CALLS calls per caller and MIN_SECONDS."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(callers, thread_name_prefix="unirt-plan") as pool:
        start = time.perf_counter()
        stop = start + MIN_SECONDS
        done = 0
        pending = {pool.submit(run, feeds) for _ in range(callers)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for call in finished:
                call.result()
                done += 1
                if done < MIN_CALLS * callers or time.perf_counter() < stop:
                    pending.add(pool.submit(run, feeds))
        return done * rows / (time.perf_counter() - start)


def _cost(once: float, callers: int = 1) -> float:
    """What timing one configuration costs (every round), from its warm-up call taking ``once``:
    ``callers`` calls at once may take turns."""
    return ROUNDS * callers * max(MIN_SECONDS, MIN_CALLS * once)


def measure(run: RunFn, row: Mapping[str, np.ndarray], max_batch: int, workers: int,
            budget_s: float = BUDGET_S) -> Plan:
    """Time ``run`` on ``row`` (one row per input, batch axis first) stacked to each of
    :func:`batch_sizes` (one caller, :func:`choose_batch`), then ``workers`` callers against one
    at the size chosen (:func:`choose_slots`).

    Within ``budget_s`` (about): larger sizes are left out when timing them would pass half of
    it, or when one of their calls fails (memory, an engine's batch limit); calls at once are
    timed at batch 1 when timing them at the chosen size would pass the rest. The batch of one
    row is always timed: its failure is raised."""
    busy_before, own_before = _machine_busy_s(), time.process_time()
    started = time.perf_counter()
    planned = 0.0
    once_at: dict[int, float] = {}
    for size in batch_sizes(max_batch):
        start = time.perf_counter()
        try:
            run(_stack(row, size))  # warm-up: the engine's first call at a new shape allocates
        except (UnirtError, MemoryError) as exc:
            if size == 1:
                raise
            logger.info("unirt serve: batch sizes from %d not measured: %s", size,
                        first_line(exc))
            break
        once = time.perf_counter() - start
        if size > 1 and planned + _cost(once) > budget_s / 2:
            logger.info("unirt serve: batch sizes from %d not measured: one call takes %.2f s",
                        size, once)
            break
        once_at[size] = once
        planned += _cost(once)
    rates: dict[tuple[int, int], float] = {}
    for _ in range(ROUNDS):
        for size in once_at:
            rates[size, 1] = max(rates.get((size, 1), 0.0),
                                 _rate(run, _stack(row, size), size, 1))
    batch = choose_batch({b: r for (b, _), r in rates.items()})
    slots = 1
    if workers > 1:
        left = budget_s - (time.perf_counter() - started)
        at = batch if _cost(once_at[batch], 1 + workers) <= left else 1
        feeds = _stack(row, at)
        for _ in range(ROUNDS):
            for n in (1, workers):
                rates[at, n] = max(rates.get((at, n), 0.0), _rate(run, feeds, at, n))
        slots = choose_slots(rates[at, 1], {workers: rates[at, workers]})
    plan = Plan(batch, slots, rates, others=others_share(busy_before, own_before, started))
    logger.debug("unirt serve: measured %s in %.1f s", plan.as_dict(),
                 time.perf_counter() - started)
    return plan


def _key(session: Session, shapes: Mapping[str, Sequence[int]], max_batch: int,
         workers: int) -> str:
    from unirt.plugin.registry import get_registry
    from unirt.process.machine import cpu_name
    from unirt.store.cache import artifact_key

    version = get_registry().backend(session.backend).available().version
    opened = session.options
    return artifact_key(CACHE_SECTION, session.model,
                        versions={"plan": VERSION, session.backend: version},
                        shapes={k: list(v) for k, v in sorted(shapes.items())},
                        precision=str(session.precision),
                        options={"backend": session.backend, "max_batch": max_batch,
                                 "workers": workers,
                                 "machine": f"{cpu_name()} x{os.cpu_count()}",
                                 # what the engine's threads can use: a Ray replica's CPUs
                                 "threads": None if opened is None else opened.threads,
                                 "cpus": _usable_cpus(),
                                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count()


def plan_for(session: Session, row: Mapping[str, np.ndarray], max_batch: int, workers: int,
             *, budget_s: float = BUDGET_S, name: str | None = None) -> Plan:
    """The cached plan for this session's model, backend and machine, else measured now and
    cached. The cache failing never fails the server: the plan is then measured every start.
    Raises the engine's ``UnirtError`` when ``row`` itself does not run."""
    from unirt.store.cache import ArtifactCache

    shapes = {n: a.shape for n, a in row.items()}
    try:
        key = _key(session, shapes, max_batch, workers)
    except UnirtError as exc:
        logger.debug("unirt serve: plan not cached: %s", exc)
        key = None
    cache = ArtifactCache()
    if key is not None:
        try:
            doc = cache.read_json(CACHE_SECTION, key, RESULT_FILE)
            if doc is not None:
                return Plan.from_dict(doc, cached=True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            logger.warning("unreadable serving plan %s; measured again", key)
            cache.remove(CACHE_SECTION, key)
    plan = measure(session.run, row, max_batch, workers, budget_s)
    if plan.busy:
        logger.warning("unirt serve: %s was measured while other processes used %.0f%% of the "
                       "CPU: served as measured, not cached (measured again at the next start)",
                       name or session.model.name, 100 * (plan.others or 0.0))
    elif key is not None:
        cache.write_json(CACHE_SECTION, key, RESULT_FILE, plan.as_dict(),
                         {"model": session.model.name, "kind": "serving plan"})
    return plan
