"""What engines print from C and C++ on fd 2, kept off the user's terminal and in the debug log.

Engines write warnings straight to the process's stderr, below Python (OpenCV's ``[ WARN:0@0.1]
global onnx_importer.cpp ...``, ncnn's ``dlopen failed libvulkan.so.1`` while probing for a GPU),
so ``sys.stderr`` redirection does not reach them. :func:`captured` points fd 2 at a temporary
file around one engine call and logs what landed there on the ``unirt`` logger at DEBUG, cleaned
(:func:`unirt.errors.clean`), so that ``unirt -v``/a program's logging still has it.

Every plugin uses this one helper, so that no plugin carries its own plumbing. It is for
calls made once per model (opening, probing a device), not per run: fd 2 is process-wide, and
while it is redirected another thread's writes to stderr go to the debug log too. Nested and
concurrent uses share one redirection (a depth count under a lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

from unirt.errors import clean

logger = logging.getLogger("unirt")

_lock = threading.Lock()
_depth = 0
_saved: int | None = None
_file: int | None = None


def _restore() -> str:
    """Put fd 2 back; what the engines wrote meanwhile."""
    global _saved, _file
    text = ""
    if _saved is not None:
        os.dup2(_saved, 2)
        os.close(_saved)
    if _file is not None:
        try:
            size = os.fstat(_file).st_size
            text = os.pread(_file, min(size, 1 << 16), 0).decode("utf-8", "replace")
        except OSError:
            text = ""
        os.close(_file)
    _saved = _file = None
    return text


@contextlib.contextmanager
def captured(what: str) -> Iterator[None]:
    """Native output on fd 2 inside the block goes to the debug log as ``what: <line>``."""
    global _depth, _saved, _file
    with _lock:
        if _depth == 0:
            import tempfile

            try:
                fd, path = tempfile.mkstemp(prefix="unirt-native-", suffix=".log")
                os.unlink(path)
                saved = os.dup(2)
            except OSError:  # no temporary file or no fd to spare: leave stderr as it is
                fd = saved = -1
            if fd >= 0 and saved >= 0:
                import sys

                with contextlib.suppress(Exception):
                    sys.stderr.flush()  # Python's buffered text goes where it was meant to
                os.dup2(fd, 2)
                _saved, _file = saved, fd
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            text = _restore() if _depth == 0 else ""
        for line in clean(text).splitlines():
            if line.strip():
                logger.debug("%s: %s", what, line.strip())
