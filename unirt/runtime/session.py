"""Session: what a user holds after ``unirt.load``, the same whichever engine is underneath.

``run`` checks feeds against metadata compiled once at load time (names, dtypes, ranks, static
dims), so a bad feed gets an error naming the input, what was expected and what was given,
before the engine sees it, and a good call pays a few microseconds on top of the engine call.
No hooks, no logging and no model reading happen per call.

The engine can be replaced while the session is in use (``tune="background"``: a faster engine
that was verified on the model). Everything that goes with an engine (backend name, engine
session, precision, verification, options) lives in one :class:`_Engine` referenced by one
attribute, so ``run`` reads it once and never sees a backend name from one engine and a session
from another; each engine counts its calls in flight, so the one replaced is closed when its
last call returns, never under a call.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from unirt.errors import (
    BackendError,
    InputError,
    OutputError,
    SessionClosedError,
    ShapeLimitError,
    UnirtError,
    first_line,
)
from unirt.plugin.route import SWAPPED, RouteStep, render_route
from unirt.tensor import TensorInfo, is_static

if TYPE_CHECKING:  # pragma: no cover
    from unirt.model.info import ModelInfo
    from unirt.plugin.backend import BackendSession, OpenOptions

logger = logging.getLogger("unirt")


class Tuner(Protocol):
    """What a session holds of its background tuner (:class:`unirt.runtime.tuning.BackgroundTuner`):
    a protocol, because the tuner is built on the session (it swaps engines under it), not the
    session on the tuner."""

    @property
    def result(self) -> Any: ...

    @property
    def swapped(self) -> bool: ...

    def stop(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

#: How long ``close`` waits for a stopped background tuner (its children die within a fraction of
#: a second; an engine being opened in this process cannot be interrupted).
_TUNER_STOP_WAIT = 30.0

class CallObserver(Protocol):
    """What watches a session's calls (the live check of :mod:`unirt.runtime.live`): ``observe``
    runs after every call that returned, on the caller's thread, so it must cost next to nothing;
    ``stop`` ends the watching (at ``close``, or when another observer takes over)."""

    def observe(self, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> None: ...

    def stop(self) -> None: ...


#: ``reroute(failed_backend, shape_text, reason) -> (backend name, BackendSession)``
Reroute = Callable[[str, str, str], "tuple[str, BackendSession]"]


class _InputCheck:
    """A feed's expectations, compiled once: dtype, rank, and the (axis, size) of static dims."""

    __slots__ = ("dtype", "info", "name", "rank", "static")

    def __init__(self, info: TensorInfo) -> None:
        self.info = info
        self.name = info.name
        self.dtype = info.dtype
        self.rank = None if info.shape is None else len(info.shape)
        # is_static, not isinstance(int): a -1 left in a hand-built TensorInfo is dynamic.
        self.static = tuple(
            (axis, d) for axis, d in enumerate(info.shape or ()) if is_static(d)
        )

    def coerce(self, value: Any) -> np.ndarray:
        """Turn a list or scalar into an array of the declared dtype when that is unambiguous."""
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, (bool, int, float, complex, str, bytes, list, tuple)):
            try:
                arr = np.asarray(value)
            except Exception as exc:
                raise InputError(
                    f"input {self.name!r}: cannot make an array from the given "
                    f"{type(value).__name__} ({first_line(exc)})"
                ) from exc
            if arr.dtype == object:
                raise InputError(f"input {self.name!r}: a ragged or mixed {type(value).__name__} "
                                 "is not a tensor")
            if arr.size and not np.can_cast(arr.dtype, self.dtype, casting="same_kind") and not (
                arr.dtype.kind in "iub" and self.dtype.kind in "iuf"
            ):
                raise InputError(
                    f"input {self.name!r}: expected {self.dtype}, got a "
                    f"{type(value).__name__} of {arr.dtype} values"
                )
            return arr.astype(self.dtype, copy=False)
        raise InputError(
            f"input {self.name!r}: expected a numpy array of {self.dtype}, "
            f"got {type(value).__name__}"
        )

    def fail(self, value: np.ndarray) -> InputError:
        """The error for an array that failed the fast checks (built only on failure)."""
        want = self.info.describe().split(": ", 1)[1]
        got = f"{value.dtype}[{','.join(map(str, value.shape))}]"
        if value.dtype != self.dtype:
            hint = f"; convert with .astype(np.{self.dtype})" if self.dtype is not None else ""
            return InputError(f"input {self.name!r}: expected dtype {self.dtype}, got "
                              f"{value.dtype} (expected {want}, got {got}){hint}")
        if self.rank is not None and value.ndim != self.rank:
            return InputError(f"input {self.name!r}: expected rank {self.rank} ({want}), "
                              f"got rank {value.ndim} ({got})")
        for axis, size in self.static:
            if value.shape[axis] != size:
                return InputError(f"input {self.name!r}: dimension {axis} must be {size} "
                                  f"(expected {want}, got {got})")
        return InputError(f"input {self.name!r}: expected {want}, got {got}")


class Precision(str):
    """The effective precision, a ``str`` (``"bf16"``) that also carries the measured error.

    ``max_abs``: output name -> max abs error against ONNX Runtime CPU, measured when the model
    was verified on this backend (empty when it was not: the reference itself, ``verify="never"``).
    """

    max_abs: dict[str, float]
    #: What the error was measured on (``your inputs (3 sets, 1a2b…)``, ``generated inputs
    #: (x=1x3x32x32)``) and, when that could not show a difference, why (``weak``).
    measured_on: str
    weak: str

    def __new__(cls, value: str, max_abs: Mapping[str, float] | None = None,
                measured_on: str = "", weak: str = "") -> Precision:
        obj = super().__new__(cls, value)
        obj.max_abs = dict(max_abs or {})
        obj.measured_on, obj.weak = measured_on, weak
        return obj

    def describe(self) -> str:
        """``bf16, max abs error 1.6 on output0, measured on your inputs (3 sets, 1a2b…)`` —
        what to read before shipping."""
        if not self.max_abs:
            return str(self)
        name, err = max(self.max_abs.items(), key=lambda kv: kv[1])
        on = f", measured on {self.measured_on}" if self.measured_on else ""
        weak = f" ({self.weak})" if self.weak else ""
        return f"{self}, max abs error {err:.2g} on {name}{on}{weak}"


class _Engine:
    """One engine session and the facts that go with it, swapped as a whole.

    The facts (``backend``, ``impl``, ``precision``, ``verification``, ``options``) never change
    after construction. ``calls`` holds one entry per call in flight: ``deque.append`` and
    ``pop`` are atomic under the GIL and cost tens of nanoseconds, where a lock would cost a few
    hundred. ``retired`` is set once, when the session stops sending new calls here (a swap or
    ``close``). A caller appends, then checks ``retired``; the retirer sets ``retired``, then
    checks ``calls``: whichever comes second sees the other, so the engine is closed exactly
    when the last call that reached it has returned (:meth:`close` runs at most once).
    """

    __slots__ = ("_closed", "backend", "calls", "impl", "options", "precision", "retired",
                 "verification")

    _close_lock = threading.Lock()  # the slow path only: closing a retired engine

    def __init__(self, backend: str, impl: BackendSession, verification: Any,
                 options: OpenOptions | None) -> None:
        self.backend = backend
        self.impl = impl
        self.verification = verification
        self.options = options
        r = verification.result if verification is not None else None
        self.precision = Precision(impl.precision, r.max_abs if r is not None else {},
                                   r.evidence if r is not None else "",
                                   r.weak if r is not None else "")
        self.calls: deque[None] = deque()
        self.retired = False
        self._closed = False

    def leave(self) -> None:
        """A call on this engine has returned: close it if it was the last on a retired one."""
        self.calls.pop()
        if self.retired and not self.calls:
            self.close()

    def retire(self) -> None:
        """No new call comes here any more: close now if none is in flight, else at the last."""
        self.retired = True
        if not self.calls:
            self.close()

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.impl.close()
        except Exception as exc:  # an engine that fails to free itself must not fail run()
            logger.warning("unirt: closing the %s engine session failed: %s: %s", self.backend,
                           type(exc).__name__, first_line(exc))


class Session:
    """A model opened on one backend. Create it with :func:`unirt.load`.

    Thread safety is the engine's: ONNX Runtime and OpenVINO sessions may be run from several
    threads; backends whose engines are not thread-safe lock inside their ``run``.
    """

    def __init__(
        self,
        model: ModelInfo,
        backend: str,
        impl: BackendSession,
        route: Sequence[RouteStep] = (),
        options: OpenOptions | None = None,
        reroute: Reroute | None = None,
        fail_over: Reroute | None = None,
        verification: Any = None,
        guard: Any = None,
    ) -> None:
        self.model = model
        #: crashguard.Marker held until the first call returns (see unirt.runtime.crashguard)
        self._guard = guard
        self._engine: _Engine | None = _Engine(backend, impl, verification, options)
        self._tuner: Tuner | None = None
        # The live check (unirt.runtime.live): ``_live`` is what ``run`` calls, None once checking
        # stopped; ``_live_check`` keeps its figures for ``live``.
        self._live: CallObserver | None = None
        self._live_check: Any = None
        self._route = route if isinstance(route, list) else list(route)
        self._reroute = reroute
        # An engine error on a call (not a shape limit, not the caller's input): the session
        # moves to what this opens, the reference first (None: backend=, which never moves).
        self._fail_over = fail_over
        # Input-shape signature -> (backend, engine session) for shapes the chosen engine
        # refused at run time (ShapeLimitError) and another candidate took.
        self._by_shape: dict[tuple, tuple[str, BackendSession]] = {}
        self._fallback_lock = threading.Lock()
        self._inputs = model.inputs
        self._outputs = model.outputs
        self._checks = {t.name: _InputCheck(t) for t in model.inputs}
        self._output_names = tuple(t.name for t in model.outputs)
        self._output_set = frozenset(self._output_names)
        self._close_lock = threading.Lock()
        # The facts of the last engine, for description after close().
        self._last: _Engine = self._engine

    def _current(self) -> _Engine:
        engine = self._engine
        return self._last if engine is None else engine

    # -- description -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """The name of the backend running the model, e.g. ``"onnxruntime"`` (after a background
        swap, the new one: the route says when and why)."""
        return self._current().backend

    @property
    def options(self) -> OpenOptions | None:
        """The options the running engine was opened with."""
        return self._current().options

    @property
    def verification(self) -> Any:
        """The verification verdict the running engine was opened on (``None``: the reference,
        or ``verify="never"``)."""
        return self._current().verification

    @property
    def _impl(self) -> BackendSession | None:
        """The running engine session (None once closed); tests and benchmarks reach in."""
        engine = self._engine
        return None if engine is None else engine.impl

    @property
    def tuner(self) -> Tuner | None:
        """The background tuner of ``tune="background"`` (its ``result``, ``swapped``), or
        None when the session was not opened with one."""
        return self._tuner

    def keep_tuner(self, tuner: Tuner) -> None:
        """Hold ``tuner`` as this session's background tuner, stopping the one held before;
        :meth:`close` stops it."""
        previous, self._tuner = self._tuner, tuner
        if previous is not None:
            previous.stop()

    @property
    def live(self) -> Any:
        """The live check of this session (a :class:`unirt.runtime.live.LiveCheck`: sampled calls
        run again on the reference, a disagreement moves the session there), or None when it has
        none."""
        return self._live_check

    def watch(self, observer: CallObserver) -> None:
        """Have ``observer`` see every call from now on (it becomes :attr:`live`); one that
        watched before is stopped."""
        previous, self._live_check = self._live_check, observer
        self._live = observer
        if previous is not None and previous is not observer:
            previous.stop()

    def unwatch(self, observer: CallObserver) -> None:
        """``observer`` sees no more calls (its figures stay readable on :attr:`live`)."""
        if self._live is observer:
            self._live = None

    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def route(self) -> tuple[RouteStep, ...]:
        """Every backend considered, in order, with outcome and reason (run-time fallbacks too)."""
        return tuple(self._route)

    @property
    def details(self) -> dict[str, Any]:
        """How the engine runs the model (providers, device), as the backend reports it."""
        engine = self._engine
        return dict(engine.impl.details) if engine is not None else {}

    @property
    def precision(self) -> Precision:
        """The precision the engine actually computes in (``"fp32"``, ``"bf16"``...), with the
        error verification measured against the reference (``.max_abs`` per output)."""
        return self._current().precision

    @property
    def closed(self) -> bool:
        return self._engine is None

    def explain(self) -> str:
        """Why this backend: the route as text, and what the engine reports about itself."""
        engine = self._current()
        lines = [f"model: {self.model.name}", f"backend: {engine.backend}",
                 f"precision: {engine.precision.describe()}", "route:",
                 render_route(self._route)]
        details = dict(engine.impl.details) if self._engine is not None else {}
        for key, value in details.items():
            lines.append(f"{key}: {value}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<unirt.Session {self.model.name} on {self.backend}{state}>"

    # -- running -----------------------------------------------------------------------------
    def run(
        self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model. Returns ``{output name: array}`` in model order (or ``outputs`` order).

        Raises :class:`InputError` for a feed that does not match the model, :class:`OutputError`
        for an unknown output name, :class:`BackendError` when the engine fails.
        """
        if self._engine is None:
            raise SessionClosedError(f"session for {self.model.name} is closed")
        checked = self.check_feeds(feeds)
        if outputs is None:
            names: Sequence[str] = self._output_names
        else:
            if isinstance(outputs, str):
                outputs = (outputs,)
            for name in outputs:
                if name not in self._output_set:
                    raise OutputError(f"{name!r} is not an output of {self.model.name}; "
                                      f"outputs: {', '.join(self._output_names)}")
            names = outputs
        # Read the engine once, count the call on it, then check that it was not retired in
        # between (a swap or close); see _Engine for why this never runs on a closed engine.
        while True:
            engine = self._engine
            if engine is None:
                raise SessionClosedError(f"session for {self.model.name} is closed")
            calls = engine.calls
            calls.append(None)
            if not engine.retired:
                break
            engine.leave()  # swapped or closed meanwhile: take the new one (or fail)
        failed: BackendError | None = None
        try:
            results = engine.impl.run(checked, names)
        except ShapeLimitError as exc:
            return self._run_elsewhere(engine.backend, checked, names, exc)
        except (InputError, OutputError, SessionClosedError):
            raise
        except BackendError as exc:
            if self._fail_over is None:
                raise
            failed = exc
        except UnirtError:
            raise
        except Exception as exc:
            if self._fail_over is None:
                raise self._engine_failure(engine.backend, exc) from exc
            failed = self._engine_failure(engine.backend, exc)
        finally:
            calls.pop()
            if engine.retired and not calls:
                engine.close()
        if failed is not None:
            return self._take_over(engine, checked, names, failed)
        if self._guard is not None:
            self._first_answer()
        result = dict(zip(names, results))
        live = self._live
        if live is not None:
            live.observe(checked, result)
        return result

    def _first_answer(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.passed()

    def _engine_failure(self, backend: str, exc: Exception) -> BackendError:
        return BackendError(f"{backend} failed running {self.model.name}: "
                            f"{type(exc).__name__}: {first_line(exc)}")

    def _run_elsewhere(self, backend: str, feeds: dict[str, Any], names: Sequence[str],
                       limit: ShapeLimitError) -> dict[str, np.ndarray]:
        """Run-time fallback: a shape ``backend`` cannot take goes to the next candidate that can
        open the model (once per shape signature; recorded on the route; warned once).

        The shape's engine is kept across a swap: it was routed because an earlier engine
        refused the shape, and it still runs it right; the new engine is asked first anyway,
        and only a shape it refuses too comes here."""
        key = tuple((n, getattr(a, "shape", None)) for n, a in feeds.items())
        shape = ", ".join(f"{n}={'x'.join(map(str, s or ()))}" for n, s in key)
        with self._fallback_lock:
            entry = self._by_shape.get(key)
            if entry is None:
                if self._reroute is None:  # backend= never falls back
                    raise limit
                if self._engine is None:
                    raise SessionClosedError(f"session for {self.model.name} is closed")
                entry = self._reroute(backend, shape, str(limit))
                if not self._by_shape:
                    logger.warning("unirt: %s cannot run %s at %s (%s); running that shape on %s",
                                   backend, self.model.name, shape, limit, entry[0])
                self._by_shape[key] = entry
        name, impl = entry
        try:
            results = impl.run(feeds, names)
        except UnirtError:
            raise
        except Exception as exc:
            raise self._engine_failure(name, exc) from exc
        return dict(zip(names, results))

    def _take_over(self, engine: _Engine, feeds: dict[str, Any], names: Sequence[str],
                   failure: BackendError) -> dict[str, np.ndarray]:
        """A routed engine raised running this call: open what the route gives next (the
        reference first), run the call there, and move the session to it for good (calls in
        flight finish where they are). The engine's own error is raised when nothing takes the
        call: an input that no engine takes is the caller's to fix, and says so."""
        from unirt.evidence.operating import shape_text

        shape = shape_text({n: getattr(a, "shape", ()) for n, a in feeds.items()})
        assert self._fail_over is not None
        with self._fallback_lock:
            current = self._engine
            if current is None:
                raise SessionClosedError(f"session for {self.model.name} is closed")
            if current is not engine:  # another call moved the session on meanwhile
                name, impl = current.backend, current.impl
                moved = False
            else:
                try:
                    name, impl = self._fail_over(engine.backend, shape, first_line(failure))
                except UnirtError:
                    raise failure from None
                moved = True
            try:
                results = impl.run(feeds, names)
            except Exception as exc:
                if moved:
                    impl.close()
                raise failure from exc
            if moved:
                reason = (f"{engine.backend} failed at run time at {shape}: "
                          f"{first_line(failure)}")
                self.swap(name, impl, RouteStep(name, SWAPPED, reason))
                logger.warning("unirt: %s failed running %s at %s (%s); the session now runs "
                               "on %s", engine.backend, self.model.name, shape,
                               first_line(failure), name)
        return dict(zip(names, results))

    def __call__(self, *args: Any, **feeds: Any) -> Any:
        """``sess(x)`` for a single-input model (returns the array, or a dict for several outputs);
        ``sess(name=x, ...)`` for named feeds (returns the dict)."""
        if args:
            if feeds or len(args) != 1:
                raise InputError("call a session with one positional array, or with name=array")
            if len(self._inputs) != 1:
                raise InputError(
                    f"{self.model.name} has {len(self._inputs)} inputs "
                    f"({', '.join(self._checks)}); use run({{name: array}}) or name=array"
                )
            result = self.run({self._inputs[0].name: args[0]})
            return next(iter(result.values())) if len(result) == 1 else result
        return self.run(feeds)

    def check_feeds(self, feeds: Mapping[str, Any], label: str | None = None
                    ) -> dict[str, Any]:
        """``feeds`` checked against the inputs; errors name the model as ``label`` (a server's
        name for it) or its file."""
        checks = self._checks
        label = label or self.model.name
        if not isinstance(feeds, Mapping):
            raise InputError(f"feeds must be a dict of input name -> array, "
                             f"got {type(feeds).__name__}")
        checked = {}
        for name, value in feeds.items():
            check = checks.get(name)
            if check is None:
                raise InputError(f"{name!r} is not an input of {label}; "
                                 f"inputs: {', '.join(checks) or 'none'}")
            if check.dtype is None:  # sequences, optionals: the engine checks them
                checked[name] = value
                continue
            if type(value) is not np.ndarray:
                value = check.coerce(value)
            if value.dtype != check.dtype or (check.rank is not None and value.ndim != check.rank):
                raise check.fail(value)
            shape = value.shape
            for axis, size in check.static:
                if shape[axis] != size:
                    raise check.fail(value)
            if not value.flags.c_contiguous:
                value = np.ascontiguousarray(value)
            checked[name] = value
        if len(checked) != len(checks):
            missing = [n for n in checks if n not in checked]
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''} "
                             f"{', '.join(map(repr, missing))} for {label}; "
                             f"expected: {', '.join(c.info.describe() for c in checks.values())}")
        return checked

    # -- lifetime ----------------------------------------------------------------------------
    def swap(self, backend: str, impl: BackendSession, step: RouteStep,
             verification: Any = None, options: OpenOptions | None = None) -> bool:
        """Run every later call on ``impl`` (opened and verified by the caller, the background
        tuner). Calls in flight finish on the old engine, which is closed after the last of
        them. Records ``step`` on the route and logs it once. Returns False, touching nothing,
        when the session was closed meanwhile: the caller then closes ``impl``."""
        new = _Engine(backend, impl, verification, options)
        with self._close_lock:
            old = self._engine
            if old is None:
                return False
            self._engine = self._last = new
            self._route.append(step)
            guard, self._guard = self._guard, None
        if guard is not None:  # it guarded the old engine's first answer, which never came
            guard.release()
        old.retire()
        logger.info("unirt: %s now runs on %s in place of %s: %s", self.model.name, backend,
                    old.backend, step.reason)
        return True

    def close(self) -> None:
        """Free the engine session (after calls in flight on it return) and stop a background
        tuner and the live check, killing their child processes. Idempotent; ``run`` after
        ``close`` raises."""
        tuner = self._tuner
        if tuner is not None:
            tuner.stop()
        live, self._live = self._live_check, None
        if live is not None:
            live.stop()
        with self._close_lock:
            engine, self._engine = self._engine, None
            others, self._by_shape = list(self._by_shape.values()), {}
        if engine is not None:
            engine.retire()
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.release()
        for _, other in others:
            other.close()
        if tuner is not None and not tuner.wait(_TUNER_STOP_WAIT):
            logger.warning("unirt: the background tuner of %s did not stop within %g s",
                           self.model.name, _TUNER_STOP_WAIT)
        if live is not None:
            live.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
