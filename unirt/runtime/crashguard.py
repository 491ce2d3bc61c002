"""Die at most once: a marker that outlives a process the reference engine kills.

The default route opens the reference (ONNX Runtime) in the user's process at once, with no
child process on the path: a first load costs what a raw ONNX Runtime session costs.
A model can make the reference itself die (ONNX Runtime 1.32 dies of SIGFPE on a convolution
whose stride leaves a zero-size axis): the user's process then dies with it, as it would with
raw ONNX Runtime. What unirt must never do is let it die *again* on the same model.

So before that in-process open, a marker file is put in the cache (``<cache>/.guard/<key>.pending``)
and held under an exclusive ``flock`` until the first call on the session returns; then the
model is recorded as having run in-process (``<key>.ran``) and the marker goes. The kernel drops
the lock when the process dies, however it dies. A later load that finds a marker nobody holds
knows that a process died between opening the model and its first answer: it runs the reference
in a child first (:func:`unirt.evidence.verify.verify_reference`), and a crash there is cached as
the reference's verdict, so every later load routes elsewhere or raises a clear error at once.

``crash_guard="child"`` (``UNIRT_CRASH_GUARD=child``) pays that child run (about 0.5 s, once per
model and engine version: the pass is cached) before the very first in-process open, for
processes that must not die even once. A marker left by a process that exited without running
the model (killed by the user, say) costs one such child run, never a wrong verdict.

Processes started together (a launch file, a pool of workers) each find the others' marker
held: all but the one holding it run the reference in a child first, rather than every one of
them dying at once. Where the cache cannot be written, there is no marker and no record: loads
behave as raw ONNX Runtime does. Only the first call is guarded: a crash on a later call with
other shapes is not remembered (the verification of other engines runs in children and is not
affected).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unirt.errors import UnirtError
from unirt.model.info import ModelInfo
from unirt.words import Word

logger = logging.getLogger("unirt")

ENV = "UNIRT_CRASH_GUARD"
#: The guard's directory under the cache root (a dot-directory: not a cache section).
GUARD_DIR = ".guard"


class GuardMode(Word):
    """When the reference runs in a child before it is opened in the user's process."""

    AUTO = "auto"  # only after a process died on this model (one death at most)
    CHILD = "child"  # before the first in-process open of every model (no death at all)


def resolve_mode(value: str | None) -> GuardMode:
    """``load(crash_guard=)`` or ``UNIRT_CRASH_GUARD``, default ``auto``."""
    raw = value if value is not None else (os.environ.get(ENV) or GuardMode.AUTO.value)
    try:
        return GuardMode(raw)
    except ValueError:
        where = "crash_guard" if value is not None else ENV
        raise UnirtError(f"{where} must be one of {', '.join(m.value for m in GuardMode)}, "
                         f"not {raw!r}") from None


def key(info: ModelInfo, backend: str, version: str | None, precision: str,
        options: Mapping[str, Any]) -> str:
    """What a marker is about: the model's bytes, the engine and its version, how it is opened."""
    from unirt.store.cache import artifact_key

    return artifact_key(GUARD_DIR.lstrip("."), info, versions={"engine": version},
                        precision=precision, options={"backend": backend,
                                                      "options": dict(options)})


def _directory() -> Path | None:
    from unirt.store.cache import ArtifactCache

    cache = ArtifactCache()
    if cache.problem is not None:
        return None
    d = cache.root / GUARD_DIR
    try:
        d.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    return d


def ran_before(k: str) -> bool:
    """Whether this model has answered a call in some process already (one ``stat``)."""
    d = _directory()
    return d is not None and (d / f"{k}.ran").is_file()


class MarkerState(Word):
    """What the marker of one model says (see :func:`marker_state`)."""

    NONE = "none"  # no marker: no process is, or died, between an open and a first answer
    DIED = "died"  # a marker nobody holds: a process died before the model's first answer
    HELD = "held"  # a live process holds it: its first answer is still to come


def marker_state(k: str) -> MarkerState:
    """Whether a process died (or exited) between opening this model in-process and its first
    answer (a marker no live process holds), or one is there right now (the lock is held)."""
    import fcntl

    d = _directory()
    if d is None:
        return MarkerState.NONE
    path = d / f"{k}.pending"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return MarkerState.NONE
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return MarkerState.HELD
    else:
        return MarkerState.DIED
    finally:
        os.close(fd)


def record_ran(k: str) -> None:
    """Record that the model answered (in a child or in-process); removes a stale marker."""
    d = _directory()
    if d is None:
        return
    try:
        _write_atomically(d / f"{k}.ran", json.dumps({"time": time.time()}))
        (d / f"{k}.pending").unlink(missing_ok=True)
    except OSError as exc:
        logger.debug("unirt: could not record %s as run: %s", k, exc)


def forget(k: str) -> None:
    """Drop a stale marker once a cached verdict speaks for the model (nothing to record)."""
    d = _directory()
    if d is not None:
        with contextlib.suppress(OSError):
            (d / f"{k}.pending").unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    from unirt.store.files import write_atomic

    write_atomic(path, text, mode=0o600)


class Marker:
    """A held marker: :meth:`passed` after the first good call, :meth:`release` otherwise
    (closing the session, or the interpreter exiting, releases it)."""

    def __init__(self, directory: Path, k: str, fd: int, what: str) -> None:
        self.key, self.what = k, what
        self._path = directory / f"{k}.pending"
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _drop, self._path, fd)

    def passed(self) -> None:
        """The guarded engine answered a call: record the model as safe here, drop the marker."""
        with self._lock:
            if self._fd is None:
                return
            self._fd = None
            record_ran(self.key)
            self._finalizer()

    def release(self) -> None:
        """Drop the marker without recording anything (no call was made)."""
        with self._lock:
            if self._fd is None:
                return
            self._fd = None
            self._finalizer()


def _drop(path: Path, fd: int) -> None:
    """Remove the marker if it is still ours (same file), then let go of its lock."""
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def arm(k: str, what: str) -> Marker | None:
    """Put a held marker in place before an in-process open; None when there is no cache to
    put it in, or another live process holds one for the same model (the caller then asks
    :func:`marker_state`: processes started together must not all open a model none of them
    has seen answer). The file appears already locked: it is locked, then linked into place
    (a link, unlike a rename, never replaces another process's marker)."""
    import fcntl
    import tempfile

    d = _directory()
    if d is None:
        return None
    path = d / f"{k}.pending"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": os.getpid(), "what": what,
                                 "time": time.time()}).encode())
        os.link(tmp, path)  # atomic: fails when another process's marker is there
    except OSError:
        os.close(fd)
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return Marker(d, k, fd, what)
