"""Trust by measurement: a backend is routed to only after it was seen to run the model right.

Engines load models and then return wrong numbers, or kill the process, without warning. Before
a candidate other than the reference is opened in the user's process, the router asks
:func:`verify`: a cached verdict when there is one, else a probe (:mod:`unirt.probe`) that opens
the model on the candidate in a child process, runs seeded inputs at two sizes of each dynamic
dimension and compares with ONNX Runtime CPU. The verdict is cached, content-addressed: model
bytes and external data, backend, engine version, precision, options and input shapes. A new
engine version or one changed byte of the model re-verifies; a corrupt entry is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UnirtError
from .model import ModelInfo
from .probe import ERROR, NO_REFERENCE, PASS, ProbeResult, probe, shape_sets
from .tensor import TensorInfo

logger = logging.getLogger("unirt")

MODES = ("auto", "always", "never")
#: The cache's name for verdicts (a pseudo-backend directory under the cache root).
CACHE_SECTION = "verify"
VERDICT_FILE = "verdict.json"
#: Bumped when what a verdict means changes: older verdicts then miss.
VERSION = 1
#: Seconds a verification probe may take before the candidate is rejected as hung;
#: ``UNIRT_VERIFY_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT = 120.0
TIMEOUT_ENV = "UNIRT_VERIFY_TIMEOUT"

@dataclass(frozen=True)
class Verification:
    """A verdict on (model, backend, engine version, precision, options, shapes).

    ``status``: ``verified``; ``rejected`` (it crashed, hung, or gave wrong numbers);
    ``refused`` (it raised a clear error opening the model: harmless, so the in-process open is
    left to raise the same error with its own type); ``unverified`` (nothing could be compared:
    the reference cannot run the model, or no inputs can be generated for it).
    ``cached``: taken from the cache, no child was started.
    """

    status: str
    result: ProbeResult
    cached: bool
    key: str

    @property
    def accepted(self) -> bool:
        return self.status != "rejected"

    def describe(self) -> str:
        source = "cached verdict: " if self.cached else ""
        if self.status == "verified":
            limited = "".join(f"; refuses {k} ({v})" for k, v in self.result.limited.items())
            return f"{source}verified, {self.result.summary()}{limited}"
        if self.status == "rejected":  # the route's outcome already says "rejected"
            return f"{source}{self.result.reason}"
        return f"{source}{self.status}: {self.result.reason}"


def probe_shapes(inputs: Sequence[TensorInfo],
                 declared: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, tuple]]:
    """The shape sets a verification runs (:func:`unirt.probe.shape_sets`, without labels)."""
    return [shapes for _, shapes in shape_sets(inputs, declared)]


def _key(info: ModelInfo, backend: str, version: str | None, precision: str,
         options: Mapping[str, Any], shapes: list[dict[str, tuple]],
         tolerance: float | None) -> str:
    from .cache import artifact_key

    return artifact_key(CACHE_SECTION, info, versions={"engine": version, "verify": VERSION},
                        shapes=[{k: list(v) for k, v in s.items()} for s in shapes],
                        precision=precision,
                        options={"backend": backend, "options": dict(options),
                                 "tolerance": tolerance})


def verify(info: ModelInfo, backend: str, version: str | None, precision: str = "exact",
           options: Mapping[str, Any] | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None, mode: str = "auto",
           tolerance: float | None = None, timeout: float | None = None) -> Verification:
    """The verdict for running ``info`` on ``backend``: from the cache, or measured now.

    ``mode="always"`` measures even when a verdict is cached (and refreshes it).
    """
    from .cache import ArtifactCache
    from .inputs import make_inputs

    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)
    try:
        labelled = shape_sets(info.inputs, shapes)
        sets = [s for _, s in labelled]
    except UnirtError as exc:
        result = ProbeResult(backend, NO_REFERENCE, f"no inputs can be generated ({exc})")
        return Verification("unverified", result, False, "")
    key = _key(info, backend, version, precision, options or {}, sets, tolerance)
    cache = ArtifactCache()
    if mode != "always":
        entry = cache.lookup(CACHE_SECTION, key)
        if entry is not None:
            try:
                doc = json.loads((entry / VERDICT_FILE).read_text())
                return Verification(doc["status"], ProbeResult.from_dict(doc["result"]), True, key)
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("unreadable verification verdict %s; measuring again", key)
    else:
        cache.remove(CACHE_SECTION, key)
    try:
        feed_sets = [make_inputs(info.inputs, s, seed=i) for i, s in enumerate(sets)]
    except UnirtError as exc:  # bf16, strings without shape, sequences: nothing to compare
        result = ProbeResult(backend, NO_REFERENCE, f"no inputs can be generated ({exc})")
        return Verification("unverified", result, False, key)
    start = time.perf_counter()
    result = probe(info, backend, feed_sets, precision, options, atol=tolerance,
                   timeout=timeout, labels=[label for label, _ in labelled])
    logger.info("verified %s on %s in %.2f s: %s", info.name, backend,
                time.perf_counter() - start, result.status)
    if result.status == PASS:
        status = "verified"
    elif result.status == NO_REFERENCE:
        status = "unverified"
    elif result.status == ERROR and not result.opened:
        status = "refused"
    else:
        status = "rejected"

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / VERDICT_FILE).write_text(json.dumps(
            {"status": status, "result": result.as_dict(), "model": info.name,
             "backend": backend, "engine": version, "precision": precision}, indent=1))
        return {"model": info.name, "backend": backend, "status": status}

    cache.get_or_build(CACHE_SECTION, key, build,
                       meta={"kind": "verification", "engine": version})
    return Verification(status, result, False, key)
