"""Routing: order the candidate backends for a model, open the first that works, record why.

Candidates are ``backend=`` alone (never falls back), else the ``prefer`` list first and then the
default order for the device (GPU backends before CPU ones under ``device="auto"``, each class
by its backends' ``default_rank``). For each: available? -> open; every failure is recorded on
the route with its reason and the next candidate is tried. A preferred backend that fails logs a
warning naming it and the reason, so nobody finds a silent fallback weeks later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .backend import OpenOptions
from .errors import BackendUnavailableError, NoBackendError, UnirtError
from .model import ModelSource, read_model
from .plugins import Registry, get_registry
from .route import CHOSEN, EXCLUDED, FAILED, NOT_TRIED, UNAVAILABLE, RouteStep, render_route
from .session import Session

logger = logging.getLogger("unirt")

DEVICES = ("auto", "cpu", "cuda", "gpu")


def _names(value: str | Iterable[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise UnirtError(f"{what} must be a backend name or a list of names, got {value!r}")
    return names


def default_order(registry: Registry, device: str = "auto") -> list[str]:
    """Backend names in the default routing order for ``device``."""
    if device not in DEVICES:
        raise UnirtError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    backends = list(registry.backends.values())
    if device == "cpu":
        backends = [b for b in backends if b.device_class == "cpu"]
    elif device in ("cuda", "gpu"):
        backends = [b for b in backends if b.device_class == "gpu"]
    backends.sort(key=lambda b: (b.device_class != "gpu", b.default_rank))
    return [b.name for b in backends]


def candidates(
    registry: Registry,
    backend: str | None = None,
    prefer: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    device: str = "auto",
) -> tuple[list[str], set[str]]:
    """Every candidate in routing order, and the names among them the caller excluded."""
    excluded = _names(exclude, "exclude")
    for name in excluded:
        registry.backend(name)  # an unknown name is an error listing the known ones
    if backend is not None:
        if prefer:
            raise UnirtError("give either backend= (only that one) or prefer=, not both")
        registry.backend(backend)
        if backend in excluded:
            raise UnirtError(f"backend {backend!r} is also in exclude=")
        return [backend], set()
    preferred = _names(prefer, "prefer")
    for name in preferred:
        registry.backend(name)
    order: list[str] = []
    for name in [*preferred, *default_order(registry, device)]:
        if name not in order:
            order.append(name)
    return order, set(excluded)


def load(
    model: ModelSource,
    *,
    backend: str | None = None,
    prefer: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    device: str = "auto",
    precision: str = "exact",
    threads: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    fallback: bool = True,
    registry: Registry | None = None,
) -> Session:
    """Open ``model`` on the best backend that can run it. See the README for every argument."""
    registry = registry or get_registry()
    info = read_model(model)
    options = dict(options or {})
    for name, opts in options.items():
        registry.backend(name)
        if not isinstance(opts, Mapping):
            raise UnirtError(f"options[{name!r}] must be a dict of backend options")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UnirtError(f"threads must be a positive integer, not {threads!r}")
    everything, excluded = candidates(registry, backend, prefer, exclude, device)
    preferred = set(_names(prefer, "prefer"))
    route: list[RouteStep] = []
    for i, name in enumerate(everything):
        if name in excluded:
            route.append(RouteStep(name, EXCLUDED, "excluded by the caller"))
            continue
        be = registry.backend(name)
        open_options = OpenOptions(precision=precision, threads=threads, device=device,
                                   extra=dict(options.get(name, {})))
        try:
            impl = be.open(info, open_options)
        except BackendUnavailableError as exc:
            if backend is not None:
                raise  # backend= never falls back
            step = RouteStep(name, UNAVAILABLE, str(be.available().reason or exc))
        except UnirtError as exc:
            if backend is not None:
                raise
            step = RouteStep(name, FAILED, str(exc))
        else:
            route.append(RouteStep(name, CHOSEN, _chosen_reason(name, backend, preferred, route)))
            route.extend(RouteStep(n, EXCLUDED if n in excluded else NOT_TRIED,
                                   "excluded by the caller" if n in excluded else "")
                         for n in everything[i + 1:])
            return Session(info, name, impl, route, open_options)
        route.append(step)
        nxt = next((n for n in everything[i + 1:] if n not in excluded), None)
        if name in preferred:
            if not fallback:
                raise NoBackendError(f"preferred backend {name} cannot run {info.name} and "
                                     f"fallback=False: {step.reason}")
            logger.warning("unirt: preferred backend %s cannot run %s (%s); falling back to %s",
                           name, info.name, step.reason, nxt or "nothing")
        registry.call_hook_safely("on_fallback", model=info, step=step, next_backend=nxt)
    raise NoBackendError(f"no backend can run {info.name}:\n{render_route(route)}")


def _chosen_reason(name: str, backend: str | None, preferred: set[str],
                   before: list[RouteStep]) -> str:
    if backend is not None:
        return "requested with backend="
    if name in preferred:
        return "preferred"
    failed = [s for s in before if s.outcome in (FAILED, UNAVAILABLE)]
    return "first in the default order" + (" that could open the model" if failed else "")
