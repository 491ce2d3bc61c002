"""``tune="background"``: start on the reference at once, move to the fastest right engine soon.

A robot (any long-running process) wants its model answering now, so the session opens on the
default backend with no child process on the path. Meanwhile a daemon thread runs the same
measurement as ``prefer="fastest"`` (:func:`unirt.evidence.timing.rank`: every candidate verified
against the reference in a child process, the ones that pass timed side by side, the ranking
cached) with its children at a lower CPU priority, so that the measurement takes what the user's
work leaves. When the winner is not the current backend and beats it by ``margin``, the winner's
verdict is confirmed (:func:`unirt.evidence.verify.verify`, cached: every dynamic size, as ``load``
checks it), it is opened and warmed up in this process, and the session swaps to it between two
calls (:meth:`unirt.Session.swap`): calls in flight finish on the old engine, which is closed
after the last of them. The swap is a step on the route and one INFO line on logger ``unirt``.

Nothing here raises into the user's thread: a failure is logged and the session keeps running
where it is. ``Session.close()`` stops the tuner and kills its children.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unirt.errors import UnirtError, first_line
from unirt.plugin.backend import OpenOptions
from unirt.plugin.route import SWAPPED, RouteStep

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.timing import Ranking
    from unirt.model.info import ModelInfo
    from unirt.plugin.backend import BackendSession
    from unirt.plugin.registry import Registry
    from unirt.runtime.session import Session

logger = logging.getLogger("unirt")

#: ``UNIRT_TUNE=background`` turns background tuning on for every ``load`` of the process.
TUNE_ENV = "UNIRT_TUNE"
MODES = ("off", "background")
#: How much faster (relative) the winner must be than the current backend: below it, a swap
#: would trade a known engine for noise in the measurement.
DEFAULT_MARGIN = 0.05
#: Niceness added to the measurement's children: they get a fraction of a busy CPU (about a
#: tenth against a nice-0 process on Linux's CFS) and all of an idle one. The ranking stays fair
#: because every candidate is measured at the same priority, interleaved.
DEFAULT_NICE = 10
#: Calls run on the new engine before the swap, so that the user's first call after it does not
#: pay the engine's first-run costs (allocations, OpenVINO's lazy compilation).
WARMUP_CALLS = 2
#: The in-process confirmation before a swap: rounds of alternating blocks of calls per engine.
CONFIRM_ROUNDS = 3
CONFIRM_CALLS = 10


def resolve_mode(tune: str | None) -> str:
    """The tuning mode of a ``load``: the argument, else ``UNIRT_TUNE``, else ``"off"``.
    Raises ``UnirtError`` for anything else, before any work starts."""
    value = tune if tune is not None else (os.environ.get(TUNE_ENV) or "off")
    if value not in MODES:
        source = "tune" if tune is not None else TUNE_ENV
        raise UnirtError(f"{source} must be one of {', '.join(MODES)}, not {value!r}")
    return value


def decide(ranking: Ranking, current: str, margin: float = DEFAULT_MARGIN
           ) -> tuple[str, float] | None:
    """``(winner, speedup)`` when the ranking's fastest is not ``current`` and is faster than
    it by at least ``margin`` (0.05: 5 %); else None. Without a figure for ``current`` (it was
    not measured, or failed in the measurement) there is nothing to beat by a margin: None."""
    if not ranking.order or current not in ranking.median_s:
        return None
    winner = ranking.order[0]
    if winner == current:
        return None
    speedup = ranking.median_s[current] / ranking.median_s[winner]
    return (winner, speedup) if speedup >= 1.0 + margin else None


class BackgroundTuner:
    """The background measurement of one session, in a daemon thread.

    ``result``: the ranking (:class:`unirt.evidence.timing.Ranking`) once measured or read from the
    cache; ``swapped``: whether the session was moved; ``outcome``: one line saying what
    happened (or why nothing did); ``error``: the exception that ended it, if one did.
    """

    def __init__(self, session: Session, info: ModelInfo, candidates: Sequence[str],
                 versions: Mapping[str, str | None], precision: str,
                 options: Mapping[str, Mapping[str, Any]],
                 shapes: Mapping[str, Sequence[int]] | None, tolerance: float | None,
                 margin: float, registry: Registry, nice: int) -> None:
        # A weak reference: a session the user dropped is not kept alive by its tuner.
        self._session = weakref.ref(session)
        self._info = info
        self._candidates = list(candidates)
        self._versions = dict(versions)
        self._precision = precision
        self._options = {k: dict(v) for k, v in options.items()}
        self._shapes = dict(shapes) if shapes else None
        self._tolerance = tolerance
        self._margin = margin
        self._registry = registry
        self._nice = nice
        self._open_options = session.options
        self._stop = threading.Event()
        self.result: Ranking | None = None
        self.swapped = False
        self.outcome = "running"
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"unirt-tune-{info.name}",
                                        daemon=True)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> BackgroundTuner:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the tuner to stop: a child in progress is killed within a quarter of a second;
        an engine being opened in this process finishes opening and is closed unused."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the tuner to end; whether it has."""
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __repr__(self) -> str:
        return f"<unirt.BackgroundTuner {self._info.name}: {self.outcome}>"

    # -- the thread --------------------------------------------------------------------------
    def _main(self) -> None:
        from unirt.process.isolation import Cancelled

        try:
            self.outcome = self._tune()
        except Cancelled:
            self.outcome = "stopped"
        except Exception as exc:  # never into the user's thread: the session runs on as it is
            if self._stop.is_set():  # closed meanwhile: its engines went with it, not an error
                self.outcome = "stopped"
                return
            self.error = exc
            self.outcome = f"failed: {type(exc).__name__}: {first_line(exc)}"
            logger.warning("unirt: background tuning of %s failed; it stays on its backend: "
                           "%s: %s", self._info.name, type(exc).__name__, first_line(exc),
                           exc_info=logger.isEnabledFor(logging.DEBUG))
        else:
            logger.debug("unirt: background tuning of %s: %s", self._info.name, self.outcome)

    def _tune(self) -> str:
        from unirt.evidence.timing import rank
        from unirt.evidence.verify import verify
        from unirt.process.isolation import worker_defaults

        session = self._session()
        if session is None or session.closed:
            return "stopped: the session was closed"
        current = session.backend
        del session  # hold no strong reference while measuring
        candidates = self._candidates
        if current not in candidates:  # the figure to beat
            candidates = [current, *candidates]
            self._versions.setdefault(
                current, self._registry.backend(current).available().version)
        with worker_defaults(nice=self._nice, cancel=self._stop):
            # Measured alongside the user's own work: kept as the default route's tuning result
            # only once this process agrees with it (below), never on the children's word.
            ranking = rank(self._info, candidates, self._versions, self._precision,
                           self._options, self._shapes, self._tolerance, keep=False)
            self.result = ranking
            if self._stop.is_set():
                return "stopped"
            choice = decide(ranking, current, self._margin)
            if choice is None:
                if ranking.winner == current and not ranking.cached:
                    self._keep(ranking)
                return f"stays on {current}: {self._why_not(ranking, current)}"
            winner, speedup = choice
            v = verify(self._info, winner, self._versions.get(winner), self._precision,
                       self._options.get(winner, {}), self._shapes, "auto", self._tolerance,
                       registry=self._registry)
        if not v.accepted:
            return f"stays on {current}: {winner} is faster but {v.describe()}"
        if self._stop.is_set():
            return "stopped"
        with worker_defaults(nice=self._nice, cancel=self._stop):  # a converter's child too
            impl: BackendSession | None = self._open(winner)
        try:
            if self._stop.is_set():
                return "stopped"
            session = self._session()
            if session is None or session.backend != current:
                return "stopped: the session was closed or moved meanwhile"
            assert impl is not None
            confirmed = self._confirm(session, impl)
            if confirmed is not None:
                return f"stays on {current}: {confirmed}"
            w_ms, c_ms = ranking.median_s[winner] * 1e3, ranking.median_s[current] * 1e3
            cached = " (cached ranking)" if ranking.cached else ""
            reason = (f"tuned in the background: {winner} {w_ms:.3g} ms vs {current} "
                      f"{c_ms:.3g} ms ({speedup:.2f}x){cached}, verified {v.result.summary()}")
            if not session.swap(winner, impl, RouteStep(winner, SWAPPED, reason), v,
                                 self._winner_options(winner)):
                return "stopped: the session was closed"
            impl = None  # the session owns it now
            self.swapped = True
            if not ranking.cached:
                self._keep(ranking)
            return f"swapped to {winner}: {reason}"
        finally:
            if impl is not None:
                impl.close()

    def _keep(self, ranking: Ranking) -> None:
        from unirt.evidence.timing import store

        store(self._info, ranking, self._precision, self._options, self._shapes,
              self._tolerance)

    def _winner_options(self, name: str) -> OpenOptions:
        base = self._open_options or OpenOptions(precision=self._precision)
        return OpenOptions(precision=self._precision, threads=base.threads, device=base.device,
                           extra=dict(self._options.get(name, {})))

    def _open(self, name: str) -> BackendSession:
        """Open the winner here (the measurement verified it in a child) and warm it up."""
        impl = self._registry.backend(name).open(self._info, self._winner_options(name))
        try:
            feeds, names = self._feeds()
            for _ in range(WARMUP_CALLS):
                impl.run(feeds, names)
        except BaseException:
            impl.close()
            raise
        return impl

    def _feeds(self) -> tuple[dict[str, Any], list[str]]:
        """The first set verification ran (the graph's hints applied), built here: what the
        two engines are timed on in this process."""
        from unirt.evidence.verify import feed_sets

        first = feed_sets(self._info, self._shapes)[2][0]
        return first.build(), [t.name for t in self._info.outputs]

    def _confirm(self, session: Session, new: BackendSession) -> str | None:
        """Time the current engine and the winner alternately in this process, where the user's
        work runs: the children's ranking on a busy machine is noisy (measured on 2 cores: one
        engine anywhere from 0.8 to 38 ms), and a swap must not trade a known engine for that
        noise. None when the winner holds its margin here; else why not."""
        import statistics
        import time

        from unirt.errors import SessionClosedError

        feeds, names = self._feeds()
        calls: dict[str, Any] = {
            # The current engine through the session: its calls are counted in flight, so a
            # close() meanwhile waits for them instead of freeing the engine under them.
            "old": lambda: session.run(feeds),
            "new": lambda: new.run(feeds, names)}
        times: dict[str, list[float]] = {"old": [], "new": []}
        try:
            for r in range(CONFIRM_ROUNDS):
                for key in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    calls[key]()  # the first call after the other engine: not timed
                    for _ in range(CONFIRM_CALLS):
                        start = time.perf_counter()
                        calls[key]()
                        times[key].append(time.perf_counter() - start)
                    if self._stop.is_set():
                        return "stopped"
        except SessionClosedError:
            return "the session was closed"
        old_s, new_s = statistics.median(times["old"]), statistics.median(times["new"])
        if old_s < new_s * (1 + self._margin):
            return (f"the winner is not faster by {self._margin:.0%} in this process "
                    f"({new_s * 1e3:.3g} ms vs {old_s * 1e3:.3g} ms)")
        return None

    def _why_not(self, ranking: Ranking, current: str) -> str:
        if current not in ranking.median_s:
            why = ranking.rejected.get(current, "not measured")
            return f"no figure for {current} to beat ({why})"
        if not ranking.order:
            return "no candidate passed"
        if ranking.order[0] == current:
            return f"it is the fastest that passes ({ranking.describe(current)})"
        return (f"{ranking.order[0]} is faster by less than {self._margin:.0%} "
                f"({ranking.describe(current)})")


def start_background(session: Session, info: ModelInfo, candidates: Sequence[str],
                     versions: Mapping[str, str | None], precision: str,
                     options: Mapping[str, Mapping[str, Any]],
                     shapes: Mapping[str, Sequence[int]] | None = None,
                     tolerance: float | None = None, margin: float = DEFAULT_MARGIN,
                     registry: Registry | None = None, *,
                     nice: int = DEFAULT_NICE) -> BackgroundTuner:
    """Start tuning ``session`` in the background; returns the running tuner (also
    ``session.tuner``).

    ``candidates``/``versions``: the available backends to measure and their engine versions
    (as ``prefer="fastest"`` ranks them; the session's own backend is added when missing, since
    it is the figure to beat). ``precision``, ``options``, ``shapes``, ``tolerance``: as given
    to ``load`` (they key the cached ranking and verdicts). ``margin``: how much faster the
    winner must be. ``nice``: the measurement children's added niceness.
    """
    from unirt.plugin.registry import get_registry

    if margin < 0:
        raise UnirtError(f"margin must be >= 0, not {margin!r}")
    tuner = BackgroundTuner(session, info, candidates, versions, precision, options, shapes,
                            tolerance, margin, registry or get_registry(), nice)
    session.keep_tuner(tuner)
    return tuner.start()
