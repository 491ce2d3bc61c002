#!/usr/bin/env bash
# The README's test command: set up a virtual environment (if needed) and run lint and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all,ray,dev]"
# The pnnx wheel declares torch; its converter binary needs none of it.
.venv/bin/python -m pip install -q -c constraints.txt --no-deps pnnx
.venv/bin/python -m ruff check unirt plugins tests benchmarks examples stress
# The layers (pyproject's [tool.importlinter]): each package imports only from those below it.
.venv/bin/lint-imports
# The documentation site, with --strict: a broken link or an API page that does not load fails.
bash scripts/docs.sh .cache/site
# py.typed is a promise: the core and the built-in plugins type-check.
.venv/bin/python -m mypy unirt plugins/unirt_onnxruntime plugins/unirt_openvino \
    plugins/unirt_opencv plugins/unirt_ncnn plugins/unirt_tensorrt --ignore-missing-imports
# ncnn's Vulkan path on Mesa's software driver (lavapipe), best effort: without it (no apt, a
# mirror down) tests/plugins/test_ncnn_vulkan.py skips with the reason. Only those tests' child processes
# get its environment; the rest of the suite keeps seeing a machine without Vulkan.
mkdir -p .cache
if scripts/lavapipe.sh >/dev/null 2>.cache/lavapipe.log; then
    export UNIRT_LAVAPIPE_ENV="$PWD/.cache/lavapipe/env"
else
    export UNIRT_LAVAPIPE_SKIP="scripts/lavapipe.sh failed: $(tail -n 1 .cache/lavapipe.log)"
    echo "$UNIRT_LAVAPIPE_SKIP (the lavapipe tests will skip)" >&2
fi
.venv/bin/python -m pytest -q "$@"
