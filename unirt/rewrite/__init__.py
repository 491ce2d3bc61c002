"""Rewrites: graph edits that make a model fit an engine, each proved numerically before use.

The contract is :class:`~unirt.plugin.rewrite.Rewrite` (registered through the
``register_rewrites`` hook, built-ins the same way as third-party ones). Its names are imported on
first use (PEP 562): the built-in rewrite plugin, :mod:`unirt.rewrite.builtin`, is loaded with
every registry, and a load that needs no rewrite should not pay for the contract either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Change", "Rewrite", "RewriteContext"]

if TYPE_CHECKING:  # pragma: no cover
    from unirt.plugin.rewrite import Change, Rewrite, RewriteContext


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'unirt.rewrite' has no attribute {name!r}")
    from unirt.plugin import rewrite

    value = getattr(rewrite, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
