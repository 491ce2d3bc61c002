"""The child-process operations every measurement uses: open a model the way users get it, build
the inputs, run them, report memory.

A :class:`~unirt.process.isolation.Worker` runs these in a fresh interpreter (they are pickled by
reference, so they live at module level here), for the probe and the verification, the timings,
``bench``, ``layerwise``, the rewrite fitting and live verification alike: one harness, driven
the same way by each. State lives in the dict :func:`new_state` makes; :func:`open_session`
keeps the session in it, :func:`run_feeds` runs it.

The session is opened through :func:`unirt.load` with verification, checks and rewrites off:
the measurement is of what users get (the same ``Session``, options and output conversion), and
it happens in another process, so this one call reaches up into the runtime.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.evidence.inputs import FeedRecipe

if TYPE_CHECKING:  # pragma: no cover
    from unirt.plugin.registry import RegistrySpec

#: What a set of inputs is, on its way to a child: arrays, or a recipe the child builds.
Feeds = Mapping[str, np.ndarray] | FeedRecipe


def new_state() -> dict[str, Any]:
    """A child's state between calls: the open session, the last recipe's arrays."""
    return {}


def open_session(state: dict[str, Any], source: str | bytes, backend: str, precision: str,
                options: dict[str, Any], threads: int | None = None,
                registry: RegistrySpec | None = None) -> dict[str, Any]:
    import time

    import unirt
    from unirt.plugin.registry import Registry, get_registry

    # The parent's plugins, rebuilt here: a backend registered in the caller's process must be
    # the one measured (None: this interpreter's default registry, built the same way).
    reg = None if registry is None else Registry.from_spec(registry)
    # Importing the engine (OpenVINO: ~0.6 s) is timed apart from loading the model, so a load
    # time does not read as if compiling were that slow.
    start = time.perf_counter()
    (reg or get_registry()).backend(backend).available()
    import_s = time.perf_counter() - start
    start = time.perf_counter()
    # check=False, verify="never": a probe *is* the measurement; the capability table and a
    # verification child must not decide what it measures.
    sess = unirt.load(source, backend=backend, precision=precision, threads=threads,
                      options={backend: options} if options else None, verify="never",
                      check=False, registry=reg, rewrite=False, verify_live=False)
    state["sess"] = sess
    return {"load_s": time.perf_counter() - start, "import_s": import_s,
            "precision": str(sess.precision)}


def feeds_for(state: dict[str, Any], feeds: Feeds) -> Mapping[str, np.ndarray]:
    """The arrays to run: ``feeds`` itself, or the recipe built here. The last recipe's arrays
    are kept, so a timing loop that sends the same recipe each round builds it once (and only
    one set is held at a time)."""
    if not isinstance(feeds, FeedRecipe):
        return feeds
    kept = state.get("recipe")
    if kept is not None and kept[0] == feeds:
        return kept[1]
    state.pop("recipe", None)  # the old arrays go before the new ones are made
    arrays = feeds.build()
    state["recipe"] = (feeds, arrays)
    return arrays


def run_feeds(state: dict[str, Any], feeds: Feeds, runs: int = 1,
               outputs: list[str] | None = None, send_outputs: bool = True,
               pause_s: float = 0.0, spill_to: str | None = None) -> dict[str, Any]:
    """Run ``runs`` times; ``pause_s`` sleeps before each timed call, as an application calling
    at a frame rate does (back-to-back calls favour engines whose threads spin between calls,
    and that is not how a robot runs a model). ``feeds``: arrays, or a
    :class:`~unirt.evidence.inputs.FeedRecipe` built here (outside the timed part). ``spill_to``: a
    path prefix under which big outputs are written (see :func:`spill`)."""
    import time

    feeds = feeds_for(state, feeds)
    run = state["sess"].run
    times, result = [], None
    for _ in range(max(1, runs)):
        if pause_s:
            time.sleep(pause_s)
        start = time.perf_counter()
        result = run(feeds, outputs=outputs)
        times.append(time.perf_counter() - start)
    if result is not None and spill_to is not None:
        result = {name: spill(value, f"{spill_to}-{i}.npy")
                  for i, (name, value) in enumerate(result.items())}
    return {"outputs": result if send_outputs else None, "times": times}


#: Outputs at least this big (bytes) are written to a file by the child rather than sent back.
SPILL_BYTES = 1 << 20


@dataclass(frozen=True)
class Spilled:
    """An output the child wrote to ``path`` (``.npy``) instead of sending it."""

    path: str


def spill(value: Any, path: str) -> Any:
    """``value`` written to ``path`` (a :class:`Spilled` in its place), or as it is when small,
    not a plain array, or when the file cannot be written (a full disk must not change a
    verdict: the output then travels as before)."""
    if not isinstance(value, np.ndarray) or value.dtype.hasobject or value.nbytes < SPILL_BYTES:
        return value
    try:
        with open(path, "xb") as f:
            np.save(f, value, allow_pickle=False)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return value
    return Spilled(path)


def peak_rss(_state: dict[str, Any]) -> int:
    """Peak resident memory of the child, in bytes."""
    # VmHWM is this process image's own peak; ru_maxrss survives exec on Linux and would report
    # the parent's peak when the parent is the larger one.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import platform
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return int(rss if platform.system() == "Darwin" else rss * 1024)
