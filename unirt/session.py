"""Session: what a user holds after ``unirt.load``, the same whichever engine is underneath.

``run`` checks feeds against metadata compiled once at load time (names, dtypes, ranks, static
dims), so a bad feed gets an error naming the input, what was expected and what was given,
before the engine sees it, and a good call pays a few microseconds on top of the engine call.
No hooks, no logging and no model reading happen per call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    BackendError,
    InputError,
    OutputError,
    SessionClosedError,
    ShapeLimitError,
    UnirtError,
    first_line,
)
from .route import RouteStep, render_route
from .tensor import TensorInfo, is_static

if TYPE_CHECKING:  # pragma: no cover
    from .backend import BackendSession, OpenOptions
    from .model import ModelInfo

logger = logging.getLogger("unirt")

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

    def __new__(cls, value: str, max_abs: Mapping[str, float] | None = None) -> Precision:
        obj = super().__new__(cls, value)
        obj.max_abs = dict(max_abs or {})
        return obj

    def describe(self) -> str:
        """``bf16, max abs error 1.6 on output0`` — what to read before shipping."""
        if not self.max_abs:
            return str(self)
        name, err = max(self.max_abs.items(), key=lambda kv: kv[1])
        return f"{self}, max abs error {err:.2g} on {name}"


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
        verification: Any = None,
    ) -> None:
        self.model = model
        self._backend = backend
        self._impl: BackendSession | None = impl
        self._route = route if isinstance(route, list) else list(route)
        self._reroute = reroute
        # Input-shape signature -> (backend, engine session) for shapes the chosen engine
        # refused at run time (ShapeLimitError) and another candidate took.
        self._by_shape: dict[tuple, tuple[str, BackendSession]] = {}
        self._fallback_lock = threading.Lock()
        self.options = options
        self._inputs = model.inputs
        self._outputs = model.outputs
        self._checks = {t.name: _InputCheck(t) for t in model.inputs}
        self._output_names = tuple(t.name for t in model.outputs)
        self._output_set = frozenset(self._output_names)
        self.verification = verification
        errors = verification.result.max_abs if verification is not None else {}
        self._precision = Precision(impl.precision, errors)
        self._close_lock = threading.Lock()

    # -- description -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """The name of the backend running the model, e.g. ``"onnxruntime"``."""
        return self._backend

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
        return dict(self._impl.details) if self._impl is not None else {}

    @property
    def precision(self) -> Precision:
        """The precision the engine actually computes in (``"fp32"``, ``"bf16"``...), with the
        error verification measured against the reference (``.max_abs`` per output)."""
        return self._precision

    @property
    def closed(self) -> bool:
        return self._impl is None

    def explain(self) -> str:
        """Why this backend: the route as text, and what the engine reports about itself."""
        lines = [f"model: {self.model.name}", f"backend: {self._backend}",
                 f"precision: {self._precision.describe()}", "route:",
                 render_route(self._route)]
        for key, value in self.details.items():
            lines.append(f"{key}: {value}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<unirt.Session {self.model.name} on {self._backend}{state}>"

    # -- running -----------------------------------------------------------------------------
    def run(
        self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the model. Returns ``{output name: array}`` in model order (or ``outputs`` order).

        Raises :class:`InputError` for a feed that does not match the model, :class:`OutputError`
        for an unknown output name, :class:`BackendError` when the engine fails.
        """
        impl = self._impl
        if impl is None:
            raise SessionClosedError(f"session for {self.model.name} is closed")
        checked = self._check_feeds(feeds)
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
        try:
            results = impl.run(checked, names)
        except ShapeLimitError as exc:
            return self._run_elsewhere(checked, names, exc)
        except UnirtError:
            raise
        except Exception as exc:
            raise self._engine_failure(self._backend, exc) from exc
        return dict(zip(names, results))

    def _engine_failure(self, backend: str, exc: Exception) -> BackendError:
        return BackendError(f"{backend} failed running {self.model.name}: "
                            f"{type(exc).__name__}: {first_line(exc)}")

    def _run_elsewhere(self, feeds: dict[str, Any], names: Sequence[str],
                       limit: ShapeLimitError) -> dict[str, np.ndarray]:
        """Run-time fallback: a shape the engine cannot take goes to the next candidate that can
        open the model (once per shape signature; recorded on the route; warned once)."""
        key = tuple((n, getattr(a, "shape", None)) for n, a in feeds.items())
        shape = ", ".join(f"{n}={'x'.join(map(str, s or ()))}" for n, s in key)
        with self._fallback_lock:
            entry = self._by_shape.get(key)
            if entry is None:
                if self._reroute is None:  # backend= never falls back
                    raise limit
                entry = self._reroute(self._backend, shape, str(limit))
                if not self._by_shape:
                    logger.warning("unirt: %s cannot run %s at %s (%s); running that shape on %s",
                                   self._backend, self.model.name, shape, limit, entry[0])
                self._by_shape[key] = entry
        name, impl = entry
        try:
            results = impl.run(feeds, names)
        except UnirtError:
            raise
        except Exception as exc:
            raise self._engine_failure(name, exc) from exc
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

    def _check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        checks = self._checks
        if not isinstance(feeds, Mapping):
            raise InputError(f"feeds must be a dict of input name -> array, "
                             f"got {type(feeds).__name__}")
        checked = {}
        for name, value in feeds.items():
            check = checks.get(name)
            if check is None:
                raise InputError(f"{name!r} is not an input of {self.model.name}; "
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
                             f"{', '.join(map(repr, missing))} for {self.model.name}; "
                             f"expected: {', '.join(c.info.describe() for c in checks.values())}")
        return checked

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the engine session. Idempotent; ``run`` after ``close`` raises."""
        with self._close_lock:
            impl, self._impl = self._impl, None
            others, self._by_shape = list(self._by_shape.values()), {}
        if impl is not None:
            impl.close()
        for _, other in others:
            other.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
