"""Trust by measurement: a backend is routed to only after it was seen to run the model right.

Engines load models and then return wrong numbers, or kill the process, without warning. Before
a candidate other than the reference is opened in the user's process, the router asks
:func:`verify`: a cached verdict when there is one, else a probe (:mod:`unirt.evidence.probe`) that
opens the model on the candidate in a child process, runs seeded inputs at two sizes of each dynamic
dimension and compares with ONNX Runtime CPU. The verdict is cached, content-addressed: model
bytes and external data, backend, engine version, precision, options and input shapes. A new
engine version or one changed byte of the model re-verifies; a corrupt entry is rebuilt.

Only a verdict about the engine is cached: it ran right, it gave wrong numbers, it crashed, it
refused the model. What says nothing about the engine is never cached: a time-out (a busy machine),
a reference that cannot run the model, unirt's own harness failing (a child that could not start).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt import progress
from unirt.errors import UnirtError
from unirt.evidence.inputs import shape_sets
from unirt.evidence.probe import (
    CRASHED,
    ERROR,
    FAIL,
    HARNESS,
    NO_REFERENCE,
    PASS,
    ProbeResult,
    RunSet,
    open_only,
    probe,
)
from unirt.model.info import ModelInfo
from unirt.plugin.backend import VERIFY_MODES
from unirt.process import timeouts
from unirt.tensor import TensorInfo
from unirt.words import Word

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.operating import InputSets
    from unirt.plugin.registry import Registry
    from unirt.store.cache import ArtifactCache

logger = logging.getLogger("unirt")

MODES = VERIFY_MODES
#: The cache's name for verdicts (a pseudo-backend directory under the cache root).
CACHE_SECTION = "verify"
VERDICT_FILE = "verdict.json"
#: Bumped when what a verdict means changes: older verdicts then miss.
VERSION = 4
#: Seconds a verification probe may take before the candidate is rejected as hung
#: (:data:`unirt.process.timeouts.VERIFY`; ``UNIRT_VERIFY_TIMEOUT`` overrides it).
DEFAULT_TIMEOUT = timeouts.VERIFY.seconds


def verify_timeout() -> float:
    """The bound on one verification: ``UNIRT_VERIFY_TIMEOUT``, else :data:`DEFAULT_TIMEOUT`."""
    return timeouts.seconds(timeouts.VERIFY)

class VerifyStatus(Word):
    """What verification concluded about one candidate."""

    VERIFIED = "verified"  # ran right in a child: open it in the user's process
    REJECTED = "rejected"  # crashed, hung, or gave wrong numbers
    REFUSED = "refused"  # the engine raised opening the model (its own answer): not opened
    #: nothing could be compared (the reference cannot run the model, no inputs can be made) or
    #: unirt could not measure (``result.status`` is ``ProbeStatus.HARNESS``)
    UNVERIFIED = "unverified"


#: Signals that a crash is the engine's doing, not someone killing the child (OOM killer, user).
_ENGINE_SIGNALS = frozenset({"SIGSEGV", "SIGFPE", "SIGABRT", "SIGBUS", "SIGILL", "SIGTRAP"})


@dataclass(frozen=True)
class Verification:
    """A verdict on (model, backend, engine version, precision, options, shapes).

    ``cached``: taken from the cache, no child was started.
    """

    status: VerifyStatus
    result: ProbeResult
    cached: bool
    key: str

    @property
    def accepted(self) -> bool:
        """May the candidate be opened in the user's process (with ``verify="auto"``)?
        Verified, or unverified only for want of a reference after it ran safely in a child."""
        return self.status == VerifyStatus.VERIFIED or (
            self.status == VerifyStatus.UNVERIFIED and self.result.status == NO_REFERENCE)

    @property
    def about_engine(self) -> bool:
        """Whether the verdict says something about the engine (and so may be cached)."""
        r = self.result
        if self.status in (VerifyStatus.VERIFIED, VerifyStatus.REFUSED):
            return True
        if self.status != VerifyStatus.REJECTED:
            return False
        if r.status == CRASHED:
            return r.reason.startswith("crashed (exit code") or any(
                s in r.reason for s in _ENGINE_SIGNALS)
        return r.status in (FAIL, ERROR)

    @property
    def weak(self) -> str:
        """Why this verdict proves little (empty when nothing says so): see
        :attr:`ProbeResult.weak`."""
        return self.result.weak

    def describe(self) -> str:
        source = "cached verdict: " if self.cached else ""
        if self.status == VerifyStatus.VERIFIED:
            limited = "".join(f"; refuses {k} ({v})" for k, v in self.result.limited.items())
            return f"{source}verified, {self.result.summary()}{limited}{self.measured_on()}"
        if self.status in (VerifyStatus.REJECTED, VerifyStatus.REFUSED):
            return f"{source}{self.result.reason}"  # the route's outcome says the rest
        return f"{source}{self.status}: {self.result.reason}"

    def measured_on(self) -> str:
        """``; on your inputs (3 sets, 1a2b…)``, or ``; verified on generated inputs only:
        y saturated (…)`` when the comparison could not have seen a difference."""
        r = self.result
        if r.weak:
            return f"; verified on generated inputs only: {r.weak}"
        return f"; on {r.evidence}" if r.evidence else ""


def probe_shapes(inputs: Sequence[TensorInfo],
                 declared: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, tuple]]:
    """The shape sets a verification runs (:func:`unirt.evidence.inputs.shape_sets`, without
    labels)."""
    return [shapes for _, shapes in shape_sets(inputs, declared)]


def feed_sets(info: ModelInfo, shapes: Mapping[str, Sequence[int]] | None = None,
              ranges: Mapping[str, tuple[float, float]] | None = None,
              inputs: InputSets | None = None
              ) -> tuple[list[str], list[dict[str, tuple]], list[Any]]:
    """(labels, shape sets, input recipes) a verification runs: the same for ``load``,
    ``capabilities --probe`` and ``compare``, so their verdicts are one. Raises ``UnirtError``
    when no inputs can be generated (bf16, strings without a shape, sequences) or when a set is
    over the size limit (:func:`unirt.evidence.inputs.size_limit`).

    Recipes, not arrays: each child (the reference's, the backend's) builds the same seeded
    arrays itself (``recipe.build()``), so verifying a model never allocates its inputs in the
    caller's process. ``ranges`` (``load(input_ranges=)``) travel in every recipe, over what
    the graph says its inputs accept (:func:`unirt.evidence.hints.graph_hints`). For a model
    with a float input, one more set follows the shape sets: the
    base set with NaN/inf planted, judged for how NaN/inf come out (a note, never a rejection:
    see :mod:`unirt.evidence.probe`).

    ``inputs``: the user's own input sets (:mod:`unirt.evidence.operating`): exactly those arrays
    are run, at their shapes, and nothing is generated; without them, values and sizes follow
    what the graph accepts (:func:`unirt.evidence.hints.graph_hints`), under the caller's shapes
    and ranges."""
    from unirt.evidence.hints import graph_hints
    from unirt.evidence.inputs import FeedRecipe

    if inputs is not None:
        return inputs.labels(), inputs.shapes, list(inputs.sets)
    hints = graph_hints(info)
    labelled = shape_sets(info.inputs, shapes, sizes=hints.sizes())
    labels = [label for label, _ in labelled]
    sets = [s for _, s in labelled]
    specs = hints.under(ranges)
    recipes = [FeedRecipe.make(info.inputs, s, seed=i, ranges=specs) for i, s in enumerate(sets)]
    if recipes and recipes[0].has_float:
        labels.append("base")
        sets.append(sets[0])
        recipes.append(recipes[0].with_nonfinite())
    return labels, sets, recipes


def verdict_key(info: ModelInfo, backend: str, version: str | None, precision: str,
         options: Mapping[str, Any], shapes: list[dict[str, tuple]],
         tolerance: float | None,
         ranges: Mapping[str, tuple[float, float]] | None = None,
         inputs: str | None = None) -> str:
    """The verdict's cache key; value ranges are in it when set (a verdict on inputs in 0..3
    says nothing about inputs in 8000..16000), and leave the key as it was when not; so does
    ``inputs``, the digest of the user's input sets (a verdict on generated values is never
    found for the user's, nor one on one user's data for another's). Generated inputs follow
    the graph's hints, a function of the model: their version is in the key, not their
    content, so a lookup (every load) never analyses the graph."""
    from unirt.evidence.hints import VERSION as HINTS
    from unirt.evidence.values import specs_json
    from unirt.store.cache import artifact_key

    extra: dict[str, Any] = {"input_ranges": specs_json(ranges)} if ranges else {}
    if inputs:
        extra["inputs"] = inputs
    else:
        extra["input_hints"] = HINTS
    return artifact_key(CACHE_SECTION, info, versions={"engine": version, "verify": VERSION},
                        shapes=[{k: list(v) for k, v in s.items()} for s in shapes],
                        precision=precision,
                        options={"backend": backend, "options": dict(options),
                                 "tolerance": tolerance, **extra})


def _read(entry: Path, key: str) -> Verification:
    """A cached verdict. Raises (OSError, ValueError, KeyError, TypeError) when the entry is not
    one this version wrote: a status it does not know, a missing field. The cache has already
    checked the entry's MAC, so an edited or forged verdict never gets here; what does is a
    verdict no version of this code should trust either, and callers remove it."""
    doc = json.loads((entry / VERDICT_FILE).read_text())
    if not isinstance(doc, dict):
        raise TypeError("a verdict is a JSON object")
    status = VerifyStatus(doc["status"])
    result = ProbeResult.from_dict(doc["result"])
    if status == VerifyStatus.UNVERIFIED:
        raise ValueError("an unverified verdict is never cached")
    return Verification(status, result, True, key)


def cached_verdict(cache: ArtifactCache, key: str) -> Verification | None:
    """The verdict cached under ``key``, or None; one that cannot be read is removed (the next
    verification measures again)."""
    entry = cache.lookup(CACHE_SECTION, key)
    if entry is None:
        return None
    try:
        return _read(entry, key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("unreadable verification verdict %s (%s); removed", key, exc)
        cache.remove(CACHE_SECTION, key)
        return None


def lookup(info: ModelInfo, backend: str, version: str | None, precision: str = "exact",
           options: Mapping[str, Any] | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None,
           tolerance: float | None = None,
           ranges: Mapping[str, tuple[float, float]] | None = None,
           inputs: InputSets | None = None) -> Verification | None:
    """The cached verdict for these arguments, or None; never measures (``capabilities``)."""
    from unirt.store.cache import ArtifactCache

    try:
        sets = _shape_key(info, shapes, inputs)
    except UnirtError:
        return None
    return cached_verdict(ArtifactCache(),
                   verdict_key(info, backend, version, precision, options or {}, sets, tolerance,
                        ranges, inputs.digest if inputs is not None else None))


def _shape_key(info: ModelInfo, shapes: Mapping[str, Sequence[int]] | None,
               inputs: InputSets | None) -> list[dict[str, tuple]]:
    """The shape sets a verdict is keyed by: the user's sets' shapes, else the generated ones
    (raises ``UnirtError`` when none can be generated)."""
    if inputs is not None:
        return inputs.shapes
    return [s for _, s in shape_sets(info.inputs, shapes)]


def status_of(result: ProbeResult) -> VerifyStatus:
    """The verdict a probe's result amounts to."""
    if result.status == PASS:
        return VerifyStatus.VERIFIED
    if result.status in (NO_REFERENCE, HARNESS):
        return VerifyStatus.UNVERIFIED
    if result.status == ERROR and not result.opened:
        return VerifyStatus.REFUSED
    return VerifyStatus.REJECTED


def verify(info: ModelInfo, backend: str, version: str | None, precision: str = "exact",
           options: Mapping[str, Any] | None = None,
           shapes: Mapping[str, Sequence[int]] | None = None, mode: str = "auto",
           tolerance: float | None = None, timeout: float | None = None,
           registry: Registry | None = None, reference: list[RunSet] | None = None,
           runs: int = 1,
           ranges: Mapping[str, tuple[float, float]] | None = None,
           inputs: InputSets | None = None) -> Verification:
    """The verdict for running ``info`` on ``backend``: from the cache, or measured now.

    ``mode="always"`` measures even when a verdict is cached (and refreshes it). ``registry``:
    the plugins in use, rebuilt in the children. ``reference``: the reference's runs on
    :func:`feed_sets`, when already made for another backend. ``runs``: times each set is run
    (for a median time; the verdict does not depend on it). ``ranges``: value ranges of
    generated inputs (``load(input_ranges=)``), in every recipe and in the key. ``inputs``: the
    user's input sets (:mod:`unirt.evidence.operating`): judged on exactly those, keyed by their
    digest.
    """
    from unirt.evidence.traced import traced_shapes
    from unirt.store.cache import ArtifactCache

    if timeout is None:
        timeout = verify_timeout()
    no_inputs = ""
    try:
        sets = _shape_key(info, shapes, inputs)
    except UnirtError as exc:  # bf16, strings without shape, sequences: nothing to compare
        sets, no_inputs = [], f"no inputs can be generated ({exc})"
    key = verdict_key(info, backend, version, precision, options or {}, sets, tolerance, ranges,
               inputs.digest if inputs is not None else None)
    cache = ArtifactCache()
    if mode != "always":
        known = cached_verdict(cache, key)
        if known is not None:
            return known
    else:
        cache.remove(CACHE_SECTION, key)
    labels: list[str] = []
    feeds: list[Any] = []
    if not no_inputs:
        try:  # generated only now: a cached verdict costs no input generation
            labels, sets, feeds = feed_sets(info, shapes, ranges, inputs)
        except UnirtError as exc:
            no_inputs = f"no inputs can be generated ({exc})"
    with progress.step(progress.Step.VERIFY, backend, info.name) as running:
        if no_inputs:  # still opened in a child first: an engine can crash reading the model
            result = open_only(info, backend, precision, options, timeout, registry,
                               no_inputs)
        else:
            result = probe(info, backend, feeds, precision, options, atol=tolerance,
                           timeout=timeout, labels=labels, registry=registry,
                           reference=reference, runs=runs)
            traced = traced_shapes(info, registry) if result.status == NO_REFERENCE and \
                not shapes and reference is None and inputs is None else {}
            if traced:
                # The reference refuses every generated size, but the model says where it
                # runs (a "dynamic" export whose Reshape bakes the traced size): compare there,
                # rather than open an engine on no evidence.
                labels, sets, feeds = feed_sets(info, traced, ranges)
                result = probe(info, backend, feeds, precision, options, atol=tolerance,
                               timeout=timeout, labels=labels, registry=registry, runs=runs)
                at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in traced.items())
                result.limited.setdefault("generated sizes", "the reference cannot run them; "
                                          f"compared at the traced size {at}")
            _note_evidence(info, result, sets, inputs, shapes)
        running.detail = str(result.status)
    verification = Verification(status_of(result), result, False, key)
    if verification.about_engine:
        store(verification, info, backend, version, precision)
    return verification


def _note_evidence(info: ModelInfo, result: ProbeResult, sets: list[dict[str, tuple]],
                   inputs: InputSets | None,
                   shapes: Mapping[str, Sequence[int]] | None) -> None:
    """Say on ``result`` what its numbers were compared on, whether that could show a
    difference, and, for a verdict against the engine at shapes unirt guessed, how to judge it
    at the user's: a failure at a generated 1x3x32x32 says nothing about 2x3x48x192."""
    from unirt.evidence.operating import is_quantized, shape_text

    if inputs is not None:
        result.evidence = inputs.short()
        result.weak = ""  # the user's own data is the operating point
        return
    from unirt.evidence.hints import graph_hints

    at = shape_text(sets[0]) if sets else ""
    # The shapes that ran and were compared: a set the engine refused is no evidence. Labels
    # on the result follow the sets, in order.
    ran = [shape_text(sets[i]) for i, label in enumerate(result.shapes[:len(sets)])
           if label not in result.limited]
    measured = ", ".join(dict.fromkeys(ran)) if result.status == PASS and ran else at
    told = "; ".join(graph_hints(info).notes)  # the values and sizes the graph chose
    result.evidence = "generated inputs" + (
        f" ({'; '.join(filter(None, (measured, told)))})" if measured or told else "")
    weak = [result.weak] if result.weak else []
    if is_quantized(info):
        weak.insert(0, "a quantized model, whose engines can agree on generated values and "
                       "differ on real data")
    result.weak = "; ".join(weak) if result.status == PASS else ""
    guessed = info.has_dynamic_inputs and not shapes
    if result.status not in (PASS, NO_REFERENCE, HARNESS) and result.opened and guessed:
        result.reason += (f" (judged on generated inputs at {at}: give input_shapes= or "
                          "inputs= with what your application sends to judge it there)")


def store(v: Verification, info: ModelInfo, backend: str, version: str | None,
          precision: str) -> None:
    """Write a verdict into the cache (atomically, under the entry's lock, signed with the
    cache's secret). A cache that cannot be written stores nothing: the verdict holds for this
    load only, and the private copy the cache made is dropped at once."""
    from unirt.store.cache import ArtifactCache

    def build(tmp: Path) -> dict[str, Any]:
        (tmp / VERDICT_FILE).write_text(json.dumps(
            {"status": v.status.value, "result": v.result.as_dict(), "model": info.name,
             "backend": backend, "engine": version, "precision": precision}, indent=1))
        return {"model": info.name, "backend": backend, "status": v.status.value}

    cache = ArtifactCache()
    entry, _ = cache.get_or_build(CACHE_SECTION, v.key, build,
                                  meta={"kind": "verification", "engine": version})
    cache.release(entry)


def verify_reference(info: ModelInfo, backend: str, version: str | None,
                     precision: str = "exact", options: Mapping[str, Any] | None = None,
                     shapes: Mapping[str, Sequence[int]] | None = None,
                     timeout: float | None = None,
                     registry: Registry | None = None,
                     ranges: Mapping[str, tuple[float, float]] | None = None,
                     inputs: InputSets | None = None) -> Verification:
    """The reference's own trial: open ``info`` on it in a child and run the verification's
    input sets, nothing to compare with. VERIFIED when every set ran; REJECTED when it crashed
    or hung; REFUSED when it raised opening the model. Cached like :func:`verify` (the same
    key: a comparison of the reference with itself means the same). Used by the crash guard
    (:mod:`unirt.runtime.crashguard`) before the reference is opened in the user's process."""
    from unirt.evidence.probe import TIMEOUT, TIMEOUT_RETRIES, judge, reference_outputs
    from unirt.store.cache import ArtifactCache

    if timeout is None:
        timeout = verify_timeout()
    try:
        sets = _shape_key(info, shapes, inputs)
    except UnirtError:
        sets = []
    key = verdict_key(info, backend, version, precision, options or {}, sets, None, ranges,
               inputs.digest if inputs is not None else None)
    known = cached_verdict(ArtifactCache(), key)
    if known is not None:
        return known
    with progress.step(progress.Step.REFERENCE, backend, info.name) as running:
        try:
            labels, _, feeds = feed_sets(info, shapes, ranges, inputs)
        except UnirtError as exc:  # still opened in a child: it can crash reading the model
            result = open_only(info, backend, "exact", options, timeout, registry,
                               f"no inputs can be generated ({exc})")
        else:
            for _ in range(TIMEOUT_RETRIES + 1):  # a time-out is as often a busy machine
                opened, runs = reference_outputs(info.source(), feeds, timeout=timeout,
                                                 labels=labels, registry=registry)
                result = judge(backend, opened, runs, runs, "exact", registry=registry)
                if result.status != TIMEOUT:
                    break
        running.detail = str(result.status)
    verification = Verification(status_of(result), result, False, key)
    if verification.about_engine:
        store(verification, info, backend, version, precision)
    return verification
