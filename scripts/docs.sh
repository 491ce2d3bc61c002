#!/usr/bin/env bash
# Build the documentation site (MkDocs + Material, mkdocstrings, mkdocs-click) with --strict:
# a broken link or anchor, a page missing from the nav, an API page whose module does not load
# or a CLI page whose click group does not import fails the build.
#
# Installs nothing: it uses the project's .venv (the `docs` extra, part of `dev`, which
# scripts/test.sh installs), or the interpreter in $UNIRT_DOCS_PYTHON.
# Usage: scripts/docs.sh [SITE_DIR]   (default: tmp/site, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
SITE_DIR="${1:-tmp/site}"
PY="${UNIRT_DOCS_PYTHON:-.venv/bin/python}"
if ! "$PY" -c "import mkdocs, material, mkdocstrings, mkdocs_click" 2>/dev/null; then
    echo "scripts/docs.sh: the docs tools are missing from $PY; install them with" >&2
    echo "  .venv/bin/pip install -c constraints.txt -e \".[dev]\"" >&2
    exit 1
fi
# Material's notice about MkDocs 2.0 is advice, not a build problem.
export NO_MKDOCS_2_WARNING=1
# The CLI reference imports the click group: the built-in plugins must be importable.
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m mkdocs build --strict --clean -d "$SITE_DIR"
echo "scripts/docs.sh: site built in $SITE_DIR"
