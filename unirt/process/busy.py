"""How busy the machine is with other work: timings taken while other processes held the CPU
are not what the machine does, and must not be kept as if they were.

A serving plan and a tuning ranking are cached and steer every later start; measured on a
2-core machine while a test suite ran beside them, a ranking put an engine first that is 1.3x
slower on the quiet machine, and nothing measured it again. Read from ``/proc/stat`` (Linux);
elsewhere nothing is known and nothing is refused.
"""

from __future__ import annotations

import os
import time

#: Other processes taking more than this share of the CPU make a measurement untrustworthy.
BUSY_SHARE = 0.25


def machine_busy_s() -> float | None:
    """CPU seconds every process of the machine has used so far (/proc/stat), None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def others_share(busy_before: float | None, own_before: float, started: float) -> float | None:
    """The share of the machine's CPU that processes other than this one used since the
    readings given (:func:`machine_busy_s`, ``time.process_time()``, ``time.perf_counter()``)."""
    busy_now = machine_busy_s()
    if busy_before is None or busy_now is None:
        return None
    wall = time.perf_counter() - started
    others = (busy_now - busy_before) - (time.process_time() - own_before)
    return max(0.0, others) / max(wall * (os.cpu_count() or 1), 1e-9)


def others_now(seconds: float = 0.25) -> float | None:
    """The share of the CPU other processes use over the next ``seconds``, this one idle: a
    reading taken between the steps of a measurement whose own children are at rest."""
    before, own, started = machine_busy_s(), time.process_time(), time.perf_counter()
    time.sleep(seconds)
    return others_share(before, own, started)
