"""MkDocs hook: Sphinx cross-reference roles in docstrings, rendered for Markdown.

unirt's docstrings name objects with Sphinx roles (:class:`~unirt.errors.PluginError`,
:func:`unirt.load`, :mod:`unirt.runtime.fit`). mkdocstrings renders docstrings as Markdown,
where a role would show as ``:class:`` followed by code. This hook turns each role into an
optional autorefs cross-reference: a link where the API reference documents the object, plain
code where it does not (an optional reference never fails a ``--strict`` build). A leading
``~`` shows the last name only, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|deco):`(?P<tilde>~?)(?P<target>[^`\s]+)`")


def _replace(match: re.Match[str]) -> str:
    target = match["target"].lstrip(".")
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else match["target"]
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


class _Roles(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        return [ROLE.sub(_replace, line) for line in lines]


class SphinxRoles(Extension):
    def extendMarkdown(self, md: Markdown) -> None:  # the name Markdown calls
        md.preprocessors.register(_Roles(md), "unirt_sphinx_roles", 40)


@event_priority(100)  # before mkdocstrings hands the extension list to its handlers
def on_config(config: Any) -> Any:
    config.markdown_extensions.append(SphinxRoles())
    return config
