"""The content-addressed artifact cache shared by every backend (converted ncnn models, TensorRT
engines, OpenVINO blobs).

Why it is built this way:

* **Keys are content, not names.** A key hashes the model's bytes (and its external data files),
  the backend, the engine and converter versions, the input shapes, the precision and the
  options that change the artifact. Two models can never share an entry, and an engine upgrade
  never loads an artifact another version built: it simply misses.
* **Writes are atomic.** An entry is built in a temporary directory next to its final place and
  renamed into place, with a :mod:`filelock` lock per key so two processes converting the same
  model at once do the work once (the second waits and then loads what the first built).
* **Entries prove themselves.** Each carries a ``manifest.json`` with the size and SHA-256 of its
  files, written last; an entry whose manifest is missing or does not match (a truncated copy, a
  disk error, a hand edit) is rebuilt, never loaded.

Layout: ``<root>/<backend>/<key>/`` with the artifact files and ``manifest.json``; the lock files
``<root>/<backend>/.<key>.lock``; work in progress under ``<root>/<backend>/.tmp-*``. The root is
the platform user cache directory, ``$UNIRT_CACHE_DIR``, or a directory passed explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CacheError, UnirtError

if TYPE_CHECKING:  # pragma: no cover
    from .model import ModelInfo

logger = logging.getLogger("unirt")

CACHE_ENV = "UNIRT_CACHE_DIR"
MANIFEST = "manifest.json"
#: Marks a directory an engine fills itself (OpenVINO's CACHE_DIR): no manifest can vouch for
#: files the engine writes later, so the engine's own blob checks are what protect it.
ENGINE_MANAGED = ".engine-managed"
#: Bumped when the layout or the manifest format changes: old entries then miss, never misload.
FORMAT = 1
#: How long a process waits for another one building the same entry before giving up.
LOCK_TIMEOUT_S = 600.0

_CHUNK = 1 << 20


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root (created on demand): ``override``, else ``$UNIRT_CACHE_DIR``, else the
    platform user cache directory."""
    if override:
        root = Path(override).expanduser()
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("unirt", appauthor=False))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create the cache directory {root}: {exc.strerror or exc}") from exc
    return root


def backend_cache_dir(backend: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A directory that belongs to one backend, under the cache root."""
    _check_name(backend, "backend")
    path = cache_dir(root) / backend
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_name(value: str, what: str) -> None:
    # Keys and backend names become directory names: nothing that could climb out of the root.
    if not value or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise CacheError(f"invalid cache {what} {value!r}")


# -- keys ----------------------------------------------------------------------------------------
_file_hashes: dict[tuple[str, int, int, int, int], str] = {}
_file_hashes_lock = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, memoised per (path, inode, size, mtime, ctime) so a model opened again
    in the same process is not re-read. ctime is in the memo because a rewrite that puts the
    size and mtime back (``cp -p``, ``rsync -a``, pinned build times) cannot put it back."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _file_hashes_lock:
        known = _file_hashes.get(memo)
    if known is not None:
        return known
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _file_hashes_lock:
        _file_hashes[memo] = digest
    return digest


def model_digest(model: ModelInfo) -> str:
    """A digest of everything that defines the model's content: its bytes and its external data
    files (by name relative to the model and by content), so moving a model keeps its entries
    and changing one weight file loses them."""
    h = hashlib.sha256()
    if model.path is not None:
        h.update(b"model:" + file_sha256(model.path).encode())
        base = model.path.parent
        for ext in sorted(model.external_data):
            try:
                rel = str(Path(ext).relative_to(base))
            except ValueError:
                rel = str(ext)
            h.update(f"\0external:{rel}:".encode() + file_sha256(ext).encode())
    else:
        assert model.data is not None
        h.update(b"model:" + hashlib.sha256(model.data).hexdigest().encode())
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    """Options as plain JSON, order-independent: tuples become lists, mappings sorted, paths str."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def artifact_key(
    backend: str,
    model: ModelInfo | str,
    *,
    versions: Mapping[str, Any],
    shapes: Any = None,
    precision: str = "exact",
    options: Mapping[str, Any] | None = None,
) -> str:
    """The content address of one artifact.

    ``model`` is a :class:`~unirt.model.ModelInfo` or a digest already computed with
    :func:`model_digest`. ``versions`` names every engine and converter version the artifact
    depends on (including the plugin's own conversion logic version); ``shapes`` the input shapes
    it was built for; ``options`` whatever else changes the artifact's bytes.
    """
    _check_name(backend, "backend")
    digest = model if isinstance(model, str) else model_digest(model)
    doc = {
        "format": FORMAT,
        "backend": backend,
        "model": digest,
        "versions": _canonical(versions),
        "shapes": _canonical(shapes),
        "precision": precision,
        "options": _canonical(options or {}),
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:40]


# -- entries -------------------------------------------------------------------------------------
@dataclass
class CacheEntry:
    """One artifact directory as the cache reports it."""

    backend: str
    key: str
    path: Path
    size_bytes: int
    created: float
    last_used: float
    valid: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "key": self.key, "path": str(self.path),
            "size_bytes": self.size_bytes, "created": self.created, "last_used": self.last_used,
            "valid": self.valid, "meta": self.meta,
        }


def _manifest_for(directory: Path) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256_uncached(p)}
    return files


def _sha256_uncached(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(
            doc.get("files"), dict):
        return None
    return doc


def verify_entry(entry: Path) -> bool:
    """True when every file the manifest lists is there with its size and checksum, and no file
    was added: the only state in which an entry may be loaded."""
    doc = _read_manifest(entry)
    if doc is None:
        return False
    files: dict[str, Any] = doc["files"]
    try:
        present = {p.relative_to(entry).as_posix() for p in entry.rglob("*")
                   if p.is_file() and p.name != MANIFEST}
        if present != set(files):
            return False
        for rel, info in files.items():
            p = entry / rel
            if p.stat().st_size != info.get("size") or _sha256_uncached(p) != info.get("sha256"):
                return False
    except OSError:
        return False
    return True


def _remove_tree(path: Path) -> None:
    """Move a directory out of the way atomically, then delete it, so a reader never sees a
    half-deleted entry under its real name."""
    if not path.exists():
        return
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


class ArtifactCache:
    """The cache under one root. Cheap to create; holds no open files."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = cache_dir(root)

    # -- building and loading ---------------------------------------------------------------
    def entry_path(self, backend: str, key: str) -> Path:
        _check_name(backend, "backend")
        _check_name(key, "key")
        return self.root / backend / key

    def lookup(self, backend: str, key: str) -> Path | None:
        """The entry's directory when it exists and verifies; ``None`` otherwise."""
        entry = self.entry_path(backend, key)
        if entry.is_dir() and verify_entry(entry):
            self._touch(entry)
            return entry
        return None

    def get_or_build(
        self,
        backend: str,
        key: str,
        build: Callable[[Path], Mapping[str, Any] | None],
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> tuple[Path, bool]:
        """Return ``(entry directory, built)``: the verified entry for ``key``, building it with
        ``build(tmpdir)`` when it is missing or corrupt.

        ``build`` writes the artifact files into the empty directory it is given and may return
        more metadata for the manifest. Exceptions from ``build`` propagate (nothing is left
        behind); a :class:`~unirt.errors.UnirtError` keeps its message.
        """
        hit = self.lookup(backend, key)
        if hit is not None:
            return hit, False
        import filelock

        entry = self.entry_path(backend, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(entry.parent / f".{key}.lock"), thread_local=False)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except filelock.Timeout as exc:
            raise CacheError(f"timed out after {LOCK_TIMEOUT_S:.0f} s waiting for another "
                             f"process building cache entry {backend}/{key}") from exc
        try:
            hit = self.lookup(backend, key)  # another process may have built it meanwhile
            if hit is not None:
                return hit, False
            if entry.exists():
                logger.warning("cache entry %s/%s is corrupt or incomplete; rebuilding",
                               backend, key)
                _remove_tree(entry)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=entry.parent))
            try:
                extra = build(tmp) or {}
                now = time.time()
                manifest = {
                    "format": FORMAT, "backend": backend, "key": key, "created": now,
                    "meta": _canonical({**(meta or {}), **extra}),
                    "files": _manifest_for(tmp),
                }
                # The manifest goes last: an entry without one is incomplete by definition.
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
                os.rename(tmp, entry)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return entry, True
        except OSError as exc:
            raise CacheError(f"cannot write cache entry {backend}/{key} under {self.root}: "
                             f"{exc.strerror or exc}") from exc
        finally:
            lock.release()

    def managed_dir(self, backend: str, key: str, engine: str) -> Path:
        """A directory for an engine's own cache (listed and pruned like any entry, never
        verified by manifest: the engine validates its files). ``key`` should still be
        content-addressed so two models never share one."""
        entry = self.entry_path(backend, key)
        try:
            entry.mkdir(parents=True, exist_ok=True)
            marker = entry / ENGINE_MANAGED
            if not marker.exists():
                marker.write_text(engine)
            os.utime(marker)  # last use, as a manifest's mtime is for other entries
        except OSError as exc:
            raise CacheError(f"cannot create cache directory {entry}: "
                             f"{exc.strerror or exc}") from exc
        return entry

    def remove(self, backend: str, key: str) -> bool:
        """Remove one entry (atomically out of the way first); True when there was one."""
        entry = self.entry_path(backend, key)
        existed = entry.exists()
        _remove_tree(entry)
        return existed

    @staticmethod
    def _touch(entry: Path) -> None:
        # The manifest's mtime is the entry's last use: what `cache clear --older-than` reads.
        with contextlib.suppress(OSError):
            os.utime(entry / MANIFEST)

    # -- reporting and pruning ----------------------------------------------------------------
    def backends(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def entries(self, backend: str | None = None, *, verify: bool = False) -> Iterator[CacheEntry]:
        """Every entry (or one backend's). ``verify`` re-checks checksums (reads every file)."""
        names = [backend] if backend else self.backends()
        for name in names:
            bdir = self.root / name
            if not bdir.is_dir():
                continue
            for entry in sorted(bdir.iterdir()):
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                yield self._describe(name, entry, verify)

    @staticmethod
    def _describe(backend: str, entry: Path, verify: bool) -> CacheEntry:
        marker = entry / ENGINE_MANAGED
        if marker.is_file():
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            used = marker.stat().st_mtime
            return CacheEntry(backend=backend, key=entry.name, path=entry, size_bytes=size,
                              created=used, last_used=used, valid=True,
                              meta={"managed_by": marker.read_text().strip() or backend})
        doc = _read_manifest(entry)
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        try:
            last_used = (entry / MANIFEST).stat().st_mtime
        except OSError:
            last_used = entry.stat().st_mtime
        valid = verify_entry(entry) if verify else doc is not None
        return CacheEntry(
            backend=backend, key=entry.name, path=entry, size_bytes=size,
            created=float(doc.get("created", last_used)) if doc else entry.stat().st_mtime,
            last_used=last_used, valid=valid, meta=dict(doc.get("meta", {})) if doc else {},
        )

    def info(self) -> dict[str, Any]:
        per_backend: dict[str, dict[str, int]] = {}
        for e in self.entries():
            b = per_backend.setdefault(e.backend, {"entries": 0, "size_bytes": 0})
            b["entries"] += 1
            b["size_bytes"] += e.size_bytes
        return {
            "path": str(self.root),
            "entries": sum(b["entries"] for b in per_backend.values()),
            "size_bytes": sum(b["size_bytes"] for b in per_backend.values()),
            "backends": per_backend,
        }

    def clear(self, *, backend: str | None = None, older_than: float | None = None,
              now: float | None = None) -> list[CacheEntry]:
        """Remove entries (all, one backend's, or those unused for ``older_than`` seconds) and
        leftovers of interrupted builds; returns what was removed. Entries being built by another
        process right now are never touched (they are not entries until renamed into place)."""
        now = time.time() if now is None else now
        removed: list[CacheEntry] = []
        for e in list(self.entries(backend)):
            if older_than is not None and now - e.last_used < older_than:
                continue
            _remove_tree(e.path)
            removed.append(e)
        for name in [backend] if backend else self.backends():
            self._sweep(self.root / name, now, older_than)
        return removed

    @staticmethod
    def _sweep(bdir: Path, now: float, older_than: float | None) -> None:
        # Temp dirs of crashed builds and trash; an hour old at least, so a live build survives.
        if not bdir.is_dir():
            return
        grace = max(3600.0, older_than or 0.0)
        for p in bdir.iterdir():
            if p.is_dir() and p.name.startswith((".tmp-", ".trash-")):
                with contextlib.suppress(OSError):
                    if now - p.stat().st_mtime > grace:
                        shutil.rmtree(p, ignore_errors=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``"30"``/``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise UnirtError(f"invalid duration {text!r}: use a number with s, m, h, d or w, e.g. 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def iter_files(entry: Path) -> Iterable[Path]:
    """The artifact files of an entry (without the manifest)."""
    return (p for p in sorted(entry.rglob("*")) if p.is_file() and p.name != MANIFEST)
