"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved(a: Callable[[], Any], b: Callable[[], Any], samples: int,
                calls: int) -> tuple[float, float]:
    """Median seconds per call of ``a()`` and ``b()``: ``samples`` rounds of ``calls`` calls
    each, alternating which goes first, so machine noise hits both alike."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(samples):
        pair = [(a, ta), (b, tb)] if i % 2 == 0 else [(b, tb), (a, ta)]
        for fn, acc in pair:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            acc.append((time.perf_counter() - start) / calls)
    return statistics.median(ta), statistics.median(tb)
