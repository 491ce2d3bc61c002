"""What is installed: every registered backend and its availability (``unirt backends``), and the
model versions each installed engine loads, as its measured op-support table says."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unirt.errors import first_line
from unirt.plugin.registry import Registry, get_registry
from unirt.process.machine import cpu_name as cpu_name  # where it was, for callers

if TYPE_CHECKING:  # pragma: no cover
    from unirt.capability.table import OpTable

logger = logging.getLogger("unirt")


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


# -- what the installed engines load ------------------------------------------------------------
@dataclass(frozen=True)
class EngineLimits:
    """What an engine's op-support table says about versions: ``refused_opset`` (the lowest
    default-domain opset whose conformance cases it refused as too new, ``None``: none), the
    same for IR, the highest opset and IR its table measured, and per op the lowest opset
    refused for that op (a kernel registered up to some opset only)."""

    backend: str
    version: str | None
    refused_opset: int | None
    refused_ir: int | None
    measured_opset: int | None
    measured_ir: int | None
    op_refused_opset: Mapping[str, int] = field(default_factory=dict)

    @property
    def max_opset(self) -> int | None:
        """The highest default-domain opset the engine loads, as far as its table knows."""
        return None if self.refused_opset is None else self.refused_opset - 1


def engine_limits(backends: Sequence[str] | None = None, registry: Registry | None = None
                  ) -> list[EngineLimits]:
    """The version limits of every available backend (or of ``backends``) from its op-support
    table. Backends expose no opset limits of their own, and the engines none through their
    Python APIs, so the measured tables are the source. A backend without a table is left
    out."""
    from unirt.capability.table import find_table

    registry = registry or get_registry()
    names = list(backends) if backends is not None else list(registry.backends)
    out: list[EngineLimits] = []
    for name in names:
        try:
            be = registry.backend(name)
        except Exception:  # an unknown name: nothing to say about it
            continue
        avail = be.available()
        if not avail.available:
            continue
        try:
            table, _ = find_table(name, avail.version)
        except Exception as exc:  # an unreadable table is the table's problem, not the model's
            logger.debug("no table for %s: %s", name, first_line(exc))
            continue
        if table is None:
            continue
        opset, ir = _measured(table)
        out.append(EngineLimits(name, avail.version, table.limits.get("refused_opset"),
                                table.limits.get("refused_ir"), opset, ir,
                                dict(table.op_refused_opset)))
    return out


@functools.lru_cache(maxsize=32)
def _measured(table: OpTable) -> tuple[int | None, int | None]:
    """The highest opset and IR version among a table's cases (tables are loaded once and
    cached, so this is too)."""
    cases = table.data.get("cases", [])
    opsets = [c["o"] for c in cases if isinstance(c.get("o"), int)]
    irs = [c["ir"] for c in cases if isinstance(c.get("ir"), int)]
    return max(opsets, default=None), max(irs, default=None)
