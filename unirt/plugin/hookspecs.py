"""The pluggy contract between unirt and its plugins: the reference for plugin authors.

A plugin is a module (or object) with functions marked ``@unirt.hookimpl`` whose names match the
specifications below. Built-in backends under ``plugins/`` use exactly the same marker and are
registered through the same :meth:`unirt.plugin.registry.Registry.register` as third-party
plugins, which are found through the ``unirt`` entry-point group::

    [project.entry-points.unirt]
    mybackend = "unirt_mybackend"

Hooks run at set-up time (plugin loading, routing, opening a model), never inside
``Session.run``: a call into a model is the engine call plus name checks, nothing more.

Call order (pluggy's): implementations run last-registered plugin first, so a third-party
plugin's run before the built-ins', and the built-ins in the reverse of
``unirt.plugin.registry.BUILTIN_PLUGINS``; ``tryfirst=True`` / ``trylast=True`` move one to the
front or the back. unirt calls each plugin's implementation separately (pluggy's
``subset_hook_caller``), so that one plugin's failure is attributed to it and, for
``register_*`` and the observer hooks, does not stop the others; a ``wrapper=True`` (or old-style
``hookwrapper=True``) implementation therefore wraps each plugin's call, and pluggy's tracing
(``pm.trace``, ``add_hookcall_monitoring``) sees every call. What the ``register_*`` hooks
register is listed in plugin registration order (built-ins in ``BUILTIN_PLUGINS`` order, then
entry points, then plugins registered through the API), each plugin's items in the order it
registered them: that is the order of ``Registry.backends`` and of ``unirt backends``.

Every hook here is documented in docs/plugins.md and exercised by ``tests/plugin/test_hooks.py``; a
new hook needs both (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from unirt.model.info import ModelInfo
    from unirt.plugin.route import RouteStep

hookspec = pluggy.HookspecMarker("unirt")
hookimpl = pluggy.HookimplMarker("unirt")


@hookspec
def register_backends(register: Callable[[Any], None]) -> None:
    """Register the backends this plugin provides.

    :param register: call it once per backend with a :class:`unirt.plugin.backend.Backend`
        subclass (or an instance). Two backends with the same ``name`` are a
        :class:`unirt.errors.PluginError`.

    Called once per :class:`~unirt.plugin.registry.Registry`, the first time its backends are
    needed (not at ``import unirt``). Not ``firstresult``: every plugin's implementation is called.
    The hook must not import its engine; do that in ``Backend._available_impl`` / ``_open_impl``.
    """


@hookspec
def register_rewrites(register: Callable[[Any], None]) -> None:
    """Register the model rewrites this plugin provides.

    :param register: call it once per rewrite with a :class:`unirt.rewrite.Rewrite` subclass (or
        an instance). Two rewrites with the same ``name`` are a :class:`unirt.errors.PluginError`,
        as is anything that is not a ``Rewrite`` or has no ``name``.

    Called once per :class:`~unirt.plugin.registry.Registry`, the first time its rewrites are needed
    (a candidate backend failed and ``load(rewrite=...)`` allows rewriting, ``unirt rewrite``,
    ``unirt capabilities``). Not ``firstresult``: every plugin's implementation is called. The
    built-in rewrites are registered through this same hook. A rewrite only transforms: unirt
    runs every rewritten model in a child process and compares it with the reference on the
    original before it is used, so a wrong rewrite is discarded, never routed to.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``unirt`` command line.

    :param cli: the top-level click group; add commands with ``@cli.command()``.

    Called once when the CLI starts, before arguments are parsed. Not ``firstresult``. A command
    should raise :class:`unirt.errors.UnirtError` for user errors: the CLI prints those as one line.
    """


@hookspec
def order_candidates(model: ModelInfo, candidates: list[str]) -> None:
    """Reorder or veto the candidate backends for a model (a site policy, for example).

    :param model: the model being routed.
    :param candidates: backend names in the order they will be tried; modify the list in place
        (reorder, remove). Adding a name that was not there is a :class:`~unirt.errors.PluginError`.

    Called once per ``unirt.load`` after ``prefer=``, ``exclude=`` and the default order are
    applied, in pluggy's call order (the last registered plugin first; see above), each
    implementation seeing the previous one's result.
    Not called for ``backend=`` (the user named one backend). A removed backend appears on the
    route as ``excluded``, "vetoed by a plugin". An exception is a ``PluginError``: a broken
    policy must not silently route somewhere it forbids. Not ``firstresult``.
    """


@hookspec
def on_fallback(model: ModelInfo, step: RouteStep, next_backend: str | None) -> None:
    """Observe a fallback: a candidate backend was skipped or failed while routing a model.

    :param model: the model being routed.
    :param step: the failed candidate's route step (``backend``, ``outcome``, ``reason``).
    :param next_backend: the name of the candidate tried next, or ``None`` if none is left.

    Called by the router, once per failed candidate, in routing order, only when the failure
    leads to trying another candidate (not for ``backend=``, which never falls back), and on a
    run-time fallback (the chosen engine cannot take an input shape; ``step.outcome`` is
    ``"shape fallback"``). For
    logging and telemetry; the return value is ignored and an exception in a hook is logged,
    never raised into the user's ``load``. Not ``firstresult``.
    """
