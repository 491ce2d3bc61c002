"""How long unirt waits for a child process, in one place.

Every wait on a child is bounded (an engine may hang on a model as easily as crash on it), and
each kind of work has its own bound, because the work differs by orders of magnitude: asking an
engine whether it supports a model takes milliseconds, verifying it opens and runs every input
set, a benchmark times hundreds of runs. The bounds are here so that they can be read, compared
and overridden together; a caller that knows better passes its own ``timeout=``.

Two can be set for a whole process by environment variable, because they sit on paths a user
does not call directly (the verification inside ``load``, the engine's own answer inside
``capabilities``): ``UNIRT_VERIFY_TIMEOUT`` and ``UNIRT_QUERY_TIMEOUT``, in seconds.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from unirt.errors import UnirtError


class Wait(NamedTuple):
    """One kind of work done in a child: its bound in seconds, and the environment variable
    that overrides it (None: only a caller's ``timeout=`` does)."""

    seconds: float
    env: str | None
    what: str


#: Verifying one backend before routing to it: open the model, run every input set.
VERIFY = Wait(120.0, "UNIRT_VERIFY_TIMEOUT", "verifying a backend on a model")
#: A probe of ``compare``, ``capabilities --probe`` and ``layerwise``: as verifying, on
#: commands the user waits for and may run on big models.
PROBE = Wait(300.0, None, "probing a backend on a model")
#: An engine's own static answer (``Backend.query``: OpenVINO's ``query_model`` is exponential
#: in If nesting, so a report must not wait for it long).
QUERY = Wait(30.0, "UNIRT_QUERY_TIMEOUT", "an engine's own answer on a model")
#: One ``bench`` child: compile, warm up and every timed run.
BENCH = Wait(600.0, None, "benchmarking a backend")
#: One conformance case of ``probe-ops`` (a single-node model).
OP_CASE = Wait(30.0, None, "one op-support case")
#: One candidate of ``reduce`` (a smaller model run on the failing engine).
REDUCE_STEP = Wait(60.0, None, "one reduction step")
#: A converter or graph tool run in a child (onnxslim, a TensorRT build step).
TOOL = Wait(120.0, None, "a tool run in a child")
#: A fresh child's start: the interpreter, unirt's import and the first message.
HANDSHAKE = Wait(60.0, None, "a child's start")


def seconds(wait: Wait) -> float:
    """``wait``'s bound: its environment variable when set (a positive number of seconds, else
    a :class:`~unirt.errors.UnirtError` naming it), otherwise its default."""
    raw = os.environ.get(wait.env, "").strip() if wait.env else ""
    if not raw:
        return wait.seconds
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise UnirtError(f"{wait.env}={raw!r}: write a positive number of seconds")
    return value
