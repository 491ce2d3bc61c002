"""Writing files the way a user expects: whole or not at all, with the mode ``open()`` gives.

Every file unirt writes whole goes through :func:`write_with` here (outputs of ``run -o``,
reports, saved inputs, locks, plots, op tables, the corpus, the crash guard's record), so a
reader never sees half a file and a colleague can read what was written (``mkstemp`` alone
leaves 0600). The cache's secret and the crash guard's pending marker are the exceptions: they
must be created exclusively (the first writer wins), which a rename cannot say.

Every command that writes files checks its target first (:func:`check_writable`), before any
work: a typo in ``-o`` must not cost a tuning run and end in a traceback. Missing parent folders
are created, for every command alike (``run --output-dir out/run1``, ``rewrite -o fixed/m.onnx``,
``reduce -o repro/m.onnx``), as long as the nearest existing one is a folder unirt can write in.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from unirt.errors import UnirtError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_with(path: Path, fill: Callable[[BinaryIO], object], mode: int | None = None) -> None:
    """Write ``path`` whole or not at all: ``fill`` writes into a temporary file beside it, which
    is then renamed over ``path``; on any error the temporary file goes and ``path`` is as it
    was. ``mode``: the file's permissions (default: what ``open()`` gives under the umask, not
    ``mkstemp``'s 0600). Missing parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            fill(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes, mode: int | None = None) -> None:
    """Write ``data`` (text as UTF-8) through :func:`write_with`."""
    payload = data.encode() if isinstance(data, str) else data
    write_with(path, lambda f: f.write(payload), mode)


def check_writable(path: str | os.PathLike[str], option: str, *, directory: bool = False,
                   inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """``path`` as a place to write (a file, or with ``directory`` a folder), checked now:
    raises ``UnirtError`` naming ``option`` when it is an existing folder (a file is wanted) or
    file (a folder is wanted), one of ``inputs`` (the model being read), or under a folder that
    is not one or cannot be written in (tried by creating a temporary file there: permissions,
    read-only mounts and ``/proc`` answer alike, root or not). Missing parents are fine: the
    writers create them."""
    target = Path(path)
    where = f"{option} {os.fspath(path)}"
    if directory:
        if target.exists() and not target.is_dir():
            raise UnirtError(f"{where}: not a directory")
    else:
        if target.is_dir() or os.fspath(path).endswith(os.sep):
            raise UnirtError(f"{where}: is a directory; give a file name")
        for given in inputs:
            if given is not None and _same(target, Path(given)):
                raise UnirtError(f"{where}: is the input model; write somewhere else")
    existing = target if directory else target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UnirtError(f"{where}: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".unirt-check."):
            pass
    except OSError as exc:
        raise UnirtError(f"{where}: cannot write in {existing} "
                         f"({exc.strerror or type(exc).__name__})") from None
    return target


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def copy_atomic(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` the way :func:`write_atomic` writes (a rewritten model can be
    large: copied in chunks, not read whole)."""
    import shutil

    def fill(f: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)

    write_with(path, fill)
