"""The plugin manager: built-in and third-party backends registered the same way.

Built-ins are found from one explicit tuple of module names (as pytest, llm, datasette and tox
do); third-party plugins through the ``unirt`` entry-point group (found again only when what is
installed changed: :mod:`unirt.plugin.discovery`). A plugin that fails to import is
recorded with its error (``unirt plugins`` and ``unirt backends`` show it) and never breaks
``import unirt`` or the other plugins. ``UNIRT_DISABLE_PLUGINS=name,...`` blocks plugins by their
name (the module name for built-ins, the entry-point name for third-party ones).

Nothing is loaded at ``import unirt``: the default :class:`Registry` is built on first use.
Tests build a fresh ``Registry`` each (a fresh PluginManager per test, as pytest does).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from unirt.errors import BackendNotFoundError, HarnessError, PluginError, UnirtError, first_line
from unirt.plugin import hookspecs
from unirt.plugin.backend import Backend

logger = logging.getLogger("unirt")

#: The built-in backends, by module name. The only place in ``unirt/`` that names a backend.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "unirt_onnxruntime",
    "unirt_openvino",
    "unirt_opencv",
    "unirt_ncnn",
    "unirt_tensorrt",
    "unirt.rewrite.builtin",  # the built-in model rewrites, registered like any plugin's
)

ENTRY_POINT_GROUP = "unirt"
DISABLE_ENV = "UNIRT_DISABLE_PLUGINS"


@dataclass
class PluginRecord:
    """One plugin as ``unirt plugins`` reports it."""

    name: str
    source: str  # "builtin" or the distribution that provides the entry point
    loaded: bool
    error: str | None = None
    backends: list[str] = field(default_factory=list)
    disabled: bool = False
    rewrites: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RegistrySpec:
    """How to build the same registry in another interpreter (a verification child): the
    constructor's arguments, and the plugins registered through the API, each as an importable
    module name or a picklable object. Made by :meth:`Registry.spec`."""

    builtins: tuple[str, ...]
    entry_points: bool
    disabled: frozenset[str]
    extra: tuple[tuple[str, str, Any], ...] = ()  # (name, "module" | "object", module or object)


def _disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {n.strip() for n in raw.split(",") if n.strip()}


class Registry:
    """A PluginManager with unirt's hooks, its plugins, and the backends they registered."""

    def __init__(
        self,
        builtins: Iterable[str] = BUILTIN_PLUGINS,
        *,
        entry_points: bool = True,
        disabled: Iterable[str] | None = None,
    ) -> None:
        self.pm = pluggy.PluginManager("unirt")
        self.pm.add_hookspecs(hookspecs)
        self._builtins = tuple(builtins)
        self._entry_points = entry_points
        self._extra: list[tuple[str, str, Any]] = []
        self.disabled = set(_disabled_from_env() if disabled is None else disabled)
        self.records: dict[str, PluginRecord] = {}
        self._backends: dict[str, Backend] | None = None
        self._rewrites: dict[str, Any] | None = None
        self._lock = threading.Lock()
        for module_name in builtins:
            self._load_module(module_name, source="builtin")
        if entry_points:
            self._load_entry_points()

    # -- loading -----------------------------------------------------------------------------
    def _load_module(self, module_name: str, source: str) -> None:
        if module_name in self.disabled:
            self.records[module_name] = PluginRecord(module_name, source, False, disabled=True)
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            logger.warning("plugin %s failed to import: %s", module_name, first_line(exc))
            self.records[module_name] = PluginRecord(
                module_name, source, False, f"{type(exc).__name__}: {first_line(exc)}"
            )
            return
        self.register(module, name=module_name, source=source)

    def _load_entry_points(self) -> None:
        # Found from the discovery cache when nothing installed changed since the last process
        # (unirt.plugin.discovery): scanning every distribution's metadata costs 30-50 ms.
        from unirt.plugin.discovery import discover

        for ep in discover(ENTRY_POINT_GROUP):
            dist = ep.dist
            if ep.name in self.disabled:
                self.records[ep.name] = PluginRecord(ep.name, dist, False, disabled=True)
                continue
            if self.pm.get_plugin(ep.name) is not None or ep.name in self.records:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                logger.warning("plugin %s (%s) failed to load: %s", ep.name, dist, first_line(exc))
                self.records[ep.name] = PluginRecord(
                    ep.name, dist, False, f"{type(exc).__name__}: {first_line(exc)}"
                )
                continue
            self.register(plugin, name=ep.name, source=dist)

    def register(self, plugin: Any, name: str | None = None, source: str = "api") -> None:
        """Register a plugin object or module: how built-ins, entry points and tests add one."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if name in self.disabled:
            self.records[name] = PluginRecord(name, source, False, disabled=True)
            return
        self.pm.register(plugin, name=name)
        self.records[name] = PluginRecord(name, source, True)
        self._backends = self._rewrites = None  # collected again on next use
        if source == "api":  # built-ins and entry points are found again by the child itself
            if isinstance(plugin, types.ModuleType):
                self._extra.append((name, "module", plugin.__name__))
            else:
                self._extra.append((name, "object", plugin))

    # -- another interpreter -------------------------------------------------------------------
    def spec(self) -> RegistrySpec:
        """What a child interpreter needs to build this registry again (see
        :meth:`from_spec`). Raises ``HarnessError`` when a plugin registered through the API
        cannot travel (an object that does not pickle: a class defined in ``__main__`` of a
        script, a lambda): verification would otherwise measure some other backend."""
        import pickle

        spec = RegistrySpec(self._builtins, self._entry_points, frozenset(self.disabled),
                            tuple(self._extra))
        for name, kind, obj in self._extra:
            if kind != "object":
                continue
            try:
                data = pickle.dumps(obj)
                module = getattr(obj, "__module__", None) or getattr(type(obj), "__module__", "")
                if module == "__main__":
                    raise pickle.PicklingError("it is defined in __main__, which a child "
                                               "interpreter does not import")
                del data
            except Exception as exc:
                raise HarnessError(
                    f"plugin {name!r} was registered in this process and cannot be rebuilt in "
                    f"a verification child ({first_line(exc)}): register it from an importable "
                    "module, or load with verify='never'") from exc
        return spec

    @classmethod
    def from_spec(cls, spec: RegistrySpec) -> Registry:
        """The registry :meth:`spec` describes, built in this interpreter."""
        reg = cls(spec.builtins, entry_points=spec.entry_points, disabled=spec.disabled)
        for name, kind, obj in spec.extra:
            if name in reg.records:
                continue
            try:
                plugin = importlib.import_module(obj) if kind == "module" else obj
            except Exception as exc:
                raise HarnessError(f"plugin {name!r} cannot be imported in a child "
                                   f"interpreter: {first_line(exc)}") from exc
            reg.register(plugin, name=name, source="api")
        return reg

    # -- backends ----------------------------------------------------------------------------
    @property
    def backends(self) -> dict[str, Backend]:
        """Every registered backend by name, in registration order."""
        with self._lock:
            if self._backends is None:
                self._backends = self._collect()
            return self._backends

    def hook_calls(self, hook_name: str) -> Iterator[tuple[str, Callable[..., Any]]]:
        """Each plugin's implementation of a hook, one plugin at a time, in pluggy's call order
        (the last registered plugin first, ``tryfirst``/``trylast`` respected), with the
        plugin's name, as pluggy's own caller restricted to that plugin
        (``PluginManager.subset_hook_caller``): it takes the hook's keyword arguments, every
        plugin's wrappers (``wrapper=True``, ``hookwrapper=True``) wrap it, and pluggy's tracing
        and monitoring see it. For hooks whose failures are handled per plugin: pluggy's call of
        all implementations at once stops at the first exception and does not say whose it was.
        A hook with wrappers but no plain implementation is called once, as pluggy would."""
        hook = getattr(self.pm.hook, hook_name)
        impls = hook.get_hookimpls()
        plain = [i for i in reversed(impls) if not (i.wrapper or i.hookwrapper)]
        if not plain:
            if impls:
                yield ", ".join(self._plugin_name(i.plugin) for i in impls), hook
            return
        ordered: list[Any] = []
        for impl in plain:
            if not any(p is impl.plugin for p in ordered):
                ordered.append(impl.plugin)
        for plugin in ordered:
            others = [p for p in ordered if p is not plugin]
            yield self._plugin_name(plugin), self.pm.subset_hook_caller(hook_name, others)

    def _plugin_name(self, plugin: Any) -> str:
        return self.pm.get_name(plugin) or "?"

    def _plugin_rank(self, plugin_name: str) -> int:
        """Where a plugin stands in registration order (built-ins in ``BUILTIN_PLUGINS``
        order, then entry points, then plugins registered through the API)."""
        for rank, name in enumerate(self.records):
            if name == plugin_name:
                return rank
        return len(self.records)

    def _collect(self) -> dict[str, Backend]:
        return self._registered("register_backends", "backend", Backend, "a unirt Backend")

    def _registered(self, hook_name: str, kind: str, cls: type, what: str) -> dict[str, Any]:
        """Call a ``register_*`` hook, one plugin at a time: each registers classes or
        instances of ``cls`` by name (recorded on its PluginRecord's ``<kind>s`` list). A
        malformed or duplicate registration is a :class:`PluginError`; a plugin whose hook
        raises anything else is marked not loaded, with the reason, and the others go on."""
        found: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for plugin_name, call in self.hook_calls(hook_name):
            record = self.records.get(plugin_name)

            def register(obj: Any, _plugin: str = plugin_name, _rec=record) -> None:
                item = obj() if isinstance(obj, type) and issubclass(obj, cls) else obj
                name = getattr(item, "name", None)
                if not isinstance(item, cls) or not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_plugin} registered {obj!r}, which is not "
                                      f"{what} with a name")
                if name in found:
                    raise PluginError(f"plugin {_plugin} registered {kind} {name!r}, "
                                      "which another plugin already registered")
                found[name] = item
                owners[name] = _plugin
                if _rec is not None:
                    getattr(_rec, f"{kind}s").append(name)

            try:
                call(register=register)
            except PluginError:
                raise
            except Exception as exc:
                logger.warning("plugin %s failed in %s: %s", plugin_name, hook_name,
                               first_line(exc))
                if record is not None:
                    record.loaded = False
                    record.error = f"{hook_name}: {type(exc).__name__}: {first_line(exc)}"
        # Hooks run last-registered first; what they registered is listed in registration
        # order (each plugin's items in the order it registered them): stable and documented.
        ranked = sorted(enumerate(found), key=lambda e: (self._plugin_rank(owners[e[1]]), e[0]))
        return {name: found[name] for _, name in ranked}

    # -- rewrites ----------------------------------------------------------------------------
    @property
    def rewrites(self) -> dict[str, Any]:
        """Every registered rewrite (:class:`unirt.rewrite.Rewrite` instances) by name, in
        registration order. Collected on first use: routing asks only after a candidate
        failed, so a first load that succeeds never imports them."""
        with self._lock:
            if self._rewrites is None:
                self._rewrites = self._collect_rewrites()
            return self._rewrites

    def _collect_rewrites(self) -> dict[str, Any]:
        from unirt.plugin.rewrite import Rewrite

        return self._registered("register_rewrites", "rewrite", Rewrite, "a unirt Rewrite")

    def rewrite(self, name: str) -> Any:
        """The rewrite called ``name``; an unknown name lists the registered ones."""
        try:
            return self.rewrites[name]
        except KeyError:
            known = ", ".join(self.rewrites) or "none"
            raise UnirtError(f"unknown rewrite {name!r}; registered rewrites: {known}") from None

    @property
    def reference(self) -> str | None:
        """The name of the reference backend (``is_reference``), or None when none is
        registered (its plugin disabled or broken)."""
        return next((n for n, b in self.backends.items() if b.is_reference), None)

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; an unknown name lists the registered ones."""
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(self.backends) or "none"
            raise BackendNotFoundError(
                f"unknown backend {name!r}; registered backends: {known}"
            ) from None

    def call_hook_safely(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook; a plugin's exception is logged, never raised to the user."""
        for plugin_name, call in self.hook_calls(hook_name):
            try:
                call(**kwargs)
            except Exception:
                logger.warning("plugin %s failed in %s", plugin_name, hook_name, exc_info=True)


_default: Registry | None = None
_default_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry()
        return _default


def set_registry(registry: Registry | None) -> Registry | None:
    """Replace the process-wide registry (tests; embedding apps). Returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, registry
        return previous
