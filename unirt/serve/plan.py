"""How a served model runs fastest on this machine: rows per engine call and engine calls at
once, measured on the model at load.

Why measured and not configured: both answers are the model's and the engine's, and a guess
either way costs throughput. On the 2-core CPU this was built on, ONNX Runtime runs ResNet-18
(3x224x224) at 122 images/s at batch 1 and 131 at batch 8 (1.07x), a dense model (four
1024x1024 MatMul+Relu) at 7.5x the rows/s at batch 16; and two calls at once on one session that
already uses every core run at 0.76x the rate of one at a time. So ``max_batch`` is the most a
user allows, the batch size served is the smallest that comes within :data:`NEAR` of the best
rate measured (and none when no size beats batch 1 by :data:`GAIN`), and a second engine call
at once is allowed only where it measured :data:`GAIN` faster.

The measurement times the session the server will serve (in this process: it has been verified
and has run), on generated rows of the shapes verification measured, for about a second; it is
cached per model, backend and version, precision, shapes and machine, so a restart pays nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnirtError, first_line

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Session

logger = logging.getLogger("unirt")

#: A larger batch, or a second call at once, must beat the rate without it by this much: about
#: the noise of two interleaved rounds on a busy machine. Lower would be taken for noise; higher
#: would forgo real gains (batching with no wait costs a lone request nothing, so any gain the
#: engine shows is worth taking).
GAIN = 0.05
#: Of the batch sizes within NEAR of the best rate, the smallest is served: the same throughput
#: with less waiting for rows.
NEAR = 0.02
#: Each size is timed for at least this many calls and this long, in two interleaved rounds.
MIN_CALLS = 3
MIN_SECONDS = 0.1
ROUNDS = 2
#: About the most the measurement spends on one model at load: larger batch sizes, and calls at
#: once, are left out when timing them would pass it (a slow model is served one call at a time).
BUDGET_S = 4.0
CACHE_SECTION = "serve-plan"
RESULT_FILE = "plan.json"
VERSION = "1"

RunFn = Callable[[dict[str, np.ndarray]], object]


@dataclass(frozen=True)
class Plan:
    """What the measurement found: ``max_batch`` rows per call (1: no batching) and ``slots``
    engine calls at once, with the rates behind them."""

    max_batch: int
    slots: int
    #: rows/s by batch size, one call at a time
    batch_rates: Mapping[int, float] = field(default_factory=dict)
    #: rows/s by calls at once, at ``max_batch``
    slot_rates: Mapping[int, float] = field(default_factory=dict)
    cached: bool = False

    def describe_batching(self) -> str:
        """The rates, in words, for the batching reason: ``measured rows/s: 1: 122, 8: 131``."""
        return "measured rows/s " + ", ".join(
            f"{size}: {rate:,.0f}" for size, rate in sorted(self.batch_rates.items()))

    def as_dict(self) -> dict[str, Any]:
        return {"max_batch": self.max_batch, "slots": self.slots,
                "batch_rates": {str(k): round(v, 2) for k, v in sorted(self.batch_rates.items())},
                "slot_rates": {str(k): round(v, 2) for k, v in sorted(self.slot_rates.items())},
                "cached": self.cached}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], cached: bool = False) -> Plan:
        return cls(int(doc["max_batch"]), int(doc["slots"]),
                   {int(k): float(v) for k, v in doc["batch_rates"].items()},
                   {int(k): float(v) for k, v in doc["slot_rates"].items()}, cached)


def batch_sizes(max_batch: int) -> list[int]:
    """The sizes tried: powers of two below ``max_batch``, and ``max_batch``."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def choose_batch(rates: Mapping[int, float]) -> int:
    """The smallest size within :data:`NEAR` of the best rate, or 1 when no size beats batch 1 by
    :data:`GAIN`."""
    if not rates:
        return 1
    base = rates.get(1, 0.0)
    best = max(rates.values())
    if 1 in rates and best < base * (1.0 + GAIN):
        return 1
    return min(size for size, rate in rates.items() if rate >= best * (1.0 - NEAR))


def choose_slots(rates: Mapping[int, float]) -> int:
    """More calls at once only when they measured :data:`GAIN` faster than one."""
    one = rates.get(1)
    if one is None:
        return max(rates, default=1)
    more = {n: r for n, r in rates.items() if n > 1 and r >= one * (1.0 + GAIN)}
    return max(more, key=lambda n: more[n]) if more else 1


def _stack(row: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    if size == 1:
        return dict(row)
    return {n: np.ascontiguousarray(np.repeat(a, size, axis=0)) for n, a in row.items()}


def _rate(run: RunFn, feeds: dict[str, np.ndarray], rows: int, callers: int) -> float:
    """rows/s of ``callers`` threads each calling ``run(feeds)`` at least MIN_CALLS times and
    for MIN_SECONDS."""
    counts = [0] * callers
    stop = time.perf_counter() + MIN_SECONDS

    def loop(i: int) -> None:
        while counts[i] < MIN_CALLS or time.perf_counter() < stop:
            run(feeds)
            counts[i] += 1

    start = time.perf_counter()
    if callers == 1:
        loop(0)
    else:
        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return sum(counts) * rows / (time.perf_counter() - start)


def _cost(once: float, callers: int = 1) -> float:
    """What timing one size costs (all rounds), from its warm-up call taking ``once``."""
    return ROUNDS * callers * max(MIN_SECONDS, MIN_CALLS * once)


def measure(run: RunFn, row: Mapping[str, np.ndarray], max_batch: int, workers: int,
            budget_s: float = BUDGET_S) -> Plan:
    """Time ``run`` on ``row`` (one row per input, batch axis first) stacked to each of
    :func:`batch_sizes`, then ``workers`` calls at once against one at the chosen size.

    Within ``budget_s`` (about): larger sizes are left out once their timing would pass it, and
    calls at once are not tried (one slot) when timing them would. The batch of one row is always
    timed; it raises the engine's error when it fails."""
    started = time.perf_counter()
    planned = 0.0
    once_at: dict[int, float] = {}
    for size in batch_sizes(max_batch):
        feeds = _stack(row, size)
        start = time.perf_counter()
        try:
            run(feeds)  # warm-up: the engine's first call at a new shape allocates
        except (UnirtError, MemoryError) as exc:
            if size == 1:
                raise
            logger.info("unirt serve: batch sizes from %d not measured: %s", size,
                        first_line(exc))
            break
        once = time.perf_counter() - start
        if size > 1 and planned + _cost(once) > budget_s:
            logger.info("unirt serve: batch sizes from %d not measured: one call takes %.2f s",
                        size, once)
            break
        once_at[size] = once
        planned += _cost(once)
    rates: dict[int, float] = {}
    for _ in range(ROUNDS):
        for size in once_at:
            rate = _rate(run, _stack(row, size), size, 1)
            rates[size] = max(rates.get(size, 0.0), rate)
    chosen = choose_batch(rates)
    slot_rates: dict[int, float] = {}
    left = budget_s - (time.perf_counter() - started)
    if workers > 1 and _cost(once_at[chosen], 1 + workers) <= left:
        feeds = _stack(row, chosen)
        for _ in range(ROUNDS):
            for callers in (1, workers):
                rate = _rate(run, feeds, chosen, callers)
                slot_rates[callers] = max(slot_rates.get(callers, 0.0), rate)
    plan = Plan(chosen, choose_slots(slot_rates) if slot_rates else 1, rates, slot_rates)
    logger.debug("unirt serve: measured %s in %.1f s", plan.as_dict(),
                 time.perf_counter() - started)
    return plan


def _key(session: Session, shapes: Mapping[str, Sequence[int]], max_batch: int,
         workers: int) -> str:
    from ..cache import artifact_key
    from ..inventory import cpu_name
    from ..plugins import get_registry

    version = get_registry().backend(session.backend).available().version
    return artifact_key(CACHE_SECTION, session.model,
                        versions={"plan": VERSION, session.backend: version},
                        shapes={k: list(v) for k, v in sorted(shapes.items())},
                        precision=str(session.precision),
                        options={"backend": session.backend, "max_batch": max_batch,
                                 "workers": workers,
                                 "machine": f"{cpu_name()} x{os.cpu_count()}"})


def plan_for(session: Session, row: Mapping[str, np.ndarray], max_batch: int, workers: int,
             *, budget_s: float = BUDGET_S) -> Plan:
    """The cached plan for this session's model, backend and machine, else measured now and
    cached. The cache failing never fails the server: the plan is then measured every start.
    Raises the engine's ``UnirtError`` when ``row`` itself does not run."""
    from ..cache import ArtifactCache

    shapes = {n: a.shape for n, a in row.items()}
    try:
        key = _key(session, shapes, max_batch, workers)
    except UnirtError as exc:
        logger.debug("unirt serve: plan not cached: %s", exc)
        key = None
    cache = ArtifactCache()
    if key is not None:
        entry = cache.lookup(CACHE_SECTION, key)
        if entry is not None:
            try:
                return Plan.from_dict(json.loads((entry / RESULT_FILE).read_text()),
                                      cached=True)
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                logger.warning("unreadable serving plan %s; measured again", key)
                cache.remove(CACHE_SECTION, key)
    plan = measure(session.run, row, max_batch, workers, budget_s)
    if key is not None:
        def build(tmp: Path) -> dict[str, Any]:
            (tmp / RESULT_FILE).write_text(json.dumps(plan.as_dict(), indent=1))
            return {"model": session.model.name, "kind": "serving plan"}

        entry, _ = cache.get_or_build(CACHE_SECTION, key, build)
        cache.release(entry)
    return plan
