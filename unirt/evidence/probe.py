"""The probe: open a model on a backend in a child process, run it, judge it against the reference.

One implementation behind ``unirt compare``, the verification that happens before routing to a
backend, and ``unirt capabilities --probe``. The backend runs in a child
(:mod:`unirt.process.isolation`) because engines segfault, abort or hang on some models; a crash
is a result (with its signal), never the end of the caller's process.

The reference is ONNX Runtime on the CPU in ``exact`` precision, run in a child as well and once
per set of inputs, so that its outputs can be shared by every backend probed on them.

Generated inputs travel as a :class:`~unirt.evidence.inputs.FeedRecipe` (input infos, shapes, seed)
and each child builds the arrays itself, identical in every child: the caller's process never
allocates probe inputs. User-given feeds (``compare --input``) travel as arrays.

A set with NaN/inf planted (the recipe's ``nonfinite``) is judged apart: NaN is equal to NaN,
and a backend that returns finite numbers where the reference has NaN/inf "hides" them. That is
noted on the result (``ProbeResult.nonfinite``), never a rejection: most deployments never feed
NaN, and an engine that computes finite inputs right is right for them. A crash or a hang on
that set still rejects (the user's process would die or hang the day a NaN comes in).

Big outputs do not travel back to the caller's process with each run: the child writes each
array of :data:`SPILL_BYTES` or more to a file, and the caller reads one back when it compares
it (:class:`KeptOutputs`), so that judging a backend holds one output of each side at a time,
not every set of both (a 192 MiB output would otherwise take ~1 GiB of the caller's memory). A file,
not the child's memory: the outputs of the sets that ran outlive a child that crashes on a
later set, and are judged as before.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import statistics
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.errors import HarnessError
from unirt.evidence.agreement import (
    OutputDiff,
    OutputSpread,
    Tolerance,
    diff,
    for_output,
    nonfinite_counts,
    tolerance,
    within,
)
from unirt.evidence.child_ops import Feeds, Spilled, new_state, open_session, run_feeds
from unirt.evidence.inputs import FeedRecipe
from unirt.model.info import ModelInfo
from unirt.process import timeouts
from unirt.process.isolation import CRASHED as ISO_CRASHED
from unirt.process.isolation import ERROR as ISO_ERROR
from unirt.process.isolation import HARNESS as ISO_HARNESS
from unirt.process.isolation import TIMEOUT as ISO_TIMEOUT
from unirt.process.isolation import Outcome, Worker
from unirt.words import Word

if TYPE_CHECKING:  # pragma: no cover
    from unirt.plugin.registry import Registry, RegistrySpec


logger = logging.getLogger("unirt")


def reference_name(registry: Registry | None = None) -> str:
    """The backend every comparison is made against (``Backend.is_reference``)."""
    from unirt.errors import UnirtError
    from unirt.plugin.registry import get_registry

    name = (registry or get_registry()).reference
    if name is None:
        raise UnirtError("no reference backend is registered (a backend with is_reference, "
                         "normally ONNX Runtime on the CPU): is its plugin installed and enabled?")
    return name

DEFAULT_TIMEOUT = timeouts.PROBE.seconds



class ProbeStatus(Word):
    """What a probe concluded about a backend on a model (:attr:`ProbeResult.status`). The
    last four keep the words of :class:`~unirt.process.isolation.OutcomeStatus` they come from."""

    PASS = "pass"
    FAIL = "fail"  # numbers out of tolerance
    NO_REFERENCE = "no reference"  # the reference could not run the model: nothing compared
    ERROR = ISO_ERROR.value  # the backend raised
    CRASHED = ISO_CRASHED.value
    TIMEOUT = ISO_TIMEOUT.value
    #: unirt itself could not measure (a child that could not start, a plugin registry that
    #: could not be rebuilt in it): says nothing about the engine
    HARNESS = ISO_HARNESS.value


# The members under their short names, as callers import them.
PASS, FAIL, NO_REFERENCE = ProbeStatus.PASS, ProbeStatus.FAIL, ProbeStatus.NO_REFERENCE
ERROR, CRASHED, TIMEOUT = ProbeStatus.ERROR, ProbeStatus.CRASHED, ProbeStatus.TIMEOUT
HARNESS = ProbeStatus.HARNESS

#: How :attr:`ProbeResult.nonfinite` starts when the backend returns finite numbers where the
#: reference has NaN/inf.
HIDES = "hides NaN/inf"

#: Errors raised in a child that are unirt's own failure to measure, not the engine's answer.
HARNESS_ERRORS = frozenset({"HarnessError", "IsolationError", "BackendNotFoundError",
                             "PluginError", "ModuleNotFoundError"})


# -- the parent's side ---------------------------------------------------------------------------
def shape_label(feeds: Mapping[str, Any] | FeedRecipe) -> str:
    """``x=1x8,y=1`` — how a set of inputs is named in reports and reasons (a recipe: the
    shapes it builds, ``with NaN/inf`` when it plants them)."""
    if isinstance(feeds, FeedRecipe):
        text = ",".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in feeds.shapes)
        return f"{text} with NaN/inf" if feeds.nonfinite else text
    return ",".join(f"{k}={'x'.join(map(str, np.shape(v))) or 'scalar'}" for k, v in feeds.items())


def _spill_folder() -> str | None:
    """A new private folder for children to write big outputs to, or None when none can be
    made (outputs then travel by pipe, as small ones do)."""
    try:
        return tempfile.mkdtemp(prefix="unirt-outputs-")
    except OSError as exc:
        logger.debug("no folder for big outputs (%s): they travel by pipe", exc)
        return None


class KeptOutputs(Mapping[str, Any]):
    """One set's outputs as a child returned them, the big ones read back from their file only
    when looked up, and not kept: whoever compares them output by output holds one at a time.

    Each file is opened and unlinked at once: it goes when this does, or when the process dies
    however it dies (nothing is left on disk by a killed caller)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()  # one file offset per output
        for name, value in values.items():
            if isinstance(value, Spilled):
                try:
                    value = open(value.path, "rb")  # noqa: SIM115 - held, closed with this
                    os.unlink(value.name)
                except OSError as exc:
                    value = exc
            self._values[name] = value
        weakref.finalize(self, _close_files, list(self._values.values()))

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        try:
            if isinstance(value, OSError):
                raise value
            if isinstance(value, io.BufferedReader):
                with self._lock:
                    value.seek(0)
                    return np.load(value, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise HarnessError(f"unirt could not read back output {name!r} from the file its "
                               f"child wrote: {exc}") from exc
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _close_files(values: list[Any]) -> None:
    for value in values:
        if isinstance(value, io.BufferedReader):
            value.close()


@dataclass
class RunSet:
    """Outputs of one backend on one set of inputs (or why there are none)."""

    label: str
    outcome: Outcome
    #: A plain dict, or :class:`KeptOutputs` (big outputs read from files when looked up).
    outputs: Mapping[str, Any] | None = None
    times: list[float] = field(default_factory=list)
    #: The inputs had NaN/inf planted: judged for how NaN/inf come out, not for right numbers.
    nonfinite: bool = False
    #: Set on the run of an earlier set repeated after a refused call: that set's index.
    again_of: int | None = None
    #: False when the backend did not even open the model (so nothing ran on any set).
    opened: bool = True


def run_sets(worker: Worker, source: str | bytes, backend: str,
             feed_sets: Sequence[Feeds], precision: str = "exact",
             options: Mapping[str, Any] | None = None, runs: int = 1,
             outputs: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
             threads: int | None = None, labels: Sequence[str] | None = None,
             registry: RegistrySpec | None = None, keep: bool = False
             ) -> tuple[Outcome, list[RunSet]]:
    """Open ``source`` on ``backend`` in ``worker`` and run each feed set ``runs`` times.

    A feed set is arrays or a :class:`~unirt.evidence.inputs.FeedRecipe` (built in the child).
    Returns the open's Outcome and one RunSet per feed set tried; after a crash or timeout the
    child and its session are gone, so the remaining sets are not tried. ``keep``: big outputs stay
    in files, read back when looked up (:class:`KeptOutputs`), rather than all held here.
    """
    opened = worker.call(open_session, source, backend, precision, dict(options or {}), threads,
                         registry, timeout=timeout)
    if not opened.ok:
        return opened, []
    folder = _spill_folder() if keep else None
    try:
        return opened, _run_each(worker, feed_sets, runs, outputs, timeout, labels, folder)
    finally:  # what a child wrote and no KeptOutputs took (a reply that never came)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _run_each(worker: Worker, feed_sets: Sequence[Feeds], runs: int, outputs: list[str] | None,
              timeout: float, labels: Sequence[str] | None, folder: str | None) -> list[RunSet]:
    """:func:`run_sets` once the model is open; ``folder``: where big outputs are written."""
    sets: list[RunSet] = []

    def run(feeds: Feeds, times: int) -> Outcome:
        spill_to = None if folder is None else os.path.join(folder, str(len(sets)))
        return worker.call(run_feeds, _payload(feeds), times, outputs, True, 0.0, spill_to,
                           timeout=timeout)

    def kept(out: Outcome) -> Mapping[str, Any] | None:
        values = out.value["outputs"] if out.ok else None
        return values if folder is None or values is None else KeptOutputs(values)

    for i, feeds in enumerate(feed_sets):
        label = set_label(labels[i] if labels else None, feeds)
        planted = isinstance(feeds, FeedRecipe) and feeds.nonfinite
        out = run(feeds, runs)
        if out.ok:
            sets.append(RunSet(label, out, kept(out), out.value["times"], planted))
        else:
            sets.append(RunSet(label, out, nonfinite=planted))
            if out.status in (CRASHED, TIMEOUT, HARNESS):
                return sets
    ran = next((i for i, s in enumerate(sets) if s.outputs is not None and not s.nonfinite), None)
    if ran is not None and any(s.outputs is None for s in sets[ran + 1:]):
        # An engine may be left broken by a call it refused (OpenVINO returned NaN, or refused
        # good shapes, after one): the user's session lives on after such a call, so the first
        # set that ran is run once more on the same session and must still be right. (A set
        # refused from the start says nothing about that: it is a shape limit.)
        label = f"{sets[ran].label} again, after a refused call"
        out = run(feed_sets[ran], 1)
        sets.append(RunSet(label, out, kept(out), out.value["times"] if out.ok else [],
                           again_of=ran))
    return sets


def _payload(feeds: Feeds) -> Feeds:
    """What goes to the child: a recipe as it is, arrays as a plain dict."""
    return feeds if isinstance(feeds, FeedRecipe) else dict(feeds)


def set_label(name: str | None, feeds: Feeds) -> str:
    """``x=1x8`` for the base set, ``T=64 (x=1x64)`` for a set named after a dynamic dim."""
    shapes = shape_label(feeds)
    return shapes if not name or name == "base" else f"{name} ({shapes})"


def reference_outputs(source: str | bytes, feed_sets: Sequence[Feeds],
                      outputs: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT,
                      labels: Sequence[str] | None = None, registry: Registry | None = None
                      ) -> tuple[Outcome, list[RunSet]]:
    """The reference's outputs for each feed set (ONNX Runtime CPU, exact, in a child); big
    ones are kept in files and read back when looked up (:class:`KeptOutputs`).

    When the reference cannot open the model, each set is returned without outputs, carrying
    that outcome, so that a backend can still be run (for its safety) and judged "no reference".
    """
    try:
        spec = _spec(registry)
    except HarnessError as exc:
        opened = Outcome(ISO_HARNESS, error=str(exc), error_type="HarnessError")
        return opened, [RunSet(set_label(labels[i] if labels else None, f), opened,
                               nonfinite=_planted(f), opened=False)
                        for i, f in enumerate(feed_sets)]
    with Worker(new_state) as w:
        opened, sets = run_sets(w, source, reference_name(registry), feed_sets, "exact",
                                outputs=outputs, timeout=timeout, labels=labels,
                                registry=spec, keep=True)
    if not opened.ok:
        sets = [RunSet(set_label(labels[i] if labels else None, f), opened,
                       nonfinite=_planted(f), opened=False) for i, f in enumerate(feed_sets)]
    return opened, sets


def _planted(feeds: Feeds) -> bool:
    return isinstance(feeds, FeedRecipe) and feeds.nonfinite


def _spec(registry: Registry | None) -> RegistrySpec | None:
    return None if registry is None else registry.spec()


@dataclass
class ProbeResult:
    """A backend judged on a model: ``status`` is a :class:`ProbeStatus` (the reason says more:
    the signal of a crash, the wrong numbers of a fail).

    ``outputs`` holds each output's differences on the first set of inputs where it was worst;
    ``shapes`` what was run; ``limited`` the sets of inputs the backend refused without harm
    (an error, not a crash: a shape limitation the router can fall back from at run time).
    ``nonfinite``: how the backend differs from the reference on inputs with NaN/inf planted
    (``"hides NaN/inf: output y finite where the reference has NaN (3 of 3 values)"``), empty
    when it does not or when no such set was run. A note, never a rejection (see the module's
    docstring); :meth:`summary` carries it.
    """

    backend: str
    status: ProbeStatus
    reason: str = ""
    precision: str | None = None
    shapes: list[str] = field(default_factory=list)
    outputs: list[OutputDiff] = field(default_factory=list)
    tolerances: dict[str, tuple[float, float]] = field(default_factory=dict)
    limited: dict[str, str] = field(default_factory=dict)
    load_s: float | None = None
    run_s: float | None = None
    #: False when the backend raised while opening the model (nothing ran).
    opened: bool = True
    nonfinite: str = ""
    #: With ``no reference``: the reference opened the model and failed only on the inputs
    #: run (sizes or values the model does not take), so it is no reason to trust the candidate
    #: over it.
    reference_opened: bool = False
    #: What the numbers were compared on: ``generated inputs (x=1x3x32x32)`` or
    #: ``your inputs (3 sets, 1a2b3c4d5e6f)`` (set by :func:`unirt.evidence.verify.verify`).
    evidence: str = ""
    #: Why a comparison that passed proves little (outputs saturated or constant on the inputs
    #: it ran, a quantized model judged on generated values); empty when nothing says so.
    weak: str = ""

    def __post_init__(self) -> None:
        self.status = ProbeStatus(self.status)  # the plain word (a cached entry) is accepted

    @property
    def hides_nonfinite(self) -> bool:
        """Whether the backend returned finite numbers where the reference has NaN/inf."""
        return self.nonfinite.startswith(HIDES)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def max_abs(self) -> dict[str, float]:
        return {o.name: o.max_abs for o in self.outputs}

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "status": self.status, "reason": self.reason,
            "precision": self.precision, "shapes": self.shapes, "limited": self.limited,
            "load_s": self.load_s, "run_s": self.run_s, "opened": self.opened,
            "nonfinite": self.nonfinite, "evidence": self.evidence, "weak": self.weak,
            "reference_opened": self.reference_opened,
            "outputs": [o.as_dict() | {"atol": self.tolerances.get(o.name, (None, None))[0],
                                       "rtol": self.tolerances.get(o.name, (None, None))[1]}
                        for o in self.outputs],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeResult:
        outs = [OutputDiff(**{k: v for k, v in o.items() if k not in ("atol", "rtol")})
                for o in d.get("outputs", [])]
        tols = {o["name"]: (o.get("atol"), o.get("rtol")) for o in d.get("outputs", [])}
        return cls(d["backend"], d["status"], d.get("reason", ""), d.get("precision"),
                   list(d.get("shapes", [])), outs, tols, dict(d.get("limited", {})),
                   d.get("load_s"), d.get("run_s"), bool(d.get("opened", True)),
                   str(d.get("nonfinite") or ""), bool(d.get("reference_opened", False)),
                   str(d.get("evidence") or ""), str(d.get("weak") or ""))

    def summary(self) -> str:
        """One line: ``max abs 1.6e-02 on logits (bf16)`` or the reason it failed, followed by
        the NaN/inf note when there is one."""
        note = f"; {self.nonfinite}" if self.nonfinite else ""
        if self.status != PASS:
            return (self.reason or self.status) + note
        if not self.outputs:
            return "no outputs compared" + note
        worst = max(self.outputs, key=lambda o: o.max_abs)
        return f"max abs {worst.max_abs:.2g} on {worst.name} ({self.precision}){note}"


#: How many times a backend that timed out is run again before the timeout is its verdict.
TIMEOUT_RETRIES = 1


def probe(info: ModelInfo, backend: str, feed_sets: Sequence[Feeds],
          precision: str = "exact", options: Mapping[str, Any] | None = None,
          atol: Tolerance = None, rtol: Tolerance = None,
          timeout: float = DEFAULT_TIMEOUT, reference: list[RunSet] | None = None,
          runs: int = 1, labels: Sequence[str] | None = None,
          registry: Registry | None = None) -> ProbeResult:
    """Judge ``backend`` on ``info`` at each feed set against the reference.

    ``reference``: the reference's RunSets for the same feed sets, when already computed (one
    reference run serves every backend compared on the same inputs). When the reference cannot
    run the model, the backend is still run (a crash or a refusal is still its answer) and
    judged ``no reference``; when unirt's own harness fails, the result is ``harness``.

    A backend that times out is run once more, in a fresh child, before the timeout stands: a
    time-out is as often a busy machine (another build, a tuner, swap) as a hung engine, and a
    rejection costs the user the backend for this load.
    """
    source = info.source()
    if reference is None:
        _, reference = reference_outputs(source, feed_sets, timeout=timeout, labels=labels,
                                         registry=registry)
    harness = next((r.outcome for r in reference if _status(r.outcome) == HARNESS), None)
    if harness is not None:
        return ProbeResult(backend, HARNESS, "unirt could not run the reference: "
                           f"{harness.describe()}", opened=False)
    for attempt in range(TIMEOUT_RETRIES + 1):
        with Worker(new_state) as w:
            opened, sets = run_sets(w, source, backend, feed_sets, precision, options, runs,
                                    timeout=timeout, labels=labels, registry=_spec(registry),
                                    keep=True)
        try:
            result = judge(backend, opened, sets, reference, precision, atol, rtol, registry)
        except HarnessError as exc:  # an output kept in a file could not be read back
            result = ProbeResult(backend, HARNESS, str(exc))
        del sets  # the backend's kept outputs go now, not after a retry's run
        if result.status != TIMEOUT:
            break
        if attempt < TIMEOUT_RETRIES:
            logger.info("%s timed out verifying %s (%s); trying once more", backend,
                        info.name, result.reason)
        else:
            result.reason += f" (and on {TIMEOUT_RETRIES} retry)" if TIMEOUT_RETRIES == 1 \
                else f" (and on {TIMEOUT_RETRIES} retries)"
    return result


def open_only(info: ModelInfo, backend: str, precision: str = "exact",
              options: Mapping[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT,
              registry: Registry | None = None, why: str = "") -> ProbeResult:
    """Open ``info`` on ``backend`` in a child and run nothing: for a model no inputs can be
    generated for (bf16, strings, a declared shape over the size limit), whose engine must still
    not be opened in the user's process before a child did (an engine can segfault reading the
    model). Passing says only that: ``no reference``, with ``why`` nothing was run."""
    try:
        spec = _spec(registry)
    except HarnessError as exc:
        return ProbeResult(backend, HARNESS, f"unirt could not measure: {exc}", opened=False)
    with Worker(new_state) as w:
        opened = w.call(open_session, info.source(), backend, precision, dict(options or {}),
                        None, spec, timeout=timeout)
    if not opened.ok:
        return ProbeResult(backend, _status(opened), _open_reason(opened), opened=False)
    return ProbeResult(backend, NO_REFERENCE, f"{why}; opened in a child, nothing run"
                       if why else "opened in a child, nothing run",
                       precision=opened.value["precision"], load_s=opened.value["load_s"])


def judge(backend: str, opened: Outcome, sets: list[RunSet], reference: list[RunSet],
          precision: str = "exact", atol: Tolerance = None,
          rtol: Tolerance = None, registry: Registry | None = None) -> ProbeResult:
    """The verdict on one backend's runs (from :func:`run_sets`) against the reference's.

    A set with NaN/inf planted (``RunSet.nonfinite``) decides nothing but a crash or a hang:
    it is compared with NaN equal to NaN, and what differs goes to ``result.nonfinite``."""
    if not opened.ok:
        return ProbeResult(backend, _status(opened), _open_reason(opened), opened=False)
    result = ProbeResult(backend, PASS, precision=opened.value["precision"],
                         load_s=opened.value["load_s"])
    worst: dict[str, OutputDiff] = {}
    failing: list[str] = []
    notes: list[str] = []
    times: list[float] = []
    spread = OutputSpread()
    pairs = list(zip(reference, sets))
    again = sets[-1] if sets and sets[-1].again_of is not None else None
    if again is not None and again.again_of is not None and again.again_of < len(reference):
        pairs.append((reference[again.again_of], again))
    for ref, got in pairs:
        result.shapes.append(got.label)
        if got.outputs is None and _status(got.outcome) in (CRASHED, TIMEOUT, HARNESS):
            result.status = _status(got.outcome)
            result.reason = f"{got.outcome.describe()} running {got.label}"
            return result
        if got.nonfinite:
            if ref.outputs is not None:
                notes += _nonfinite_notes(got, ref, precision, atol, rtol)
            continue
        if ref.outputs is None:
            result.limited[got.label] = f"the reference cannot run it: {ref.outcome.describe()}"
            continue
        if got.outputs is None:
            if got is again:  # the shape it ran before, refused now: broken by the refusal
                failing.append(f"{got.label}: {got.outcome.describe()}")
                continue
            result.limited[got.label] = got.outcome.describe()
            continue
        times.extend(got.times)
        for name in ref.outputs:
            d, tol, wrong = _compare_output(name, got, ref, precision, atol, rtol,
                                            None if got is again else spread)
            result.tolerances.setdefault(name, tol)
            if name not in worst or d.max_abs > worst[name].max_abs or d.problem:
                worst[name] = d
            if wrong:
                failing.append(f"{name} at {got.label}: {wrong}")
    result.outputs = list(worst.values())
    result.run_s = statistics.median(times) if times else None
    result.weak = spread.degenerate()
    hides = [n for n in notes if n.startswith(_HIDDEN)]
    others = [n for n in notes if not n.startswith(_HIDDEN)]
    result.nonfinite = "; ".join(
        ([f"{HIDES}: " + "; ".join(h[len(_HIDDEN):] for h in hides)] if hides else [])
        + ([f"on NaN/inf inputs: {'; '.join(others)}"] if others else []))
    if failing:
        shown = "; ".join(failing[:_SHOWN_FAILURES])
        more = len(failing) - _SHOWN_FAILURES
        result.status = FAIL
        result.reason = "wrong numbers: " + shown + (f"; and {more} more" if more > 0 else "")
    elif all(r.outputs is None for r in reference if not r.nonfinite):
        result.status = NO_REFERENCE
        result.reference_opened = any(r.opened for r in reference)
        what = "opens the model and cannot run these inputs" if result.reference_opened \
            else "cannot run the model"
        result.reason = (f"the reference ({reference_name(registry)}) {what}: "
                         f"{reference[0].outcome.describe() if reference else 'no inputs'}")
    elif not times:
        result.status = ERROR
        result.reason = "; ".join(f"{k}: {v}" for k, v in result.limited.items()) or "nothing ran"
    return result


def _compare_output(name: str, got: RunSet, ref: RunSet, precision: str, atol: Tolerance,
                    rtol: Tolerance, spread: OutputSpread | None = None
                    ) -> tuple[OutputDiff, tuple[float, float], str]:
    """One output of ``got`` against the reference's: its differences, its tolerance, and why
    it is out of tolerance ("" when it is not). One output of each side is held while this runs
    (big ones are read from their files here, and dropped on return). ``spread`` takes note of
    what the reference's output looks like (:class:`OutputSpread`)."""
    assert ref.outputs is not None and got.outputs is not None
    ref_value = ref.outputs[name]
    if spread is not None:
        spread.add(name, ref_value)
    value = got.outputs.get(name)
    d = diff(name, value, ref_value)
    tol = tolerance(precision, np.asarray(ref_value), for_output(atol, name),
                    for_output(rtol, name))
    if d.problem or not within(value, ref_value, *tol):
        return d, tol, d.problem or (f"max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g} "
                                     f"(atol {tol[0]:.3g}, rtol {tol[1]:.3g})")
    return d, tol, ""


#: How many wrong outputs a reason lists (one per output and input set; the rest are counted).
_SHOWN_FAILURES = 3

#: Marks a note of :func:`_nonfinite_notes` that is a hidden NaN/inf (stripped when joined).
_HIDDEN = "\0hidden:"


def _nonfinite_notes(got: RunSet, ref: RunSet, precision: str, atol: Tolerance,
                     rtol: Tolerance) -> list[str]:
    """How ``got`` differs from ``ref`` on inputs with NaN/inf planted, one note per output:
    finite values where the reference has NaN or inf (hidden: marked with ``_HIDDEN``), NaN or
    inf where the reference is finite, other values out of tolerance, or an error."""
    assert ref.outputs is not None
    if got.outputs is None:
        return [f"refused ({got.outcome.describe()})"]
    notes: list[str] = []
    for name in ref.outputs:
        notes += _nonfinite_output_notes(name, got, ref, precision, atol, rtol)
    return notes


def _nonfinite_output_notes(name: str, got: RunSet, ref: RunSet, precision: str,
                            atol: Tolerance, rtol: Tolerance) -> list[str]:
    """:func:`_nonfinite_notes` for one output (one output of each side held at a time)."""
    assert ref.outputs is not None and got.outputs is not None
    notes: list[str] = []
    r = np.asarray(ref.outputs[name])
    if r.dtype.kind not in "fc" or r.size == 0:
        return notes
    a = np.asarray(got.outputs.get(name))
    if a.shape != r.shape or a.dtype.kind not in "fcbiu":
        return [f"output {name}: {diff(name, a, r).problem or 'not comparable'}"]
    n = nonfinite_counts(a, r, *tolerance(precision, r, for_output(atol, name),
                                          for_output(rtol, name)))
    if n.hidden_nan or n.hidden_inf:
        what = " and ".join(w for w, k in (("NaN", n.hidden_nan), ("inf", n.hidden_inf)) if k)
        notes.append(f"{_HIDDEN}output {name} finite where the reference has {what} "
                     f"({n.hidden_nan + n.hidden_inf} of {n.ref_nonfinite} values)")
    if n.made:
        notes.append(f"output {name} NaN or inf where the reference is finite "
                     f"({n.made} values)")
    if n.bad:
        notes.append(f"output {name} out of tolerance on {n.bad} finite values")
    if n.wrong_sign:
        notes.append(f"output {name} inf of the other sign ({n.wrong_sign} values)")
    return notes


def _status(outcome: Outcome) -> ProbeStatus:
    if outcome.status == HARNESS or (outcome.status == ERROR
                                     and outcome.error_type in HARNESS_ERRORS):
        return HARNESS
    return ProbeStatus(outcome.status) if outcome.status in (CRASHED, TIMEOUT) else ERROR


def _open_reason(outcome: Outcome) -> str:
    text = outcome.describe()
    if _status(outcome) == HARNESS:
        return f"unirt could not measure: {text}"
    return text if outcome.status in (CRASHED, TIMEOUT) else text.split(": ", 1)[-1]
