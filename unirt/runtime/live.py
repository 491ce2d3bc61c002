"""Live verification: a session on an engine other than the reference keeps being checked after
load, on the inputs the application sends.

Verification at load runs generated or given inputs, and a model can pass there and be wrong on
real traffic: a quantized audio model whose sigmoid saturates on N(0,1) inputs agreed with the
reference at load and was 29 % off on the audio it was sent. So the first calls (default
:data:`DEFAULT_FIRST`, 8) and then one call in :data:`DEFAULT_EVERY` (100) are run again on the
reference, in a child process at a lower CPU priority, by a daemon thread: the caller never waits
for it. A call that is not sampled costs a counter and a comparison (:meth:`LiveCheck.observe`);
a sampled one costs a copy of its feeds and outputs (the caller may reuse its buffers) and a
non-blocking put on a short queue, and is dropped, and counted, when the queue is full.

A disagreement beyond the tolerance verification uses (the same rule:
:func:`unirt.evidence.agreement.tolerance`, the session's precision mode and ``tolerance=``) saves
the inputs where ``unirt compare MODEL --load-inputs DIR`` replays them, moves the session to the
reference between two calls (:meth:`unirt.Session.swap`: calls in flight finish on the old
engine), logs one WARNING on logger ``unirt`` saying all of that, and caches a REJECTED verdict
for these inputs (:func:`record_disagreement`). After that there is nothing left to compare and
the check stops.

What says nothing about the engine under test never swaps: the reference refusing the inputs,
crashing or timing out, or unirt failing to start its child. Such a sample is counted as
``unchecked`` and logged at INFO/DEBUG.

``load(verify_live=...)`` chooses; ``UNIRT_VERIFY_LIVE`` (``off``, ``on``, ``FIRST,EVERY``) sets
the default for a process. Sampling is by call number, so that what is checked is reproducible
from the call log; with calls from several threads at once, a sample can be missed or taken
twice, which a statistical check tolerates and a lock on every call would not be worth.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.errors import UnirtError, first_line
from unirt.runtime.live_setting import (
    _NEVER,
    DEFAULT_EVERY,
    DEFAULT_FIRST,
    LIVE_ENV,
    LiveMode,
    LiveSetting,
    resolve_setting,
)

if TYPE_CHECKING:  # pragma: no cover
    from unirt.evidence.probe import ProbeResult
    from unirt.evidence.verify import Verification
    from unirt.model.info import ModelInfo
    from unirt.plugin.registry import Registry
    from unirt.runtime.session import Session

logger = logging.getLogger("unirt")

#: Where the inputs of a disagreement are saved; default: ``live/`` under the cache root.
LIVE_DIR_ENV = "UNIRT_LIVE_DIR"
#: Sampled calls waiting for the reference; beyond it a sample is dropped (and counted), never
#: waited for. Each holds a copy of one call's feeds and outputs.
QUEUE_DEPTH = 4
#: Niceness added to the reference's child (as the background tuner's: about a tenth of a busy
#: CPU against the user's work, all of an idle one).
DEFAULT_NICE = 10
#: How long the thread waits for itself to stop in :meth:`LiveCheck.close` (the child is killed
#: within a quarter of a second; an engine being opened in this process cannot be interrupted).
STOP_WAIT = 30.0


# -- the verdict on the inputs that showed the disagreement ---------------------------------------
def disagreement_key(info: ModelInfo, backend: str, version: str | None, precision: str,
                     options: Mapping[str, Any], feeds: Mapping[str, Any],
                     tolerance: float | None = None) -> str:
    """The cache key of a verdict on these very inputs: the key ``load(inputs=)`` verifies under
    for this one input set (:func:`unirt.evidence.operating.inputs_digest`), so a load given the
    saved inputs finds the disagreement (a verdict on one recording says nothing about another)."""
    from unirt.evidence.operating import inputs_digest
    from unirt.evidence.verify import verdict_key

    shapes = [{k: tuple(np.shape(v)) for k, v in feeds.items()}]
    return verdict_key(info, backend, version, precision, options, shapes, tolerance, None,
                inputs_digest([feeds]))


def record_disagreement(info: ModelInfo, backend: str, version: str | None, precision: str,
                        options: Mapping[str, Any], feeds: Mapping[str, Any],
                        result: ProbeResult, tolerance: float | None = None) -> Verification:
    """Cache a REJECTED verdict on ``backend`` for ``feeds``, so that a load verifying on
    those inputs does not trust the engine again (a wrong answer is about the engine: cached
    like one verification found). Returns it."""
    from unirt.evidence.verify import Verification, VerifyStatus, store

    key = disagreement_key(info, backend, version, precision, options, feeds, tolerance)
    verdict = Verification(VerifyStatus.REJECTED, result, False, key)
    store(verdict, info, backend, version, precision)
    return verdict


def known_disagreement(info: ModelInfo, backend: str, version: str | None, precision: str,
                       options: Mapping[str, Any], feeds: Mapping[str, Any],
                       tolerance: float | None = None) -> Verification | None:
    """The verdict :func:`record_disagreement` cached for these inputs, or None (a lookup)."""
    from unirt.evidence.verify import cached_verdict
    from unirt.store.cache import ArtifactCache

    return cached_verdict(ArtifactCache(), disagreement_key(info, backend, version, precision,
                                                     options, feeds, tolerance))


def live_dir() -> Path:
    """Where the inputs of disagreements go: ``UNIRT_LIVE_DIR``, else ``live/`` under the cache
    root (:func:`unirt.store.cache.cache_dir`)."""
    given = os.environ.get(LIVE_DIR_ENV)
    if given:
        return Path(given).expanduser()
    from unirt.store.cache import cache_dir

    return cache_dir() / "live"


# -- the check --------------------------------------------------------------------------------
@dataclass
class _Sample:
    call: int
    backend: str
    feeds: dict[str, Any]
    outputs: dict[str, Any]


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else copy.deepcopy(value)


_STOP = object()


class LiveCheck:
    """The live verification of one session (``Session.live``), run by a daemon thread.

    Figures: ``checked`` against the reference, of which ``agreed`` and
    ``disagreed``; ``dropped`` (the queue was full), ``unchecked`` (the reference could not
    answer: it says nothing about the engine); ``last_disagreement`` (one line) and ``saved``
    (the folder of its inputs); ``swapped`` once the session was moved to the reference.
    """

    def __init__(self, session: Session, registry: Registry, reference: str, precision: str,
                 tolerance: float | None, options: Mapping[str, Mapping[str, Any]],
                 first: int = DEFAULT_FIRST, every: int = DEFAULT_EVERY,
                 depth: int = QUEUE_DEPTH, nice: int = DEFAULT_NICE,
                 timeout: float | None = None) -> None:
        # A weak reference: a session the user dropped is not kept alive by its check.
        self._session = weakref.ref(session)
        self._info = session.model
        self._registry = registry
        self._reference = reference
        self._precision = precision
        self._tolerance = tolerance
        self._options = {k: dict(v) for k, v in options.items()}
        self._open_options = session.options
        self.first, self.every = first, every
        self._every = every or _NEVER
        self._nice = nice
        self._timeout = timeout
        self._count = itertools.count(1)
        # Every one of the first calls fits: an application calling back to back must not
        # have its first answers dropped while the reference child starts.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, first))
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the figures the callers' threads write: dropped
        self.checked = self.agreed = self.disagreed = self.dropped = self.unchecked = 0
        self.last_disagreement: str | None = None
        self.saved: Path | None = None
        self.swapped = False
        self._thread = threading.Thread(target=self._main, name=f"unirt-live-{self._info.name}",
                                        daemon=True)
        # Stops the thread when the session is collected or at interpreter exit; the child goes
        # with the Worker's own finalizer.
        self._finalizer = weakref.finalize(session, _shutdown, self._stop, self._queue)

    # -- the caller's side -------------------------------------------------------------------
    def observe(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        """Called by ``Session.run`` after each engine call that returned. Unsampled: a counter
        and a comparison. Sampled: a copy and a put that never blocks."""
        n = next(self._count)
        if n > self.first and n % self._every:
            return
        self._sample(n, feeds, outputs)

    def rewind(self) -> None:
        """Count calls from one again: calls the library made itself (the serving plan's timing
        on generated rows) must not use up the first calls, which are the application's."""
        self._count = itertools.count(1)

    def _sample(self, n: int, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        session = self._session()
        if session is None or self._stop.is_set():
            return
        backend = session.backend
        del session
        if backend == self._reference:  # moved to the reference meanwhile (a tuner)
            self._stop_checking(None)
            return
        sample = _Sample(n, backend, {k: _copy(v) for k, v in feeds.items()},
                         {k: _copy(v) for k, v in outputs.items()})
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    # -- control -----------------------------------------------------------------------------
    def start(self) -> LiveCheck:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the check to stop: the reference's child is killed within a quarter of a
        second; a swap in progress finishes."""
        _shutdown(self._stop, self._queue)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; whether it has."""
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = STOP_WAIT) -> None:
        """Stop the thread and its child (``Session.close`` calls it)."""
        self.stop()
        self._finalizer.detach()
        if not self.wait(timeout):
            logger.warning("unirt: the live check of %s did not stop within %g s",
                           self._info.name, timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def describe(self) -> str:
        """One line: what was checked and what came of it."""
        rate = f"first {self.first}, then 1 in {self.every}" if self.every else \
            f"first {self.first}"
        text = (f"live check ({rate}): {self.checked} checked, {self.agreed} agreed, "
                f"{self.disagreed} disagreed, {self.dropped} dropped, "
                f"{self.unchecked} unchecked")
        if self.last_disagreement:
            text += f"; last disagreement: {self.last_disagreement}"
        return text

    def __repr__(self) -> str:
        return f"<unirt.LiveCheck {self._info.name}: {self.describe()}>"

    def _stop_checking(self, session: Session | None) -> None:
        """Nothing more to compare: the hot path stops calling in, the thread ends."""
        session = session if session is not None else self._session()
        if session is not None:
            session.unwatch(self)
        self.stop()

    # -- the thread --------------------------------------------------------------------------
    def _main(self) -> None:
        from unirt.evidence.child_ops import new_state
        from unirt.process.isolation import Cancelled, Worker

        worker = Worker(new_state, nice=self._nice, cancel=self._stop)
        opened = False
        try:
            while not self._stop.is_set():
                sample = self._queue.get()
                if sample is _STOP or self._stop.is_set():
                    break
                opened = self._check(worker, sample, opened)
        except Cancelled:
            pass
        except Exception as exc:  # never into the user's thread: the session runs on as it is
            if not self._stop.is_set():
                logger.warning("unirt: the live check of %s failed and stopped: %s: %s",
                               self._info.name, type(exc).__name__, first_line(exc),
                               exc_info=logger.isEnabledFor(logging.DEBUG))
        finally:
            worker.close()
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _call_timeout(self) -> float:
        from unirt.evidence.verify import verify_timeout

        if self._timeout is not None:
            return self._timeout
        return verify_timeout()

    def _check(self, worker: Any, sample: _Sample, opened: bool) -> bool:
        """Run one sample on the reference and judge it; whether the reference's session is
        still open in the child afterwards."""
        from unirt.errors import HarnessError
        from unirt.evidence.child_ops import open_session, run_feeds
        from unirt.process.isolation import ERROR

        timeout = self._call_timeout()
        if not opened:
            try:
                spec = self._registry.spec()
            except HarnessError:  # a plugin that cannot travel: the reference is a built-in
                spec = None
            out = worker.call(open_session, self._info.source(), self._reference, "exact", {},
                              None, spec, timeout=timeout)
            if not out.ok:
                self._unchecked(sample, f"the reference could not open the model: "
                                        f"{out.describe()}")
                if out.status == ERROR:  # its own answer: nothing will be compared, ever
                    self._stop_checking(None)
                return False
        out = worker.call(run_feeds, sample.feeds, 1, list(sample.outputs), True,
                          timeout=timeout)
        if not out.ok:
            self._unchecked(sample, f"the reference could not run the inputs: {out.describe()}")
            return out.status == ERROR  # a refusal leaves the session; a crash takes it
        self._judge(sample, out.value["outputs"])
        return True

    def _unchecked(self, sample: _Sample, why: str) -> None:
        self.unchecked += 1
        logger.info("unirt: live check of %s on %s, call %d: not checked (%s)",
                    self._info.name, sample.backend, sample.call, why)

    def _judge(self, sample: _Sample, reference: Mapping[str, Any]) -> None:
        from unirt.evidence.agreement import diff, for_output, tolerance, within

        self.checked += 1
        worst: tuple[float, str, str] | None = None
        for name, ref in reference.items():
            got = sample.outputs.get(name)
            d = diff(name, got, ref)
            tol = tolerance(self._precision, np.asarray(ref), for_output(self._tolerance, name),
                            None)
            if d.problem or not within(got, ref, *tol):
                text = d.problem or (f"max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g} "
                                     f"(atol {tol[0]:.3g}, rtol {tol[1]:.3g})")
                if worst is None or d.max_abs > worst[0]:
                    worst = (d.max_abs, name, text)
        if worst is None:
            self.agreed += 1
            return
        self.disagreed += 1
        self._disagree(sample, worst[1], worst[2])

    def _disagree(self, sample: _Sample, output: str, text: str) -> None:
        """Save the inputs, move the session to the reference, say so, cache the verdict."""
        from unirt.evidence.probe import FAIL, ProbeResult

        what = f"call {sample.call}: output {output} {text}"
        self.last_disagreement = what
        folder, saved_why = self._save(sample)
        self.saved = folder
        session = self._session()
        swapped = "" if session is None else self._swap(session, sample.backend, what)
        replay = "" if folder is None else (f"; inputs saved in {folder}; replay with: "
                                            f"{self._replay(sample.backend, folder)}")
        logger.warning("unirt: %s on %s disagrees with the reference (%s) on live inputs, "
                       "%s%s%s", self._info.name, sample.backend, self._reference, what,
                       swapped, replay or f"; {saved_why}")
        result = ProbeResult(sample.backend, FAIL, f"wrong numbers on live inputs: {what}",
                             shapes=[", ".join(f"{k}={'x'.join(map(str, np.shape(v)))}"
                                               for k, v in sample.feeds.items())])
        try:
            version = self._registry.backend(sample.backend).available().version
            record_disagreement(self._info, sample.backend, version, self._precision,
                                self._options.get(sample.backend, {}), sample.feeds, result,
                                self._tolerance)
        except Exception as exc:  # the swap stands; only the memory of it is lost
            logger.info("unirt: the live verdict on %s for %s was not cached: %s: %s",
                        sample.backend, self._info.name, type(exc).__name__, first_line(exc))
        self._stop_checking(session)

    def _save(self, sample: _Sample) -> tuple[Path | None, str]:
        import tempfile

        from unirt.evidence.input_files import save_inputs

        try:
            base = live_dir()
            base.mkdir(parents=True, exist_ok=True)
            stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in
                           f"{Path(self._info.name).stem}-{sample.backend}-"
                           f"{time.strftime('%Y%m%d-%H%M%S')}-call{sample.call}-")
            folder = Path(tempfile.mkdtemp(prefix=stem, dir=base))
            save_inputs(folder, sample.feeds)
        except (OSError, UnirtError) as exc:
            return None, f"the inputs could not be saved: {first_line(exc)}"
        return folder, ""

    def _replay(self, backend: str, folder: Path) -> str:
        import shlex

        model = str(self._info.path) if self._info.path is not None else self._info.name
        words = ["unirt", "compare", model, "--load-inputs", str(folder), "--backends", backend]
        if self._precision != "exact":
            words += ["--precision", self._precision]
        if self._tolerance is not None:
            words += ["--atol", f"{self._tolerance:g}"]
        return " ".join(shlex.quote(w) for w in words)

    def _swap(self, session: Session, backend: str, what: str) -> str:
        """Open the reference here and move the session to it; the text the warning adds."""
        from unirt.plugin.backend import OpenOptions
        from unirt.plugin.route import SWAPPED, RouteStep

        name = self._reference
        if self._stop.is_set():
            return "; the session was closed meanwhile"
        base = self._open_options or OpenOptions(precision=self._precision)
        options = OpenOptions(precision=self._precision, threads=base.threads,
                              device=base.device, extra=dict(self._options.get(name, {})),
                              input_shapes=dict(base.input_shapes))
        try:
            impl = self._registry.backend(name).open(self._info, options)
        except Exception as exc:
            return (f"; it stays on {backend}: the reference could not be opened here "
                    f"({type(exc).__name__}: {first_line(exc)})")
        reason = f"live check: {backend} disagreed with the reference on {what}"
        if not session.swap(name, impl, RouteStep(name, SWAPPED, reason)):
            impl.close()
            return "; the session was closed meanwhile"
        self.swapped = True
        return f"; the session now runs on {name}"


def _shutdown(stop: threading.Event, waiting: queue.Queue[Any]) -> None:
    stop.set()
    with contextlib.suppress(queue.Full):  # not waiting: it sees the event after its sample
        waiting.put_nowait(_STOP)


def start(session: Session, registry: Registry, setting: LiveSetting, precision: str,
          tolerance: float | None, options: Mapping[str, Mapping[str, Any]],
          reference: str | None = None) -> LiveCheck | None:
    """Start checking ``session`` live (``Session.live``); ``precision`` is the mode
    (``exact``/``fast``) and ``tolerance`` the figure it was loaded with, as verification
    judges them; ``options`` the per-backend options of ``load``. None, with nothing started,
    when no reference is registered (its plugin disabled): there is nothing to compare with,
    and the session the caller already holds must not be lost to an error here."""
    reference = reference or registry.reference
    if reference is None:
        logger.info("unirt: no live check of %s: no reference backend is registered",
                    session.model.name)
        return None
    check = LiveCheck(session, registry, reference, precision, tolerance, options,
                      setting.first, setting.every)
    session.watch(check)
    return check.start()


__all__: Sequence[str] = ("DEFAULT_EVERY", "DEFAULT_FIRST", "LIVE_DIR_ENV", "LIVE_ENV",
                          "LiveCheck", "LiveMode", "LiveSetting", "disagreement_key",
                          "known_disagreement", "record_disagreement", "resolve_setting", "start")
