"""Running engine code in a child process, so that an engine that segfaults, aborts or hangs costs
unirt a verdict, not the user's process.

Engines kill their host on some models (OpenCV DNN and ncnn segfault, pnnx aborts): anything that
runs a model not yet known to be safe goes through here. Two shapes:

* :func:`run_isolated` — one call in a fresh child (the ``fold`` rewrite's constant folding, the
  TensorRT plugin's parser check and engine build).
* :class:`Worker` — a child that pays its set-up (engine import, backend lookup) once and then runs
  many calls sequentially; when it dies or times out, that call is recorded as crashed/timed out and
  the next call starts a fresh child. Probes, verification, ``fastest``, ``bench`` and the
  conformance cases run here (~1,900 cases are affordable on two cores only because an engine
  import per case would cost more than the cases themselves).

How a child is made, and why:

* A fresh interpreter on unirt's own :mod:`unirt.process.child` (``python -P -m
unirt.process.child``), not a
  ``multiprocessing`` spawn: spawn re-imports the user's ``__main__``, and a script without an
  ``if __name__ == "__main__":`` guard would run its top level (``unirt.load(...)``) again in the
  child. Not ``fork`` either: forking a parent that holds engine threads or locks makes deadlocks.
* The child gets the parent's ``sys.path`` as ``PYTHONPATH`` so that it imports the same unirt,
  plugins and user modules; site-packages stay on (no ``-I``).
* Messages are pickles over two dedicated pipes, because engines print on fd 1/2 from C++. With
  ``quiet`` those go to an unlinked temporary file (a pipe could fill up and block the engine);
  its last ~2 KB ride along on a crash, timeout or harness failure as ``Outcome.output_tail``.
* The child leads its own process group, so a timeout kills grandchildren (a converter) too.
* A handshake separates "unirt could not start a child" (:data:`HARNESS`) from "the engine
  crashed" (:data:`CRASHED`): callers must not record the former as evidence about an engine.

Functions and arguments are pickled, so functions go by module and name: they must live in an
importable module, not in the script being run (the child does not re-run the script).
POSIX only (``pass_fds``, process groups).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from unirt.errors import UnirtError, strip_ansi
from unirt.process import child as _child
from unirt.process import timeouts
from unirt.process.child import Channel
from unirt.words import Word

logger = logging.getLogger("unirt")


class OutcomeStatus(Word):
    """What became of one isolated call (:attr:`Outcome.status`)."""

    OK = "ok"  # it returned: ``Outcome.value`` holds the result
    ERROR = "error"  # the function raised: its first line and traceback are kept
    CRASHED = "crashed"  # the child died (a signal or an exit code)
    TIMEOUT = "timeout"  # killed after its time ran out
    #: unirt could not start the child or load the function in it: says nothing about the engine
    HARNESS = "harness"


# The members under their short names, as callers import them.
OK = OutcomeStatus.OK
ERROR = OutcomeStatus.ERROR
CRASHED = OutcomeStatus.CRASHED
TIMEOUT = OutcomeStatus.TIMEOUT
HARNESS = OutcomeStatus.HARNESS

#: How long a child may take to start and load the worker's ``init`` before that counts as a
#: harness failure (an interpreter start and a few imports; generous for loaded CI machines).
HANDSHAKE_TIMEOUT = timeouts.HANDSHAKE.seconds
#: How much of the end of a child's output an Outcome keeps.
OUTPUT_TAIL_BYTES = 2048
#: How often a waiting parent checks that the child is still alive (a forked grandchild can keep
#: the reply pipe open after the child died, so EOF alone is not enough).
_LIVENESS_INTERVAL = 0.25


class IsolationError(UnirtError):
    """No Python interpreter to start a child with (an embedding application's executable)."""


class Cancelled(BaseException):
    """The measurement this Worker serves was stopped (a background tuner's ``stop()``).

    A ``BaseException``, like ``KeyboardInterrupt``: it must unwind through callers that turn
    every ``Exception`` into a verdict (a stopped measurement says nothing about an engine and
    must not be cached as one). The Worker has killed its child when this is raised.
    """


_defaults = threading.local()


@contextlib.contextmanager
def worker_defaults(*, nice: int = 0, cancel: threading.Event | None = None) -> Iterator[None]:
    """Workers created in this thread, inside the block, start their children at ``nice``
    (``os.nice`` in the child, before any engine is imported) and give up when ``cancel`` is
    set (the child is killed, the call raises :class:`Cancelled`).

    A thread-local default rather than an argument threaded through every measurement
    (``fastest.rank`` -> ``probe.reference_outputs`` -> ``Worker``): a background tuner wraps
    the same measurement ``load`` uses, and the code in between stays as it is.
    """
    previous = getattr(_defaults, "value", None)
    _defaults.value = (nice, cancel)
    try:
        yield
    finally:
        _defaults.value = previous


@dataclass
class Outcome:
    """What became of one isolated call.

    ``status`` (:class:`OutcomeStatus`): for ``ERROR`` ``error`` is the exception's first line and
    ``traceback`` the full text; for ``CRASHED`` ``signal`` names the signal, or ``exitcode`` is
    set; for ``HARNESS`` ``error`` says why unirt could not measure. ``output_tail`` is the end
    of what the child printed, for a crash, timeout or harness failure of a quiet child.
    """

    status: OutcomeStatus
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    signal: str | None = None
    exitcode: int | None = None
    seconds: float = 0.0
    output_tail: str | None = None

    def __post_init__(self) -> None:
        self.status = OutcomeStatus(self.status)  # the plain word is accepted too

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
        if self.status == HARNESS:
            return f"isolation failed: {self.error or 'the child process did not start'}"
        return self.error or "error"


def _signal_name(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return str(-exitcode)


def _looks_like_python(path: str) -> bool:
    name = os.path.basename(path).lower()
    return (bool(path) and name.startswith(("python", "pypy")) and os.path.isfile(path)
            and os.access(path, os.X_OK))


def python_executable() -> str:
    """The interpreter to start children with: ``sys.executable``, or the base interpreter when
    that is empty or not a Python (an application embedding Python reports its own binary)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", "") or ""]
    for path in candidates:
        if _looks_like_python(path):
            return path
    raise IsolationError(
        "cannot run engines in a child process: no Python interpreter found "
        f"(sys.executable={sys.executable!r}, sys._base_executable={candidates[1]!r})")


def _child_command(exe: str) -> list[str]:
    # The child must not put its working directory first on sys.path (the parent may not have
    # it there): it gets the parent's path through PYTHONPATH instead.
    if sys.version_info >= (3, 11):
        return [exe, "-P", "-m", "unirt.process.child"]
    return [exe, "-c", "import sys\nif sys.path[:1] == ['']: del sys.path[0]\n"
            "from unirt.process.child import main\nsys.exit(main())"]


def _child_env() -> dict[str, str]:
    """The parent's environment with ``PYTHONPATH`` = the parent's ``sys.path`` (the entries that
    exist, in order, made absolute) followed by any ``PYTHONPATH`` already set."""
    paths: list[str] = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        if path not in paths and os.path.exists(path):
            paths.append(path)
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _output_file() -> int:
    """An unlinked temporary file for a quiet child's fd 1/2, opened for appending so that the
    parent can truncate it between calls while the child keeps writing."""
    first, path = tempfile.mkstemp(prefix="unirt-child-", suffix=".log")
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND)
    finally:
        os.close(first)
        os.unlink(path)


def _read_tail(fd: int) -> str | None:
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, OUTPUT_TAIL_BYTES, max(0, size - OUTPUT_TAIL_BYTES))
    except OSError:
        return None
    text = strip_ansi(data.decode("utf-8", "replace")).strip()
    return text or None


class _Child:
    """One started child: its process, channel and output file. Holds no reference to the
    Worker, so that a Worker nobody closed can be collected and its finalizer kill this."""

    def __init__(self, proc: subprocess.Popen[bytes], channel: Channel, log: int | None,
                 scratch: str | None = None) -> None:
        self.proc = proc
        self.channel = channel
        self.log = log
        #: The child's private TMPDIR: what it (and a converter it started) left there is
        #: removed with it, even when it was killed before it could clean up.
        self.scratch = scratch
        self.answered = False
        self.tail: str | None = None
        self._dead = False

    def exited(self) -> bool:
        """Whether the child has exited, without reaping it (its pid, which is also its process
        group's id, must stay ours until :meth:`kill` has killed the group)."""
        if self.proc.returncode is not None:
            return True
        if hasattr(os, "waitid"):
            try:
                return os.waitid(os.P_PID, self.proc.pid,
                                 os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                return True
        return self.proc.poll() is not None  # pragma: no cover - no waitid (older macOS)

    def kill(self) -> int | None:
        """Kill the child's whole process group, reap the child, keep its output's tail, release
        everything. Idempotent; returns the exit code (negative: the signal)."""
        if self._dead:
            return self.proc.returncode
        self._dead = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("child process %d did not die after SIGKILL", self.proc.pid)
        self.channel.close()
        if self.log is not None:
            self.tail = _read_tail(self.log)
            os.close(self.log)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.proc.returncode

    def close(self) -> None:
        """Ask the child to exit, give it a moment, then :meth:`kill` whatever is left."""
        if not self._dead and not self.exited():
            with contextlib.suppress(OSError, TimeoutError):
                self.channel.send(None, timeout=1.0)
                self.channel.wait(2.0)  # EOF once the child has exited
        self.kill()


class Worker:
    """A long-lived child that runs ``init(*init_args)`` once, then ``fn(state, *args)`` per call.

    Restarted transparently after a crash or timeout. Use as a context manager or call
    :meth:`close`; one never closed is killed when collected or at interpreter exit.

    Not thread-safe: one call at a time per Worker (calls are request/reply on one pipe pair);
    use one Worker per thread.
    """

    def __init__(self, init: Callable[..., Any] | None = None, init_args: tuple[Any, ...] = (),
                 *, quiet: bool = True, nice: int | None = None,
                 cancel: threading.Event | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        """``nice``: added to the child's niceness at its start (0: as the parent; a background
        measurement uses a positive value so that it takes CPU only when the user's work leaves
        some). ``cancel``: when set, a call in progress kills the child and raises
        :class:`Cancelled`. Both default to the thread's :func:`worker_defaults`. ``env``: variables
        set in the child on top of the parent's environment, for what an engine reads once per
        process (a Vulkan driver chosen with ``VK_ICD_FILENAMES``, a loader found through
        ``LD_LIBRARY_PATH``) and must not be set in the parent."""
        default_nice, default_cancel = getattr(_defaults, "value", None) or (0, None)
        self._init = init
        self._init_args = init_args
        self._quiet = quiet
        self._nice = default_nice if nice is None else int(nice)
        self._cancel = default_cancel if cancel is None else cancel
        self._child: _Child | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._starts = 0
        self._env = dict(env or {})

    def _start(self) -> Outcome | None:
        """Start a child and wait for its handshake; a HARNESS Outcome when that fails."""
        start = time.perf_counter()

        def harness(message: str, tail: str | None = None, exitcode: int | None = None,
                    error_type: str | None = None) -> Outcome:
            logger.debug("isolation: %s", message)
            return Outcome(HARNESS, error=message, error_type=error_type,
                           signal=_signal_name(exitcode), exitcode=exitcode,
                           seconds=time.perf_counter() - start, output_tail=tail)

        try:
            exe = python_executable()
        except IsolationError as exc:
            return harness(str(exc), error_type=type(exc).__name__)
        init_message = _child.pack((self._init, self._init_args))
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        log = _output_file() if self._quiet else None
        scratch = tempfile.mkdtemp(prefix="unirt-child-")
        env = _child_env()
        env.update(self._env)
        env.update(TMPDIR=scratch, TMP=scratch, TEMP=scratch)
        self._starts += 1
        try:
            proc = subprocess.Popen(
                [*_child_command(exe), str(to_child_r), str(from_child_w), str(os.getpid()),
                 str(self._nice)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                pass_fds=(to_child_r, from_child_w), start_new_session=True)
        except OSError as exc:
            for fd in (to_child_w, from_child_r, *(() if log is None else (log,))):
                os.close(fd)
            shutil.rmtree(scratch, ignore_errors=True)
            return harness(f"cannot start a child process with {exe}: "
                           f"{exc.strerror or exc}", error_type=type(exc).__name__)
        finally:  # the child's ends: only the child may hold them, or its death brings no EOF
            os.close(to_child_r)
            os.close(from_child_w)
        os.set_blocking(to_child_w, False)
        child = _Child(proc, Channel(from_child_r, to_child_w), log, scratch)
        self._child = child
        self._finalizer = weakref.finalize(self, child.kill)

        try:
            child.channel.send_parts(init_message, timeout=HANDSHAKE_TIMEOUT)
            kind, reply = _receive(child, HANDSHAKE_TIMEOUT, self._cancel)
        except TimeoutError:
            kind, reply = "timeout", None
        except OSError:
            kind, reply = "dead", None
        except BaseException:  # interrupted: a child that never said ready is no use
            self._discard()
            raise
        if kind == "reply" and reply[0] == _child.READY:
            return None
        code = self._discard()
        if kind == "timeout":
            return harness(f"the child process ({exe}) did not report ready within "
                           f"{HANDSHAKE_TIMEOUT:g} s", child.tail)
        if kind == "reply" and reply[0] == _child.HARNESS:
            return harness(str(reply[1]), child.tail)
        how = f"signal {_signal_name(code)}" if code is not None and code < 0 else f"code {code}"
        return harness(f"the child process ({exe}) exited with {how} before it was ready "
                       "(it could not start Python or import unirt)", child.tail, code)

    def _discard(self) -> int | None:
        """Kill the current child (if any); its exit code."""
        child, self._child = self._child, None
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            finalizer.detach()
        return None if child is None else child.kill()

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Outcome:
        """Run ``fn(state, *args)`` in the child. Never raises for what the child does (a function
        or argument that cannot be pickled here is the caller's bug and raises)."""
        message = _child.pack((fn, args))
        if self._cancel is not None and self._cancel.is_set():
            self._discard()
            raise Cancelled("the measurement was stopped")
        if self._child is not None and self._child.exited():
            self._discard()
        if self._child is None:
            failure = self._start()
            if failure is not None:
                return failure
        child = self._child
        assert child is not None
        if child.answered and child.log is not None:
            os.ftruncate(child.log, 0)  # the tail should be this call's output
        start = time.perf_counter()
        try:
            child.channel.send_parts(message, timeout=timeout)
            kind, reply = _receive(child, max(0.0, timeout - (time.perf_counter() - start)),
                                   self._cancel)
        except TimeoutError:
            kind, reply = "timeout", None
        except OSError:
            kind, reply = "dead", None
        except BaseException:
            # Interrupted (Ctrl-C) mid-call: the child is busy and the channel out of step.
            self._discard()
            raise
        elapsed = time.perf_counter() - start
        if kind == "timeout":
            self._discard()
            return Outcome(TIMEOUT, error=f"timed out after {timeout:g} s", seconds=elapsed,
                           output_tail=child.tail)
        if kind == "dead":
            code = self._discard()
            return Outcome(CRASHED, signal=_signal_name(code), exitcode=code, seconds=elapsed,
                           output_tail=child.tail)
        child.answered = True
        status, payload = reply
        if status == OK:
            return Outcome(OK, value=payload, seconds=elapsed)
        if status == _child.HARNESS:
            return Outcome(HARNESS, error=str(payload), seconds=elapsed,
                           output_tail=_read_tail(child.log) if child.log is not None else None)
        etype, line, tb = payload
        return Outcome(ERROR, error=f"{etype}: {line}", error_type=etype, traceback=tb,
                       seconds=elapsed)

    @property
    def restarts(self) -> int:
        """How many times the child had to be started again (after crashes and timeouts)."""
        return max(0, self._starts - 1)

    def close(self) -> None:
        """Stop the child (politely, then by force)."""
        child = self._child
        if child is not None:
            child.close()
        self._discard()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _receive(child: _Child, timeout: float,
             cancel: threading.Event | None = None) -> tuple[str, Any]:
    """Wait for the child's next message: ``("reply", message)``, ``("dead", None)`` when the
    child died (EOF, or it exited while something else holds the pipe) or ``("timeout", None)``.
    A reply that cannot be unpickled here becomes an error reply. Raises :class:`Cancelled`
    within one liveness interval of ``cancel`` being set (the caller kills the child)."""
    deadline = time.monotonic() + timeout
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the measurement was stopped")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", None
        if child.channel.wait(min(remaining, _LIVENESS_INTERVAL)):
            try:
                data = child.channel.recv_parts(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return "timeout", None
            except (EOFError, OSError):
                return "dead", None
            try:
                return "reply", _child.unpack(data)
            except Exception as exc:
                return "reply", (ERROR, (type(exc).__name__,
                                         f"the result cannot be loaded in the parent: {exc}", ""))
        if child.exited():
            return "dead", None


def run_isolated(fn: Callable[..., Any], *args: Any, timeout: float = timeouts.TOOL.seconds,
                 quiet: bool = True) -> Outcome:
    """Call ``fn(*args)`` once in a fresh child process; a crash or hang becomes an Outcome."""
    with Worker(quiet=quiet) as w:
        return w.call(_child.call_plain, fn, *args, timeout=timeout)
