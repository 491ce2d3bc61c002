"""One exception hierarchy for everything a user can get wrong or a backend can refuse.

Every exception unirt raises on purpose derives from :class:`UnirtError`; the CLI prints those as
one line without a traceback. Anything else escaping unirt is a bug in unirt or a plugin, and the
CLI shows it as an internal error with its traceback (the Polygraphy split between user errors
and internal errors).
"""

from __future__ import annotations

import re


class UnirtError(Exception):
    """Base class of every error that is the user's to fix (or an engine's to refuse)."""


class ModelError(UnirtError):
    """The model file cannot be read: missing, not ONNX, truncated, external data missing."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path does not exist."""


class InputError(UnirtError, ValueError):
    """A feed does not match the model: unknown or missing name, dtype, rank or static dim."""


class OutputError(UnirtError, KeyError):
    """An output name asked for is not an output of the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendNotFoundError(UnirtError, KeyError):
    """A backend name that no registered plugin provides."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(UnirtError):
    """A registered backend that cannot run on this machine (library or device missing)."""


class BackendError(UnirtError):
    """An engine refused or failed on a model (open or run), with the engine's own first line."""


class ShapeLimitError(BackendError):
    """An engine cannot take this input shape (a static engine, batch > 1 on a batch-1 engine).

    Raised by a backend's ``run``; the Session then re-routes that shape to the next candidate
    (run-time fallback) instead of failing, unless the user asked for ``backend=``.
    """


class ToolCrashError(BackendError):
    """A tool the backend runs around its engine (a model converter such as pnnx) crashed. On a
    real model the backend cannot run it; on a conformance toy graph it is a failure of the
    measuring harness, not evidence about the engine (``probe-ops`` records it as such)."""


class NoBackendError(UnirtError):
    """No candidate backend could open the model; the message lists each one and why."""


class SessionClosedError(UnirtError):
    """A session was used after ``close()``."""


class PluginError(UnirtError):
    """A plugin is malformed: duplicate backend names, a hook returning the wrong thing."""


#: Terminal escape sequences: colours (``\x1b[31m``) and the rest of CSI and two-byte escapes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
#: A log record another library printed into an engine's output (ONNX Runtime inside pnnx:
#: ``2026-11-28 09:06:48.1 [W:onnxruntime:pnnx, cpuid_info.cc:105 LogEarlyWarning] ...``).
_FOREIGN_LOG = re.compile(r"\S*\d{4}-\d\d-\d\d[ T][\d:.]+ \[[WIEV]:[^\]]*\][^;\n]*;?[ \t]*\n?")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences."""
    return _ANSI.sub("", text)


def clean(text: str) -> str:
    """Engine text as a reason can carry it: no colour codes, no other libraries' log lines.
    The one place engine text is cleaned (plugins and the CLI call this)."""
    return _FOREIGN_LOG.sub("", _ANSI.sub("", text)).strip()


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (engines print pages), cleaned."""
    lines = [ln.strip() for ln in clean(str(exc)).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class CacheError(UnirtError):
    """The artifact cache cannot be used: its directory is not writable, or a build failed."""


class HarnessError(UnirtError):
    """unirt itself could not measure (a child interpreter that could not start, a plugin that
    cannot be rebuilt in it). Says nothing about any engine: never recorded as a verdict."""


class LockError(UnirtError):
    """A deployment lock (``unirt.runtime.lock``) cannot be used: the file is missing, malformed or
    of another format version, or it was made for other model bytes or engine versions than this
    machine has. The message names the file and what differs."""


class RequestError(UnirtError):
    """A request ``unirt serve`` refuses: a malformed body, an unknown model, a body over the
    limit. ``status`` is the HTTP status it is answered with (400, 404, 413); the message is the
    client's to read, so it names what is wrong and never carries a traceback."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
