"""Running engine code in a child process, so that an engine that segfaults, aborts or hangs costs
unirt a verdict, not the user's process.

Engines kill their host on some models (OpenCV DNN and ncnn segfault, pnnx aborts): anything that
runs a model not yet known to be safe goes through here. Two shapes:

* :func:`run_isolated` — one call in a fresh child (``unirt capabilities --probe``, verification).
* :class:`Worker` — a child that pays its set-up (engine import, backend lookup) once and then runs
  many calls sequentially; when it dies or times out, that call is recorded as crashed/timed out and
  the next call starts a fresh child. This is what makes ~1,900 conformance cases affordable on two
  cores: an engine import per case would cost more than the cases themselves.

Children are started with ``spawn``: forking a parent that already holds engine threads or locks is
how deadlocks are made. Functions and arguments must be picklable (module-level functions).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("unirt")

OK = "ok"
ERROR = "error"
CRASHED = "crashed"
TIMEOUT = "timeout"


@dataclass
class Outcome:
    """What became of one isolated call.

    ``status``: ``"ok"`` (``value`` holds the result), ``"error"`` (the function raised: ``error``
    is its first line, ``traceback`` the full text), ``"crashed"`` (the child died: ``signal``
    names the signal, or ``exitcode`` is set) or ``"timeout"`` (killed after ``timeout`` s).
    """

    status: str
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    signal: str | None = None
    exitcode: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def describe(self) -> str:
        """One line for tables and messages."""
        if self.status == OK:
            return "ok"
        if self.status == CRASHED:
            how = f"signal {self.signal}" if self.signal else f"exit code {self.exitcode}"
            return f"crashed ({how})"
        if self.status == TIMEOUT:
            return f"timed out after {self.seconds:.0f} s"
        return self.error or "error"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _silence() -> None:
    # Engines print pages of warnings on fd 1/2 from C++: keep them out of the user's terminal.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _worker_main(conn: Any, init: Callable[..., Any] | None, init_args: tuple[Any, ...],
                 quiet: bool) -> None:
    if quiet:
        _silence()
    state: Any = None
    init_error: tuple[str, str, str] | None = None
    if init is not None:
        try:
            state = init(*init_args)
        except BaseException as exc:
            init_error = (type(exc).__name__, _first_line(str(exc)) or type(exc).__name__,
                          traceback.format_exc())
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        if init_error is not None:
            conn.send((ERROR, init_error))
            continue
        try:
            value = fn(state, *args)
        except BaseException as exc:
            reply: tuple[str, Any] = (ERROR, (type(exc).__name__,
                                              _first_line(str(exc)) or type(exc).__name__,
                                              traceback.format_exc()))
        else:
            reply = (OK, value)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result
            conn.send((ERROR, (type(exc).__name__, f"result cannot be sent back: {exc}", "")))


def _terminate(proc: Any, conn: Any) -> None:
    with contextlib.suppress(OSError):
        conn.close()
    if proc.is_alive():
        proc.kill()
    proc.join(5)


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return str(-exitcode)


class Worker:
    """A long-lived child that runs ``init(*init_args)`` once, then ``fn(state, *args)`` per call.

    Restarted transparently after a crash or timeout. Use as a context manager or call
    :meth:`close`. Not thread-safe: one call at a time.
    """

    def __init__(self, init: Callable[..., Any] | None = None, init_args: tuple[Any, ...] = (),
                 *, quiet: bool = True) -> None:
        self._init = init
        self._init_args = init_args
        self._quiet = quiet
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._finalizer: Any = None
        self._starts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main,
                                 args=(child, self._init, self._init_args, self._quiet))
        # Not a daemon: the child may need children of its own (a backend that verifies or
        # converts in a subprocess). It still ends with us: its recv() fails when our end closes.
        proc.start()
        self._starts += 1
        child.close()
        self._proc, self._conn = proc, parent
        # A Worker nobody closed must not hold up interpreter exit (multiprocessing joins
        # non-daemon children at exit, and ours waits on its pipe): kill it first.
        self._finalizer = multiprocessing.util.Finalize(self, _terminate, args=(proc, parent),
                                                        exitpriority=10)

    def _kill(self) -> int | None:
        proc, self._proc = self._proc, None
        self._conn = None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer()  # closes our pipe end, kills the child if alive, joins it
        return None if proc is None else proc.exitcode

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Outcome:
        """Run ``fn(state, *args)`` in the child. Never raises for what the child does."""
        if self._proc is None or not self._proc.is_alive():
            self._kill()
            self._start()
        start = time.perf_counter()
        try:
            self._conn.send((fn, args))
        except (BrokenPipeError, OSError):
            code = self._kill()
            return Outcome(CRASHED, signal=_signal_name(code), exitcode=code,
                           seconds=time.perf_counter() - start)
        try:
            ready = self._conn.poll(timeout)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self._kill()
            return Outcome(TIMEOUT, error=f"timed out after {timeout:g} s",
                           seconds=time.perf_counter() - start)
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            # The child died mid-call: wait for its exit code to name the signal.
            if self._proc is not None:
                self._proc.join(5)
            code = self._kill()
            return Outcome(CRASHED, signal=_signal_name(code), exitcode=code,
                           seconds=time.perf_counter() - start)
        elapsed = time.perf_counter() - start
        if status == OK:
            return Outcome(OK, value=payload, seconds=elapsed)
        etype, line, tb = payload
        return Outcome(ERROR, error=f"{etype}: {line}", error_type=etype, traceback=tb,
                       seconds=elapsed)

    @property
    def restarts(self) -> int:
        """How many times the child had to be started again (after crashes and timeouts)."""
        return max(0, self._starts - 1)

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.join(2)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call_plain(_state: Any, fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def run_isolated(fn: Callable[..., Any], *args: Any, timeout: float = 120.0,
                 quiet: bool = True) -> Outcome:
    """Call ``fn(*args)`` once in a fresh child process; a crash or hang becomes an Outcome."""
    with Worker(quiet=quiet) as w:
        return w.call(_call_plain, fn, *args, timeout=timeout)
