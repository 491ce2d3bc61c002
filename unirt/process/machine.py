"""This machine's facts that measurements are keyed by (the CPU's name). Kept light: the default
``unirt.load`` path asks for it to look up cached rankings."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), for benchmark reports and for keying
    measurements that only hold on one machine. Memoised, and ``/proc`` first: on Linux
    ``platform.processor()`` may run ``uname -p``, a process on the path of every ``load``."""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f
                         if ln.startswith("model name")), None)
        if name:
            return name
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
