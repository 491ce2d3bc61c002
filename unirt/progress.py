"""Progress of unirt's long steps, told to whoever listens: logging, and callbacks.

A first verified load runs a child per candidate (1.5-6 s), ``prefer="fastest"`` verifies and
times every engine (6-30 s), ``compare`` and ``capabilities --probe`` run one child per backend:
a caller that hears nothing for that long cannot tell working from hung. Each such step is a
:func:`step` here, which logs one INFO line on the ``unirt`` logger when it starts and one with
its duration when it ends, and hands a :class:`Progress` event to every subscriber.

The library never prints. The CLI subscribes (:mod:`unirt.cli.progress`) and draws the events
on stderr; a program subscribes the same way::

    import unirt.progress

    with unirt.progress.subscribe(lambda ev: print(ev.describe())):
        unirt.load("model.onnx", prefer="fastest")

Subscribers are process-wide (a step run by a library's worker thread is seen too) and called
in the thread that runs the step. A subscriber that raises is logged and dropped from that
event; it never breaks the step. Steps run in a child process (a conversion inside a
verification child) are not seen: the parent's step that started the child covers them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from unirt.words import Word

logger = logging.getLogger("unirt")


class Step(Word):
    """What a long step does."""

    VERIFY = "verify"  # a candidate run in a child and compared with the reference
    REFERENCE = "reference"  # the reference's outputs, in a child
    RANK = "rank"  # prefer="fastest" / unirt tune: verify and time every candidate
    TIME = "time"  # one candidate timed in a child (ranking)
    COMPARE = "compare"  # one backend run on given inputs and compared
    BENCH_LOAD = "bench load"  # a backend's cold and warm load in bench
    BENCH_RUN = "bench run"  # the timed rounds at one shape in bench
    CONVERT = "convert"  # a model converted for an engine (ncnn's pnnx)
    BUILD = "build"  # an engine built for a model (TensorRT), in a child
    REWRITE = "rewrite"  # rewrites fitted to a candidate and verified
    REDUCE = "reduce"  # one candidate subgraph tried on the failing backend (unirt reduce)


class StepState(Word):
    """Where a step is."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"  # it raised (a verdict that the engine is wrong is DONE, not FAILED)


@dataclass(frozen=True)
class Progress:
    """One event: ``step`` on ``backend`` for ``model`` has ``status``; ``seconds`` since it
    started (None on STARTED); ``detail`` what it concluded or what it is at (a shape)."""

    step: Step
    status: StepState
    backend: str | None = None
    model: str | None = None
    seconds: float | None = None
    detail: str = ""

    def describe(self) -> str:
        """``verify openvino on m.onnx: done in 1.23 s (pass)``."""
        what = f"{self.step}" + (f" {self.backend}" if self.backend else "") + (
            f" on {self.model}" if self.model else "")
        if self.status == StepState.STARTED:
            return f"{what}{f' ({self.detail})' if self.detail else ''} ..."
        took = "" if self.seconds is None else f" in {self.seconds:.2f} s"
        return f"{what}: {self.status}{took}" + (f" ({self.detail})" if self.detail else "")


Subscriber = Callable[[Progress], None]

_lock = threading.Lock()
_subscribers: list[Subscriber] = []


class Subscription:
    """What :func:`subscribe` returns: ``close()`` (or leaving its ``with`` block) stops the
    calls."""

    def __init__(self, fn: Subscriber) -> None:
        self.fn = fn

    def close(self) -> None:
        with _lock:
            if self.fn in _subscribers:
                _subscribers.remove(self.fn)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def subscribe(fn: Subscriber) -> Subscription:
    """Call ``fn(event)`` for every :class:`Progress` event from now on, until the returned
    subscription is closed."""
    if not callable(fn):
        from unirt.errors import UnirtError

        raise UnirtError(f"unirt.progress.subscribe takes a callable, not {fn!r}")
    with _lock:
        _subscribers.append(fn)
    return Subscription(fn)


def emit(event: Progress) -> None:
    """Hand ``event`` to every subscriber; one that raises is logged, never propagated."""
    with _lock:
        listeners = list(_subscribers)
    for fn in listeners:
        try:
            fn(event)
        except Exception as exc:  # a display must not break a verification
            logger.debug("progress subscriber %r failed: %s: %s", fn, type(exc).__name__, exc)


class StepHandle:
    """The running step: ``detail`` (what it concluded) goes on its end event."""

    def __init__(self) -> None:
        self.detail = ""


@contextmanager
def step(what: Step, backend: str | None = None, model: str | None = None,
         detail: str = "") -> Iterator[StepHandle]:
    """Report ``what`` as started, then as done (or failed, when the block raises) with its
    duration: one INFO log line each, and an event to every subscriber."""
    handle = StepHandle()
    start = time.perf_counter()
    first = Progress(what, StepState.STARTED, backend, model, None, detail)
    logger.info("unirt: %s", first.describe())
    emit(first)
    status = StepState.FAILED
    try:
        yield handle
        status = StepState.DONE
    finally:
        end = Progress(what, status, backend, model, time.perf_counter() - start, handle.detail)
        logger.info("unirt: %s", end.describe())
        emit(end)
