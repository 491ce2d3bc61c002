"""Rewrites: graph edits that make a model fit an engine, each proved numerically before use.

The contract is :class:`~unirt.plugin.rewrite.Rewrite` (registered through the
``register_rewrites`` hook, built-ins the same way as third-party ones).
"""

from unirt.plugin.rewrite import Change, Rewrite, RewriteContext

__all__ = ["Change", "Rewrite", "RewriteContext"]
