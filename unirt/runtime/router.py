"""Routing: order the candidate backends for a model, open the first that works, record why.

Candidates are ``backend=`` alone (never falls back), else the ``prefer`` list first and then the
default order for the device (GPU backends before CPU ones under ``device="auto"``, each class
by its backends' ``default_rank``). For each: available? -> open; every failure is recorded on
the route with its reason and the next candidate is tried. A preferred backend that fails logs a
warning naming it and the reason, so nobody finds a silent fallback weeks later.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unirt.errors import (
    BackendError,
    BackendUnavailableError,
    NoBackendError,
    PluginError,
    UnirtError,
)
from unirt.model.info import ModelInfo, ModelSource, read_model
from unirt.plugin.backend import OpenOptions
from unirt.plugin.registry import Registry, get_registry
from unirt.plugin.route import (
    CHOSEN,
    EXCLUDED,
    FAILED,
    NOT_TRIED,
    REJECTED,
    REWRITTEN,
    SHAPE_FALLBACK,
    UNAVAILABLE,
    RouteStep,
    render_route,
)
from unirt.plugin.route import (
    UNSUPPORTED as UNSUPPORTED_STEP,
)
from unirt.runtime.session import Session

logger = logging.getLogger("unirt")

DEVICES = ("auto", "cpu", "cuda", "gpu")

#: ``UNIRT_BACKEND_ORDER=openvino,onnxruntime``: these first, in this order, then the rest.
ORDER_ENV = "UNIRT_BACKEND_ORDER"


def _names(value: str | Iterable[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(n, str) for n in names):
        raise UnirtError(f"{what} must be a backend name or a list of names, got {value!r}")
    return names


def default_order(registry: Registry, device: str = "auto") -> list[str]:
    """Backend names in the default routing order for ``device``: GPU backends by rank, then the
    reference (it opens at once, with no child process: the first load costs what the raw engine
    costs), then the other CPU backends by rank, for fallback. A tuning result, when cached,
    goes before all of them (:func:`load`)."""
    if device not in DEVICES:
        raise UnirtError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    backends = list(registry.backends.values())
    if device == "cpu":
        backends = [b for b in backends if b.device_class == "cpu"]
    elif device in ("cuda", "gpu"):
        backends = [b for b in backends if b.device_class == "gpu"]
    backends.sort(key=lambda b: (b.device_class != "gpu", not b.is_reference, b.default_rank))
    names = [b.name for b in backends]
    override = [n.strip() for n in os.environ.get(ORDER_ENV, "").split(",") if n.strip()]
    for name in override:
        if name not in registry.backends:
            raise UnirtError(f"{ORDER_ENV} names unknown backend {name!r}; registered backends: "
                             f"{', '.join(registry.backends)}")
    first = [n for n in override if n in names]
    return first + [n for n in names if n not in first]


def candidates(
    registry: Registry,
    backend: str | None = None,
    prefer: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    device: str = "auto",
) -> tuple[list[str], set[str]]:
    """Every candidate in routing order, and the names among them the caller excluded."""
    excluded = _names(exclude, "exclude")
    for name in excluded:
        registry.backend(name)  # an unknown name is an error listing the known ones
    if backend is not None:
        if prefer:
            raise UnirtError("give either backend= (only that one) or prefer=, not both")
        registry.backend(backend)
        if backend in excluded:
            raise UnirtError(f"backend {backend!r} is also in exclude=")
        return [backend], set()
    preferred = _names(prefer, "prefer")
    for name in preferred:
        if name == "fastest":
            raise UnirtError('prefer="fastest" needs a model: use unirt.load(..., '
                             'prefer="fastest")')
        registry.backend(name)
    order: list[str] = []
    for name in [*preferred, *default_order(registry, device)]:
        if name not in order:
            order.append(name)
    return order, set(excluded)


def load(
    model: ModelSource | ModelInfo,
    *,
    backend: str | None = None,
    prefer: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    device: str = "auto",
    precision: str = "exact",
    threads: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    fallback: bool = True,
    verify: str = "auto",
    check: bool = True,
    tolerance: float | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    input_ranges: Mapping[str, Sequence[float]] | None = None,
    registry: Registry | None = None,
    lock: str | os.PathLike[str] | None = None,
    lock_mode: str = "raise",
    tune: str | None = None,
    crash_guard: str | None = None,
    rewrite: bool | Sequence[str] = True,
    inputs: Any = None,
    verify_live: bool | str | tuple[int, int] | None = None,
) -> Session:
    """Open ``model`` on the best backend that can run it. Every argument is described below and in
    docs/python-api.md.

    Every argument is checked before any child process starts or any cache entry is written.
    ``lock=`` opens exactly the choice a deployment lock records (``unirt lock``), measuring
    nothing; a lock made for other model bytes or engine versions raises ``LockError``, or with
    ``lock_mode="warn"`` logs why and routes as usual. ``tune="background"`` (or
    ``UNIRT_TUNE=background``) starts on the default route and moves to the fastest verified
    engine between two calls once a low-priority background measurement finds one.
    ``crash_guard`` (``UNIRT_CRASH_GUARD``): ``"auto"`` opens the reference in this process at
    once and, should a process die on the model before its first answer, runs the reference in
    a child first on every later load; ``"child"`` does that before the first open too (see
    :mod:`unirt.runtime.crashguard`).
    ``rewrite=True`` lets a candidate that cannot run the model (or runs it wrong) be tried with
    a verified rewrite of it (:mod:`unirt.runtime.fit`); a list of names limits it to those;
    ``False`` turns it off. ``input_ranges={"ids": (0, 30521)}``: the values verification
    generates for those inputs (ints LO..HI, floats [LO, HI)), where the defaults (N(0,1)
    floats, ints 0..3) are not what the model accepts.
    ``inputs``: what the application sends (one feed dict, a list of them, or a folder written
    by :func:`unirt.evidence.input_files.save_inputs`): every candidate is verified on exactly those
    arrays, at their shapes, and the verdict is cached under their digest
    (:mod:`unirt.evidence.operating`); without them, verification runs on generated inputs and says
    so. ``verify_live`` (``UNIRT_VERIFY_LIVE``): re-run the first calls and then a sample of calls
    on the reference, off the caller's path, and move to the reference on a disagreement
    (:mod:`unirt.runtime.live`); ``None``/``"auto"``: when routing chose an engine other than the
    reference and verified it; ``True``/``"on"``, ``False``/``"off"``, or ``(first, every)``.
    """
    registry = registry or get_registry()
    info = read_model(model)
    options = dict(options or {})
    check_arguments(registry, info, backend=backend, prefer=prefer, exclude=exclude,
                     device=device, precision=precision, threads=threads, options=options,
                     verify=verify, tolerance=tolerance, input_shapes=input_shapes,
                     fallback=fallback, check=check, input_ranges=input_ranges)
    given = None
    if inputs is not None:
        from unirt.evidence.operating import as_input_sets

        given = as_input_sets(info, inputs)
        # Engines built per shape (ncnn's conversion, TensorRT's profiles) are built for what
        # the application sends, unless the caller says otherwise.
        input_shapes = {**given.first_shapes, **dict(input_shapes or {})}
    ranges: Mapping[str, Any] = {}
    if input_ranges is not None:
        from unirt.evidence.values import check_ranges

        ranges = check_ranges(info.inputs, input_ranges)
    from unirt.runtime.crashguard import resolve_mode as guard_mode

    guard = guard_mode(crash_guard)
    from unirt.runtime.live_setting import resolve_setting

    live = resolve_setting(verify_live)
    rewrites = _check_rewrite(registry, rewrite)
    tune_mode = "off"
    if tune is not None or os.environ.get("UNIRT_TUNE"):  # the tuner is imported when asked for
        from unirt.runtime.tuning import resolve_mode

        tune_mode = resolve_mode(tune)
    if lock_mode not in ("raise", "warn"):
        raise UnirtError(f"lock_mode must be 'raise' or 'warn', not {lock_mode!r}")
    if lock is not None:
        if backend is not None or prefer:
            raise UnirtError("give lock= alone: the lock names the backend")
        from unirt.runtime.lock import resolve_lock

        # The lock's precision applies: a lock made with --precision fast opens fast.
        locked = resolve_lock(lock, info, registry, lock_mode)
        if locked is not None:
            name, figures = locked
            if figures.lock is not None:
                precision = figures.lock.precision
            request = _Request(backend=name, fallback=False, precision=precision,
                               threads=threads, device=device, options=options, verify="never",
                               check=False, tolerance=tolerance,
                               input_shapes=dict(input_shapes or {}), crash_guard=guard,
                               rewrite=False, input_ranges=ranges, inputs=given,
                               verify_live=live)
            router = _Router(registry, info, request, [name], set(), set(), set())
            router.verifications[name] = figures
            router.locked = figures.describe()
            return router.route()
    asked: RouteStep | None = None
    if isinstance(rewrites, tuple):
        info, asked = _rewrite_as_asked(registry, info, rewrites, precision, input_shapes,
                                        tolerance, given)
    request = _Request(backend=backend, fallback=fallback, precision=precision, threads=threads,
                       device=device, options=options, verify=verify, check=check,
                       tolerance=tolerance, input_shapes=dict(input_shapes or {}),
                       crash_guard=guard, rewrite=rewrites, input_ranges=ranges, inputs=given,
                       verify_live=live)
    ranking = None
    prefer_list = _names(prefer, "prefer")
    tuned: str | None = None
    if backend is None and ("fastest" in prefer_list or not prefer_list):
        # Where the model was last tuned on this machine, when the caller says nothing of
        # shapes or inputs: the ranking and the winner's verdict are there, not at a guess.
        request = _at_remembered_point(info, request)
    if backend is None and "fastest" in prefer_list:
        ranking = _rank_fastest(registry, info, device, _names(exclude, "exclude"), request)
        i = prefer_list.index("fastest")
        prefer_list[i:i + 1] = [n for n in ranking.order if n not in prefer_list]
    elif backend is None and not prefer_list:
        ranking = _tuned(registry, info, device, request)
        tuned = ranking.winner if ranking is not None else None
    everything, excluded = candidates(registry, backend, prefer_list or ([tuned] if tuned else
                                                                         None), exclude, device)
    vetoed: set[str] = set()
    if backend is None:
        everything, vetoed = _apply_policy(registry, info, everything)
    router = _Router(registry, info, request, everything, excluded, vetoed, set(prefer_list),
                     ranking, tuned=tuned)
    if asked is not None:
        router.steps.append(asked)
    sess = router.route()
    if tune_mode == "background" and backend is None and "fastest" not in _names(prefer,
                                                                                 "prefer"):
        _tune_in_background(sess, registry, info, device, excluded | vetoed, request)
    return sess


def _tune_in_background(sess: Session, registry: Registry, info: Any, device: str,
                        left_out: set[str], request: _Request) -> None:
    """Measure the other available backends at low priority and swap to a faster verified one
    (:mod:`unirt.runtime.tuning`); the pool is ``prefer="fastest"``'s, so they share the ranking."""
    from unirt.evidence.timing import candidate_pool
    from unirt.runtime.tuning import start_background

    pool, versions, _ = candidate_pool(registry, default_order(registry, device), left_out)
    start_background(sess, info, pool, versions, request.precision, request.options,
                     request.input_shapes or None, request.tolerance, registry=registry)


def _tuned(registry: Registry, info: Any, device: str, request: _Request) -> Any:
    """The cached tuning result for this model on this machine, when its winner is still
    installed at the version it was measured with (one engine's availability is asked, no
    other engine is imported). None otherwise: the default order applies."""
    if _never_tuned():
        return None
    from unirt.evidence.timing import lookup

    ranking = lookup(info, request.precision, request.options, request.input_shapes or None,
                     request.tolerance, request.input_ranges, request.inputs)
    if ranking is None or ranking.winner is None:
        return None
    winner = ranking.winner
    if winner not in registry.backends or winner not in default_order(registry, device):
        return None
    avail = registry.backend(winner).available()
    if not avail.available or avail.version != ranking.versions.get(winner):
        logger.info("unirt: the tuning result for %s was measured with %s %s; %s now: not used",
                    info.name, winner, ranking.versions.get(winner), avail.version)
        return None
    return ranking


def _never_tuned() -> bool:
    """Whether nothing was ever ranked or tuned with this cache (no section for it): then no
    ranking and no operating point can be found, and the timing module is not even imported to
    look (a default load's path)."""
    from unirt.evidence import TIMING_SECTION
    from unirt.store.cache import ArtifactCache

    return not ArtifactCache().has_section(TIMING_SECTION)


def _at_remembered_point(info: Any, request: _Request) -> _Request:
    """``request`` at the operating point the model was last tuned at on this machine
    (:func:`unirt.evidence.timing.recall_point`: the shapes, value ranges and input sets of ``unirt
    tune``), when the caller gave none of those; else as it is."""
    if request.input_shapes or request.input_ranges or request.inputs is not None:
        return request
    if _never_tuned():
        return request
    from unirt.evidence.timing import recall_point

    point = recall_point(info, request.precision, request.options, request.tolerance)
    if point is None:
        return request
    from dataclasses import replace

    shapes, ranges, inputs = point
    return replace(request, input_shapes=dict(shapes), input_ranges=ranges, inputs=inputs)


def check_arguments(registry: Registry, info: Any, *, backend: str | None,
                     prefer: str | Sequence[str] | None, exclude: str | Sequence[str] | None,
                     device: str, precision: str, threads: int | None,
                     options: Mapping[str, Any], verify: str, tolerance: float | None,
                     input_shapes: Mapping[str, Sequence[int]] | None, fallback: bool,
                     check: bool, input_ranges: Mapping[str, Any] | None = None) -> None:
    """Every ``load`` argument, checked up front: a typo costs a clear error, not seconds of
    verification children and a cache entry."""
    from unirt.plugin.backend import PRECISIONS
    from unirt.plugin.backend import VERIFY_MODES as MODES

    if backend is not None and not isinstance(backend, str):
        raise UnirtError(f"backend must be a backend name, not {backend!r}")
    if backend is not None:
        registry.backend(backend)
    for name in _names(prefer, "prefer"):
        if name != "fastest":
            registry.backend(name)
    for name in _names(exclude, "exclude"):
        registry.backend(name)
    if device not in DEVICES:
        raise UnirtError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if precision not in PRECISIONS:
        raise UnirtError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    for name, opts in options.items():
        registry.backend(name)
        if not isinstance(opts, Mapping):
            raise UnirtError(f"options[{name!r}] must be a dict of backend options")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise UnirtError(f"threads must be a positive integer, not {threads!r}")
    if verify not in MODES:
        raise UnirtError(f"verify must be one of {', '.join(MODES)}, not {verify!r}")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(
            tolerance, (int, float)) or not tolerance > 0):
        raise UnirtError(f"tolerance must be a positive number, not {tolerance!r}")
    for flag, value in (("fallback", fallback), ("check", check)):
        if not isinstance(value, bool):
            raise UnirtError(f"{flag} must be True or False, not {value!r}")
    if input_shapes is not None:
        if not isinstance(input_shapes, Mapping):
            raise UnirtError("input_shapes must be a dict of input name -> shape")
        from unirt.evidence.inputs import check_shapes

        check_shapes(info, input_shapes, "input_shapes")
    if input_ranges is not None:
        from unirt.evidence.values import check_ranges

        check_ranges(info.inputs, input_ranges, "input_ranges")


def _rewrite_as_asked(registry: Registry, info: Any, names: tuple[str, ...], precision: str,
                      input_shapes: Mapping[str, Sequence[int]] | None,
                      tolerance: float | None, inputs: Any = None
                      ) -> tuple[Any, RouteStep | None]:
    """Opt-in rewrites named in ``rewrite=[...]`` apply before routing, to every candidate: they
    change what the model accepts (un-baking a traced size), so no engine's failure can ask for
    them. Verified on the reference against the original, at the sizes where the original runs
    (``Rewrite.traced_sizes``) unless ``input_shapes`` says otherwise. A discarded or refused
    rewrite is an error (it was asked for); one that does not apply is logged and skipped."""
    from unirt.evidence.probe import reference_name
    from unirt.evidence.traced import rewrite_traced_shapes
    from unirt.runtime.fit import FitStatus, fit

    opt_in = [n for n in names if registry.rewrite(n).opt_in]
    if not opt_in:
        return info, None
    shapes = dict(input_shapes or {}) or rewrite_traced_shapes(registry, info, opt_in)
    reference = reference_name(registry)
    fitted = fit(info, reference, names=opt_in, registry=registry, precision=precision,
                 shapes=shapes or None, tolerance=tolerance, inputs=inputs)
    if fitted.status == FitStatus.NOT_APPLICABLE:
        logger.warning("unirt: %s", fitted.describe())
        return info, None
    if not fitted.usable or fitted.info is None:
        raise UnirtError(f"rewrite {', '.join(opt_in)} of {info.name}: {fitted.describe()}")
    at = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
    return fitted.info, RouteStep("rewrite", REWRITTEN, f"before routing, as asked: "
                                  f"{fitted.describe()}" + (f" at {at}" if at else ""))


def _check_rewrite(registry: Registry, rewrite: Any) -> bool | tuple[str, ...]:
    """``load(rewrite=)``: True, False or rewrite names, each known (checked up front, so a
    typo costs an error, not a fallback that silently skips the rewrite asked for). A name list
    loads the rewrite plugins now; True and False do not."""
    if isinstance(rewrite, bool):
        return rewrite
    from unirt.runtime.fit import check_names

    names = check_names(registry, rewrite)
    return True if names is None else names


@dataclass(frozen=True)
class _Request:
    """What the caller of ``load`` asked for, as the router and run-time fallback use it."""

    backend: str | None
    fallback: bool
    precision: str
    threads: int | None
    device: str
    options: Mapping[str, Mapping[str, Any]]
    verify: str
    check: bool  # False: the caller measures the engine itself (probes)
    tolerance: float | None
    input_shapes: dict[str, Sequence[int]]
    crash_guard: str = "auto"  # crashguard.GuardMode
    #: True: every applicable rewrite; a tuple: only those; False: none
    rewrite: bool | tuple[str, ...] = True
    #: value ranges of generated inputs for verification (checked)
    input_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: the user's input sets (operating.InputSets): verification runs on them, not generated
    inputs: Any = None
    verify_live: Any = None  # live.LiveSetting; None: no live check


class _Router:
    """The state of one ``load``: candidates, the route so far, and how to open each one.

    Kept after ``load`` by the Session for run-time fallback, so that a shape the chosen engine
    cannot take is routed the same way, with the same options, and recorded on the same route.
    """

    def __init__(self, registry: Registry, info: Any, request: _Request, everything: list[str],
                 excluded: set[str], vetoed: set[str], preferred: set[str],
                 ranking: Any = None, tuned: str | None = None) -> None:
        self.registry, self.info, self.request = registry, info, request
        self.everything, self.preferred = everything, preferred
        self.excluded, self.vetoed = excluded | vetoed, vetoed
        self.backend = request.backend
        self.ranking = ranking  # fastest.Ranking: prefer="fastest", or a cached tuning result
        self.tuned = tuned  # the tuning result's winner the default route starts with
        self._ordered = False  # the table's predictions applied to the rest of the order
        self.locked: str | None = None  # the lock's description, when opened from one
        self.steps: list[RouteStep] = []
        self.verifications: dict[str, Any] = {}  # verify.Verification per candidate
        self.verdicts: dict[str, Any] = {}  # capability.Verdict per candidate checked
        self.marker: Any = None  # crashguard.Marker held for the reference opened in-process
        self.fitted: dict[str, Any] = {}  # rewrite.fit.Fitted per candidate opened rewritten
        #: candidates left for the reference because nothing could judge them (no rewrite
        #: changes that: it is the inputs, not the model)
        self.unjudged: set[str] = set()

    def open_options(self, name: str) -> OpenOptions:
        r = self.request
        return OpenOptions(precision=r.precision, threads=r.threads, device=r.device,
                           extra=dict(r.options.get(name, {})),
                           input_shapes=dict(r.input_shapes or {}))

    def try_open(self, name: str) -> tuple[Any, RouteStep | None]:
        """Open one candidate: (session, None), or (None, the failed step)."""
        be = self.registry.backend(name)
        unsupported = self._check(name)
        if unsupported is not None:
            if self.backend is not None:
                raise BackendError(f"{name} cannot run {self.info.name}: {unsupported.reason}")
            return None, unsupported
        refused = self._guard(name) if be.is_reference else self._verify(name)
        if refused is not None:
            if self.backend is not None:
                word = "refused" if refused.outcome == FAILED else "was rejected for"
                raise BackendError(f"{name} {word} {self.info.name}: {refused.reason}")
            return None, refused
        try:
            impl = be.open(self.info, self.open_options(name))
        except BackendUnavailableError as exc:
            self._release_marker()
            if self.backend is not None:
                raise  # backend= never falls back
            return None, RouteStep(name, UNAVAILABLE, str(be.available().reason or exc))
        except UnirtError as exc:
            self._release_marker()
            if self.backend is not None:
                raise
            return None, RouteStep(name, FAILED, str(exc))
        return impl, None

    def _guard(self, name: str) -> RouteStep | None:
        """The reference's guard (:mod:`unirt.runtime.crashguard`): None when it may be opened here,
        else its step. Known to answer here: open at once (one ``stat``). A cached child verdict
        decides. A process died on it before (or ``crash_guard="child"``): run it in a child
        first. Otherwise a marker is held until the session's first answer."""
        from unirt.runtime import crashguard

        r = self.request
        if r.verify == "never":
            return None
        avail = self.registry.backend(name).available()
        if not avail.available:
            return None  # open() reports it as unavailable
        opts = r.options.get(name, {})
        k = crashguard.key(self.info, name, avail.version, r.precision, opts)
        if crashguard.ran_before(k):
            return None
        from unirt.evidence.verify import VerifyStatus, lookup, verify_reference

        v = lookup(self.info, name, avail.version, r.precision, opts, r.input_shapes,
                   ranges=r.input_ranges, inputs=r.inputs)
        state = crashguard.marker_state(k) if v is None else crashguard.MarkerState.NONE
        if v is None and state == crashguard.MarkerState.NONE and \
                r.crash_guard != crashguard.GuardMode.CHILD:
            self.marker = crashguard.arm(k, f"{self.info.name} on {name}")
            if self.marker is not None:
                return None
            state = crashguard.marker_state(k)  # another process armed it meanwhile
        if v is None and (state != crashguard.MarkerState.NONE
                          or r.crash_guard == crashguard.GuardMode.CHILD):
            if state == crashguard.MarkerState.DIED:
                logger.warning("unirt: a process died running %s on %s before its first "
                               "answer; running it in a child first", self.info.name, name)
            elif state == crashguard.MarkerState.HELD:
                logger.info("unirt: another process is opening %s on %s for the first time; "
                            "running it in a child first", self.info.name, name)
            v = verify_reference(self.info, name, avail.version, r.precision, opts,
                                 r.input_shapes, registry=self.registry,
                                 ranges=r.input_ranges, inputs=r.inputs)
        if v is None:  # no cache to hold a marker in: as raw ONNX Runtime
            return None
        if v.accepted:  # (not a verification to show: it was compared with nothing)
            crashguard.record_ran(k)
            return None
        if v.about_engine:
            crashguard.forget(k)
        word = FAILED if v.status == VerifyStatus.REFUSED else REJECTED
        return RouteStep(name, word, f"in a child: {v.describe()}")

    def _release_marker(self) -> None:
        marker, self.marker = self.marker, None
        if marker is not None:
            marker.release()

    def _check(self, name: str) -> RouteStep | None:
        """The static verdict: None unless decisive evidence (a backend rule, a node no engine
        of this kind runs) refuses the candidate. The table's predictions never do: they ride
        on the route and the candidate is measured. The reference is judged by its engine."""
        be = self.registry.backend(name)
        if not self.request.check or be.is_reference or not be.available().available:
            return None  # open() reports an unavailable backend itself
        from unirt.capability.verdict import UNSUPPORTED

        verdict = self.verdicts.get(name) or be.check(self.info)
        self.verdicts[name] = verdict
        if verdict.status == UNSUPPORTED:
            return RouteStep(name, UNSUPPORTED_STEP, verdict.summary())
        return None

    def _verify(self, name: str) -> RouteStep | None:
        """Verification before opening in the user's process: None when the candidate may be
        opened, else its step: REJECTED (wrong numbers, crash, hang, or not measurable), or
        FAILED when the engine refused the model in the child (it is not opened again here: an
        engine can take another path in this process, and crash it). The reference is never
        verified: its engine's own answer is opening the model."""
        r = self.request
        if r.verify == "never" or self.registry.backend(name).is_reference:
            return None
        avail = self.registry.backend(name).available()
        if not avail.available:
            return None  # open() reports it as unavailable
        from unirt.evidence.verify import VerifyStatus, verify

        v = verify(self.info, name, avail.version, r.precision, r.options.get(name, {}),
                   r.input_shapes, r.verify, r.tolerance, registry=self.registry,
                   ranges=r.input_ranges, inputs=r.inputs)
        self.verifications[name] = v
        if v.status == VerifyStatus.REFUSED:
            return RouteStep(name, FAILED, v.describe())
        if self.backend is None and v.status == VerifyStatus.UNVERIFIED and \
                v.result.reference_opened and self._reference_ahead(name):
            # unirt's inputs, not the model, failed on the reference: that is no reason to run
            # an engine nobody checked in its place.
            self.unjudged.add(name)
            return RouteStep(name, REJECTED, f"{v.describe()}; not opened unverified in place "
                             "of the reference, which opens the model: give input_shapes= or "
                             f"inputs= with what the application sends to verify {name} there")
        if v.accepted and not (v.status == VerifyStatus.UNVERIFIED and r.verify == "always"):
            return None
        return RouteStep(name, REJECTED, v.describe())

    def _reference_ahead(self, name: str) -> bool:
        """Whether the reference is still on the route after ``name`` (not excluded)."""
        ref = self.registry.reference
        rest = self.everything[self.everything.index(name) + 1:] if name in self.everything \
            else []
        return ref is not None and ref in rest and ref not in self.excluded

    def order_rest(self, after: int) -> None:
        """After the first failure, order the candidates left by the table's prediction (the
        ones it predicts to fail go last; named preferences keep their place). Done lazily:
        the first candidate, usually the reference, opens without any static verdict, so an
        engine is imported only when routing reaches it."""
        if self._ordered or not self.request.check or self.backend is not None:
            return
        self._ordered = True
        from unirt.capability.verdict import UNSUPPORTED

        doubtful: list[str] = []
        for name in self.everything[after:]:
            be = self.registry.backend(name)
            if name in self.preferred or name == self.tuned or name in self.excluded or \
                    be.is_reference or not be.available().available:
                continue
            v = self.verdicts.get(name) or be.check(self.info)
            self.verdicts[name] = v
            if v.prediction == UNSUPPORTED and v.status != UNSUPPORTED and \
                    not self._measured_right(name):
                doubtful.append(name)
        rest = self.everything[after:]
        self.everything[after:] = [n for n in rest if n not in doubtful] + doubtful

    def _measured_right(self, name: str) -> bool:
        """Whether a cached verdict says this candidate ran the model right: a measurement
        outranks the table's prediction (a lookup, no child)."""
        from unirt.evidence.verify import VerifyStatus, lookup

        r = self.request
        v = lookup(self.info, name, self.registry.backend(name).available().version,
                   r.precision, r.options.get(name, {}), r.input_shapes, r.tolerance,
                   r.input_ranges, r.inputs)
        return v is not None and v.status == VerifyStatus.VERIFIED

    def route(self) -> Session:
        info, everything, excluded = self.info, self.everything, self.excluded
        for i, name in enumerate(everything):
            if i and not self._ordered and not self.registry.backend(name).is_reference and \
                    any(s.outcome in (FAILED, REJECTED, UNSUPPORTED_STEP) for s in self.steps):
                # A candidate before this one could not run the model (an absent GPU engine
                # says nothing about it, and ordering asks every engine: imports them all).
                self.order_rest(i)
                name = everything[i]
            if name in excluded:
                self.steps.append(RouteStep(name, EXCLUDED, self._excluded_reason(name)))
                continue
            impl, step = self.open_or_fit(name)
            if step is None:
                self.steps.append(RouteStep(name, CHOSEN, self._chosen_reason(name)))
                self.steps.extend(
                    RouteStep(n, EXCLUDED, self._excluded_reason(n)) if n in excluded
                    else RouteStep(n, NOT_TRIED, self._not_tried_reason(n))
                    for n in everything[i + 1:])
                marker, self.marker = self.marker, None
                self._warn_unverified(name)
                sess = Session(info, name, impl, self.steps, self.open_options(name),
                               reroute=self.reroute if self.backend is None else None,
                               fail_over=self.fail_over if self.backend is None else None,
                               verification=self.verifications.get(name), guard=marker)
                self._watch_live(sess, name)
                return sess
            self.steps.append(step)
            nxt = next((n for n in everything[i + 1:] if n not in excluded), None)
            if name in self.preferred:
                if not self.request.fallback:
                    raise NoBackendError(f"preferred backend {name} cannot run {info.name} and "
                                         f"fallback=False: {step.reason}")
                usable = next((n for n in everything[i + 1:] if n not in excluded
                               and self.registry.backend(n).available().available), None)
                logger.warning("unirt: preferred backend %s cannot run %s (%s); falling back "
                               "to %s", name, info.name, step.reason, usable or "nothing")
            self.registry.call_hook_safely("on_fallback", model=info, step=step,
                                           next_backend=nxt)
        raise NoBackendError(f"no backend can run {info.name}:\n{render_route(self.steps)}")

    def _watch_live(self, sess: Session, name: str) -> None:
        """Start the live check (:mod:`unirt.runtime.live`) when ``verify_live`` wants one here."""
        r, live = self.request, self.request.verify_live
        if live is None or not live.wanted(reference=self.registry.backend(name).is_reference,
                                           routed=self.backend is None, verify=r.verify):
            return
        from unirt.runtime.live import start

        start(sess, self.registry, live, r.precision, r.tolerance, r.options)

    def fail_over(self, failed: str, shape: str, reason: str) -> tuple[str, Any]:
        """Open what takes the session over after ``failed`` raised running a call at
        ``shape``: the reference first (it is right by definition, and it is what the call is
        judged by), then the candidates after ``failed`` in route order. Records the failure
        on the route; raises ``NoBackendError`` when none can be opened. The caller runs the
        call on the engine it gets before it keeps it."""
        name, impl = self._open_after(
            failed, RouteStep(failed, FAILED, f"failed at run time at {shape}: {reason}"),
            reference_first=True)
        if name is None:
            raise NoBackendError(f"no backend can take over {self.info.name} from {failed}:\n"
                                 f"{render_route(self.steps)}")
        return name, impl

    def reroute(self, failed: str, shape: str, reason: str) -> tuple[str, Any]:
        """Open the next candidate after ``failed`` for an input shape ``failed`` cannot take.

        Records every attempt on the route. Raises ``NoBackendError`` when none is left.
        """
        name, impl = self._open_after(
            failed, RouteStep(failed, SHAPE_FALLBACK, f"cannot run shape {shape}: {reason}"))
        if name is None:
            raise NoBackendError(f"no backend can run {self.info.name} at shape {shape}:\n"
                                 f"{render_route(self.steps)}")
        self.steps.append(RouteStep(name, CHOSEN, f"for shape {shape}, in place of {failed}"))
        return name, impl

    def _open_after(self, failed: str, step: RouteStep, reference_first: bool = False
                    ) -> tuple[str | None, Any]:
        """Record ``step`` (``failed`` could not go on) and open the first candidate after it in
        route order (the reference first, when asked) that opens: (name, session), every
        failure on the way recorded; (None, None) when none is left."""
        self.steps.append(step)
        after = self.everything.index(failed) + 1 if failed in self.everything else 0
        rest = [n for n in self.everything[after:] if n not in self.excluded and n != failed]
        ref = self.registry.reference
        if reference_first and ref is not None and ref != failed and ref not in self.excluded:
            rest = [ref] + [n for n in rest if n != ref]
        self.registry.call_hook_safely("on_fallback", model=self.info, step=step,
                                       next_backend=rest[0] if rest else None)
        for name in rest:
            impl, failure = self.open_or_fit(name)
            self._release_marker()  # only the first call of a load's own engine is guarded
            if failure is None:
                return name, impl
            self.steps.append(failure)
        return None, None

    # -- rewrites: a candidate that failed, tried again with a verified rewrite of the model ----
    def open_or_fit(self, name: str) -> tuple[Any, RouteStep | None]:
        """:meth:`try_open`, and when the candidate was unsupported, refused the model or ran it
        wrong, the same candidate on the model fitted by rewrites (:func:`unirt.runtime.fit.fit`,
        verified in a child against the reference on the original). Costs nothing when the
        candidate opens: the first load's path is unchanged."""
        try:
            impl, step = self.try_open(name)
        except BackendError as exc:  # backend= raises where a routed candidate gets a step
            if not self._may_fit(name):
                raise
            impl, step = self._open_fitted(name, RouteStep(name, FAILED, str(exc)))
            if step is not None:
                if step.reason == str(exc):
                    raise  # no rewrite applies: the engine's own error, as it was
                raise BackendError(step.reason) from exc
            return impl, None
        if step is None and self._unjudged(name) and self._may_fit(name):
            # Opened, but nothing could tell whether it runs the model right: the reference
            # refuses the model too. A rewrite that makes the model well-formed can be judged.
            # Only a fit whose numbers were checked replaces it (verified, or ran right against
            # the reference on the rewritten model): one as unverified as the original is no
            # better (an unverified 'fold' over an unverified session can give NaN on both).
            fitted, _ = self._open_fitted(name, RouteStep(name, REJECTED, self.verifications[
                name].describe()), replaces_unjudged=True)
            if fitted is not None:
                impl.close()
                return fitted, None
            return impl, None
        if step is None or step.outcome not in (UNSUPPORTED_STEP, FAILED, REJECTED) or \
                name in self.unjudged or not self._may_fit(name):
            return impl, step
        return self._open_fitted(name, step)

    def _warn_unverified(self, name: str) -> None:
        """Say it when the chosen engine runs the model on no evidence that its numbers are
        right (the reference cannot run the model, or no inputs can be made): the route says
        so too, but a robot's log should not need ``explain()`` to show it."""
        v = self.verifications.get(name)
        if v is None:  # not verified (the reference): nothing to import for
            return
        from unirt.evidence.verify import VerifyStatus

        if v.status == VerifyStatus.UNVERIFIED:
            logger.warning("unirt: %s runs %s unverified: %s", name, self.info.name,
                           v.result.reason)
        elif v.weak:
            logger.warning("unirt: %s runs %s verified on generated inputs only (%s): pass "
                           "inputs= with what the application sends to judge it there",
                           name, self.info.name, v.weak)

    def _unjudged(self, name: str) -> bool:
        """Whether ``name`` was opened on a verification that had no reference to compare
        with (the reference refuses the model)."""
        v = self.verifications.get(name)
        if v is None:
            return False
        from unirt.evidence.probe import NO_REFERENCE

        return bool(v.result.status == NO_REFERENCE)

    def _may_fit(self, name: str) -> bool:
        return self.request.rewrite is not False and \
            self.registry.backend(name).available().available

    def _open_fitted(self, name: str, failed: RouteStep, replaces_unjudged: bool = False
                     ) -> tuple[Any, RouteStep | None]:
        """Open ``name`` on the fitted model: (session, None) with ``failed`` kept on the route,
        or (None, ``failed`` with what became of the rewrite added). ``replaces_unjudged``: the
        candidate opened, unverified; only a fit whose numbers were checked (``PROVEN``)
        replaces it, and nothing failed."""
        from unirt.evidence.verify import Verification, status_of
        from unirt.runtime.fit import PROVEN, fit

        r = self.request
        try:
            fitted = fit(self.info, name,
                         names=r.rewrite if isinstance(r.rewrite, tuple) else None,
                         registry=self.registry, precision=r.precision,
                         options=r.options.get(name, {}), shapes=r.input_shapes or None,
                         tolerance=r.tolerance, inputs=r.inputs,
                         ranges=r.input_ranges or None)
        except UnirtError as exc:
            return None, RouteStep(name, failed.outcome, f"{failed.reason}; rewriting failed: "
                                                         f"{exc}")
        if fitted.info is None:
            return None, failed
        if not fitted.usable or (replaces_unjudged and fitted.status not in PROVEN):
            again = fitted.result is not None and fitted.result.reason and (
                fitted.result.reason.replace(fitted.info.name, self.info.name) in failed.reason)
            after = f"{', '.join(fitted.rewrites)} {fitted.status}, the same" if again \
                else fitted.describe()
            return None, RouteStep(name, failed.outcome, f"{failed.reason}; after rewrite: "
                                                         f"{after}")
        try:
            impl = self.registry.backend(name).open(fitted.info, self.open_options(name))
        except UnirtError as exc:
            return None, RouteStep(name, failed.outcome, f"{failed.reason}; the rewritten model "
                                                         f"({', '.join(fitted.rewrites)}) "
                                                         f"failed to open: {exc}")
        assert fitted.result is not None
        if not replaces_unjudged:
            self.steps.append(failed)
        self.fitted[name] = fitted
        self.verifications[name] = Verification(status_of(fitted.result), fitted.result,
                                                 fitted.cached, "")
        return impl, None

    def _chosen_reason(self, name: str) -> str:
        if name in self.fitted:
            return f"after rewrite: {self.fitted[name].describe()}"
        if self.locked is not None:
            return self.locked
        if self.backend is not None:
            why = "requested with backend="
        elif self.tuned == name and self.ranking is not None:
            why = f"tuned: {self.ranking.describe(name)}"
        elif self.tuned is None and self.ranking is not None and name in self.ranking.order:
            why = f"preferred: {self.ranking.describe(name)}"
        elif name in self.preferred:
            why = "preferred"
        elif self.registry.backend(name).is_reference and not self.preferred:
            why = ("the reference, opened at once (no tuning result for this model here: "
                   "`unirt tune` measures the other engines)")
        else:
            failed = [s for s in self.steps
                      if s.outcome in (FAILED, UNAVAILABLE, REJECTED, UNSUPPORTED_STEP)]
            why = "first in the default order" + (" that could open the model" if failed else "")
        verdict = self.verdicts.get(name)
        if verdict is not None and verdict.predicted:
            first = next((r for r in verdict.predicted if r.verdict == "UNSUPPORTED"), None)
            if first is not None:
                text = str(first) if len(str(first)) <= 120 else str(first)[:117] + "..."
                why += f"; predicted unsupported ({text}), measured instead"
        v = self.verifications.get(name)
        return why if v is None else f"{why}; {v.describe()}"

    def _not_tried_reason(self, name: str) -> str:
        verdict = self.verdicts.get(name)
        if verdict is None or verdict.prediction != "UNSUPPORTED":
            return ""
        return "ordered last: " + verdict.summary(1)

    def _excluded_reason(self, name: str) -> str:
        if name in self.vetoed:
            return "vetoed by a plugin (order_candidates)"
        return "excluded by the caller"


def _rank_fastest(registry: Registry, info: Any, device: str, exclude: list[str],
                  request: _Request) -> Any:
    """Rank the available candidates for ``prefer="fastest"`` (measured once, then cached), at
    the request's operating point: the user's inputs, their shapes, or the tuned point."""
    from unirt.evidence.timing import candidate_pool, rank

    pool, versions, _ = candidate_pool(registry, default_order(registry, device), exclude)
    r = request
    return rank(info, pool, versions, r.precision, r.options, r.input_shapes or None,
                r.tolerance, registry=registry, ranges=r.input_ranges or None,
                inputs=r.inputs)


def _apply_policy(registry: Registry, info: Any, order: list[str]) -> tuple[list[str], set[str]]:
    """Let ``order_candidates`` hooks reorder or veto; vetoed names stay in the route, excluded."""
    candidates_list = list(order)
    for plugin, call in registry.hook_calls("order_candidates"):
        try:
            call(model=info, candidates=candidates_list)
        except Exception as exc:
            raise PluginError(f"plugin {plugin} failed in order_candidates: "
                              f"{type(exc).__name__}: {exc}") from exc
        unknown = [n for n in candidates_list if n not in order]
        if unknown:
            raise PluginError(f"plugin {plugin} added unknown candidates in order_candidates: "
                              f"{', '.join(unknown)}")
    vetoed = [n for n in order if n not in candidates_list]
    return candidates_list + vetoed, set(vetoed)
