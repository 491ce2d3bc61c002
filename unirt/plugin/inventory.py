"""What is installed: every registered backend and its availability (``unirt backends``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from unirt.plugin.registry import Registry, get_registry


@dataclass(frozen=True)
class BackendStatus:
    """One registered backend: available or not, engine version, devices, why not, how to fix."""

    name: str
    available: bool
    version: str | None
    devices: tuple[str, ...]
    reason: str | None
    install_hint: str | None
    description: str
    device_class: str
    plugin: str

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["devices"] = list(self.devices)
        return d


def backends(registry: Registry | None = None) -> list[BackendStatus]:
    """Every registered backend, in registration order, with its availability on this machine."""
    registry = registry or get_registry()
    found = registry.backends  # collecting fills each plugin record's backend list
    owner = {b: r.name for r in registry.records.values() for b in r.backends}
    out = []
    for name, be in found.items():
        a = be.available()
        out.append(BackendStatus(
            name=name, available=a.available, version=a.version, devices=a.devices,
            reason=a.reason, install_hint=None if a.available else a.install_hint,
            description=be.description, device_class=be.device_class,
            plugin=owner.get(name, "?"),
        ))
    return out


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
