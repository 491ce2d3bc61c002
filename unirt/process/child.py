"""The child side of :mod:`unirt.process.isolation`, run as ``python -m unirt.process.child RFD
WFD PPID [NICE]``.

A fresh interpreter on this module, rather than a ``multiprocessing`` spawn, because spawn
re-imports the user's ``__main__``: a script without an ``if __name__ == "__main__":`` guard (most
scripts) would run its top level again in the child, call ``unirt.load`` again and recurse.

This module is also imported by the parent for :class:`Channel`, so it must stay light: only the
standard library, nothing from unirt at import time, no numpy, onnx or engine. What a call needs
is imported when its pickled function is loaded.

Protocol (pickles over two dedicated pipes, never fd 0/1/2, which engines print on; a message
is a count of parts, then each part length-prefixed: the pickle (protocol 5), then the raw
buffers of the arrays in it, out of band, so that the receiver builds its arrays over the
bytearrays it read them into instead of copying them out of one big frame):

1. parent -> child: ``(init, init_args)``, pickled by reference;
2. child -> parent: ``("ready", None)`` once that loaded, or ``("harness", message)`` if it did
   not (then the child exits). ``init(*init_args)`` runs *after* the handshake, so that its time
   counts against the first call's timeout, and its exception is reported on every call;
3. per call: parent -> child ``(fn, args)``; child -> parent ``("ok", value)``,
   ``("error", (type, first line, traceback))`` or ``("harness", message)`` when the call's
   function cannot be loaded in the child. ``None`` asks the child to exit.

The child exits by itself when the parent goes away: its read of the next message ends at EOF,
and a watchdog thread notices being re-parented while a call is still running (an engine stuck
in a loop would otherwise outlive the parent).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import select
import struct
import sys
import time
from typing import Any

READY = "ready"
HARNESS = "harness"
OK = "ok"
ERROR = "error"

_HEADER = struct.Struct("!Q")
_CHUNK = 1 << 20


def pack(obj: Any) -> list[bytes | memoryview]:
    """``obj`` as the parts of one message: its pickle, then the raw memory of each buffer the
    pickle refers to out of band (contiguous numpy arrays: their data is never copied into the
    pickle, and the receiver's arrays are made over the received bytes)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [data, *(b.raw() for b in buffers)]


class Channel:
    """Pickled messages over a pair of pipe fds (see the module's docstring for the framing).

    Hand-rolled rather than ``multiprocessing.connection`` so that the child's start-up does not
    import multiprocessing (sockets, tempfile, threading), and so that a receive can have a
    deadline that covers the whole message, not only its first byte.
    """

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self._reader = os.fdopen(rfd, "rb", buffering=0, closefd=False)

    def send_parts(self, parts: list[bytes | memoryview], timeout: float | None = None) -> None:
        """Write one message made by :func:`pack`. Raises ``BrokenPipeError`` when the other side
        is gone, and ``TimeoutError`` when a non-blocking write end stayed full past ``timeout``
        seconds (the parent's end is non-blocking so that a child that stopped reading cannot
        hang it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: list[bytes | memoryview] = [_HEADER.pack(len(parts))]
        for part in parts:
            chunks += [_HEADER.pack(len(part)), part]
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                try:
                    n = os.write(self.wfd, view[:_CHUNK])
                except BlockingIOError:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("the other side is not reading") from None
                    select.select([], [self.wfd], [], remaining)
                    continue
                view = view[n:]

    def send(self, obj: Any, timeout: float | None = None) -> None:
        self.send_parts(pack(obj), timeout)

    def wait(self, timeout: float | None) -> bool:
        """Whether there is something to read (data or EOF) within ``timeout`` seconds."""
        try:
            ready, _, _ = select.select([self.rfd], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            return False
        return bool(ready)

    def _read_exactly(self, buf: memoryview, deadline: float | None) -> None:
        pos = 0
        while pos < len(buf):
            if deadline is not None and not self.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("no complete message before the deadline")
            n = self._reader.readinto(buf[pos:pos + _CHUNK])
            if not n:
                raise EOFError("the other side closed the channel")
            pos += n

    def _read_size(self, deadline: float | None) -> int:
        header = bytearray(_HEADER.size)
        self._read_exactly(memoryview(header), deadline)
        return int(_HEADER.unpack(header)[0])

    def recv_parts(self, timeout: float | None = None) -> list[bytearray]:
        """One message's parts, each read into its own bytearray (:func:`unpack` makes the
        arrays over them: an output-sized message costs its size once, not twice). Raises
        ``EOFError`` at end of stream, ``TimeoutError`` when the whole message did not arrive
        within ``timeout`` seconds (the stream is then unusable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        parts = []
        for _ in range(self._read_size(deadline)):
            part = bytearray(self._read_size(deadline))
            self._read_exactly(memoryview(part), deadline)
            parts.append(part)
        if not parts:
            raise EOFError("an empty message")
        return parts

    def recv(self, timeout: float | None = None) -> Any:
        return unpack(self.recv_parts(timeout))

    def close(self) -> None:
        self._reader.close()
        for fd in {self.rfd, self.wfd}:
            with contextlib.suppress(OSError):
                os.close(fd)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _error_payload(exc: BaseException) -> tuple[str, str, str]:
    import traceback

    return (type(exc).__name__, _first_line(str(exc)) or type(exc).__name__,
            traceback.format_exc())


class _Unpickler(pickle.Unpickler):
    """Names what went wrong when a message refers to the parent's ``__main__``: this child's
    ``__main__`` is this module, and it does not re-run the user's script to find it."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("__main__", "__mp_main__"):
            raise AttributeError(
                f"{name!r} is defined in the script being run (__main__); functions and classes "
                "sent to a child must live in an importable module (the child does not re-run "
                "your script)")
        return super().find_class(module, name)


def unpack(parts: list[bytearray], unpickler: type[pickle.Unpickler] = pickle.Unpickler) -> Any:
    """The object a message made by :func:`pack` carries, its arrays over ``parts[1:]``."""
    return unpickler(io.BytesIO(parts[0]), buffers=parts[1:]).load()


def _loads(parts: list[bytearray]) -> Any:
    return unpack(parts, _Unpickler)


def _load_failure(what: str, exc: BaseException) -> str:
    return f"cannot load {what} in the child process: {type(exc).__name__}: {exc}"


def _watch_parent(parent: int) -> None:
    """Kill this child's process group once the parent is gone, even in the middle of a call."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            if os.getpgrp() == os.getpid():
                os.killpg(os.getpid(), 9)
            os._exit(1)


def serve(channel: Channel, parent: int) -> int:
    """The child's loop: handshake, ``init``, then one call at a time until EOF or ``None``."""
    import threading

    threading.Thread(target=_watch_parent, args=(parent,), name="unirt-parent-watch",
                     daemon=True).start()
    try:
        init, init_args = _loads(channel.recv_parts())
    except EOFError:
        return 0
    except BaseException as exc:
        channel.send((HARNESS, _load_failure("the worker's init function", exc)))
        return 1
    channel.send((READY, None))

    state: Any = None
    init_error: tuple[str, str, str] | None = None
    if init is not None:
        try:
            state = init(*init_args)
        except BaseException as exc:
            init_error = _error_payload(exc)
    while True:
        try:
            data = channel.recv_parts()
        except (EOFError, OSError):
            return 0
        reply: tuple[str, Any]
        try:
            msg = _loads(data)
        except BaseException as exc:
            reply = (HARNESS, _load_failure("the call", exc))
        else:
            if msg is None:
                return 0
            fn, args = msg
            if init_error is not None:
                reply = (ERROR, init_error)
            else:
                try:
                    reply = (OK, fn(state, *args))
                except BaseException as exc:
                    reply = (ERROR, _error_payload(exc))
        _flush()
        try:
            channel.send(reply)
        except (BrokenPipeError, OSError):
            return 0
        except Exception as exc:  # an unpicklable result
            channel.send((ERROR, (type(exc).__name__, f"result cannot be sent back: {exc}", "")))


def call_plain(_state: Any, fn: Any, *args: Any) -> Any:
    """What :func:`unirt.process.isolation.run_isolated` sends: a plain ``fn(*args)`` (lives here
    so that loading it in the child imports nothing more)."""
    return fn(*args)


def _flush() -> None:
    # What the call printed through Python should be in the output file before the parent reads
    # its tail (C++ engines' own buffers are theirs).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rfd, wfd, parent = int(args[0]), int(args[1]), int(args[2])
    niceness = int(args[3]) if len(args) > 3 else 0
    if niceness > 0:
        # Before any engine is imported: on Linux niceness is per thread and threads inherit
        # it, so the engine's thread pools, created later, run at this priority too.
        with contextlib.suppress(OSError):
            os.nice(niceness)
    # Grandchildren (a converter run with os.system) must not hold our pipe ends open, or the
    # parent would not see EOF when we die.
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return serve(Channel(rfd, wfd), parent)


if __name__ == "__main__":
    sys.exit(main())
