"""What live verification costs the caller per call: a session with the live check on (calls not
sampled, the 99 in 100) against the same session with it off, and what a sampled call adds.

Both sessions wrap the very same engine session (two engines would each keep a thread pool and
measure their contention instead), and are timed side by side in one run, interleaved
(:func:`_timing.interleaved`). The live check is not started: an unsampled call never reaches
its thread or child, and a sampled call's cost to the caller is the copy and the queue put.

    python benchmarks/bench_live.py [--samples 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _timing import interleaved

import unirt
from unirt.plugin.registry import get_registry
from unirt.runtime.live import LiveCheck
from unirt.runtime.session import Session
from unirt.testing import models

logger = logging.getLogger("bench_live")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _twins(path: Path) -> tuple[Session, Session]:
    """Two sessions on one engine session: live off, and live on with no call sampled."""
    # One engine thread: a thread pool spinning between calls on a shared machine is noise.
    off = unirt.load(path, backend="onnxruntime", threads=1, verify_live=False)
    assert off._impl is not None
    on = Session(off.model, off.backend, off._impl, options=off.options)
    check = LiveCheck(on, get_registry(), "a-reference", "exact", None, {}, first=0, every=0)
    on._live = on._live_check = check
    return off, on


def _sampled_cost(session: Session, feeds: dict[str, np.ndarray], calls: int) -> float:
    """Seconds a sampled call adds in the caller (copy of feeds and outputs, queue put), per
    call, against the same calls unsampled."""
    outputs = session.run(feeds)
    check = LiveCheck(session, get_registry(), "a-reference", "exact", None, {},
                      first=10**12, every=0, depth=0)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        for _ in range(calls):
            check.observe(feeds, outputs)
        times.append((time.perf_counter() - start) / calls)
        while not check._queue.empty():
            check._queue.get_nowait()
    return statistics.median(times)


def _unsampled_cost(session: Session, feeds: dict[str, np.ndarray], calls: int) -> float:
    """Seconds of ``observe`` itself on an unsampled call (the counter and the comparison), and
    of the attribute read and test ``Session.run`` adds before it."""
    outputs = session.run(feeds)
    check = LiveCheck(session, get_registry(), "a-reference", "exact", None, {}, first=0,
                      every=0)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        for _ in range(calls):
            live = check
            if live is not None:
                live.observe(feeds, outputs)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def measure(name: str, path: Path, feeds: dict[str, Any], samples: int, calls: int
            ) -> dict[str, float]:
    off, on = _twins(path)
    for a, b in zip(off.run(feeds).values(), on.run(feeds).values()):
        np.testing.assert_array_equal(a, b)
    t_off, t_on = interleaved(lambda: off.run(feeds), lambda: on.run(feeds), samples, calls)
    sampled = _sampled_cost(off, feeds, calls)
    unsampled = _unsampled_cost(off, feeds, 10_000)
    off.close()
    return {"off_us": t_off * 1e6, "on_us": t_on * 1e6, "added_us": (t_on - t_off) * 1e6,
            "ratio": t_on / t_off, "observe_unsampled_ns": unsampled * 1e9,
            "sampled_call_added_us": sampled * 1e6,
            "amortized_at_1_in_100_us": sampled * 1e6 / 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results: dict[str, Any] = {"cpu": cpu_name(), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = models.save(models.tiny(), Path(tmp) / "tiny.onnx")
        results["tiny"] = measure("tiny", tiny, {"x": np.ones((1, 4), np.float32)},
                                  args.samples, 500)
        conv = models.save(models.conv_net(size=32), Path(tmp) / "conv.onnx")
        x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
        results["conv_net"] = measure("conv_net", conv, {"input": x}, args.samples, 50)
    if args.json:
        logger.info("%s", json.dumps(results, indent=2))
        return
    logger.info("CPU: %s, python %s", results["cpu"], results["python"])
    for name, label in (("tiny", "tiny (Relu*2 on 1x4)"),
                        ("conv_net", "conv net (1x3x32x32)")):
        r = results[name]
        logger.info("%-22s off %8.2f us  on %8.2f us  added %+6.3f us/call  ratio %.4f  "
                    "(observe, unsampled: %.0f ns; a sampled call adds %.2f us, %.3f us/call "
                    "amortized at 1 in 100)", label, r["off_us"], r["on_us"], r["added_us"],
                    r["ratio"], r["observe_unsampled_ns"], r["sampled_call_added_us"],
                    r["amortized_at_1_in_100_us"])


if __name__ == "__main__":
    main()
