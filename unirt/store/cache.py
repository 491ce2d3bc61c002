"""The content-addressed artifact cache shared by every backend (converted ncnn models, TensorRT
engines, OpenVINO blobs, verification verdicts, fastest-backend rankings).

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
  disk error, a hand edit) is removed and rebuilt, never loaded.
* **Entries prove where they came from.** The manifest carries an HMAC-SHA256, keyed with a
  per-cache secret (``<root>/.secret``, 32 random bytes, mode 0600), over the section, the key
  and the manifest (so over every file's content). A checksum alone can be recomputed by whoever
  edits a file: a verdict edited to say "verified" with its manifest recomputed would be trusted.
  Without the secret nobody can forge an entry, nor move one to another key. Entries without a
  valid MAC are corrupt: removed and rebuilt (or measured again).
* **Engine caches are checksummed too.** A directory an engine fills itself (OpenVINO's
  ``CACHE_DIR``) is handed to the engine only through :meth:`ArtifactCache.managed`: under the
  key's lock, every file in it is checked against the manifest unirt wrote after the engine's
  last write, files that do not match (or that no manifest vouches for) are deleted before the
  engine sees them, and the manifest is brought up to date after the engine compiled. OpenVINO
  loads a blob with flipped bytes without a word and returns numbers off by 1e36.
* **No cache, no problem.** A cache directory that cannot be created or written (read-only,
  full, a file in its place, permission denied) never fails a load: one warning per process and
  directory (logger ``unirt``), lookups of a readable cache still hit when entries verify, and
  builds happen in a private temporary directory removed at exit (:meth:`ArtifactCache.release`
  frees one earlier). ONNX Runtime needs no cache at all.
* **No scratch left behind.** Build directories of killed processes (``.tmp-*``) and trash
  (``.trash-*``) are swept when the cache is used (once per process and section) and by
  ``unirt cache clear``: a ``.tmp-`` directory whose key's lock nobody holds and which is older
  than :data:`SCRATCH_GRACE_S` belongs to no live build.

Layout: ``<root>/<backend>/<key>/`` with the artifact files and ``manifest.json``; the lock files
``<root>/<backend>/.<key>.lock``; work in progress under ``<root>/<backend>/.tmp-<key>-*``; the
MAC secret ``<root>/.secret``. The root is the platform user cache directory,
``$UNIRT_CACHE_DIR``, or a directory passed explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirt.errors import CacheError, UnirtError

if TYPE_CHECKING:  # pragma: no cover
    from unirt.model.info import ModelInfo

logger = logging.getLogger("unirt")

CACHE_ENV = "UNIRT_CACHE_DIR"
MANIFEST = "manifest.json"
#: Marks a directory an engine fills itself (OpenVINO's CACHE_DIR). Its files are vouched for by
#: a manifest unirt writes after each compile (see :meth:`ArtifactCache.managed`).
ENGINE_MANAGED = ".engine-managed"
#: The per-cache HMAC secret, in the cache root.
SECRET = ".secret"
SECRET_BYTES = 32
#: Bumped when the layout or the key format changes: old entries then miss, never misload.
FORMAT = 1
#: The manifest's own format: 2 added the MAC (manifests without one are corrupt).
MANIFEST_FORMAT = 2
#: How long a process waits for another one building the same entry before giving up.
LOCK_TIMEOUT_S = 600.0
#: Scratch (``.tmp-*``, ``.trash-*``) younger than this is never swept: a ``.tmp-`` directory is
#: swept only when, besides, no process holds its key's lock (a build holds it throughout).
SCRATCH_GRACE_S = 300.0
#: Errors a build raises because of where it writes (the cache's disk), not because of what it
#: builds: the build is run again in a private directory elsewhere.
_PLACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

_CHUNK = 1 << 20

# Per-process state: which roots were warned about, which sections swept, the private scratch
# directory for builds that cannot be cached, the secrets read (per root, per file identity).
_state_lock = threading.Lock()
_warned: set[str] = set()
_swept: set[tuple[str, str]] = set()
_private: list[Path] = []
_secrets: dict[str, tuple[tuple[int, int, int], bytes]] = {}


def _resolve_root(override: str | os.PathLike[str] | None) -> Path:
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("unirt", appauthor=False))


def resolve_root(override: str | os.PathLike[str] | None = None) -> Path:
    """Where the cache root is (``override``, ``$UNIRT_CACHE_DIR``, the platform user cache
    directory), without creating it."""
    return _resolve_root(override)


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache root (created on demand): ``override``, else ``$UNIRT_CACHE_DIR``, else the
    platform user cache directory. Raises :class:`CacheError` when it cannot be created; the
    cache itself (:class:`ArtifactCache`) does not, it works without a directory."""
    root = _resolve_root(override)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"cannot create the cache directory {root}: {_why(exc)}") from exc
    return root


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _warn_once(root: Path, message: str) -> None:
    """One warning per process and cache directory: a broken cache must not flood the log of
    a server that loads a model per request."""
    with _state_lock:
        if str(root) in _warned:
            return
        _warned.add(str(root))
    logger.warning("%s", message)


def _private_dir(prefix: str) -> Path:
    """A new private directory for a build that cannot go into the cache; all of them are
    removed when the process exits (or earlier, by :meth:`ArtifactCache.release`)."""
    import shutil
    import tempfile

    with _state_lock:
        if not _private or not _private[0].is_dir():
            _private[:] = [Path(tempfile.mkdtemp(prefix="unirt-nocache-"))]
            atexit.register(shutil.rmtree, str(_private[0]), True)
        base = _private[0]
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _is_private(path: Path) -> bool:
    with _state_lock:
        return bool(_private) and _private[0] in path.parents


def _check_name(value: str, what: str) -> None:
    # Keys and backend names become directory names: nothing that could climb out of the root.
    if not value or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise CacheError(f"invalid cache {what} {value!r}")


# -- keys ----------------------------------------------------------------------------------------
_file_hashes: dict[tuple[str, int, int, int, int], str] = {}
_file_hashes_lock = threading.Lock()


def file_sha256(path: str | os.PathLike[str],
                read: tuple[tuple[int, int, int, int], str] | None = None) -> str:
    """SHA-256 of a file, memoised per (path, inode, size, mtime, ctime) so a model opened again
    in the same process is not re-read. ctime is in the memo because a rewrite that puts the
    size and mtime back (``cp -p``, ``rsync -a``, pinned build times) cannot put it back.
    ``read``: ``((inode, size, mtime_ns, ctime_ns), sha256)`` of the bytes a caller read from
    this file (:attr:`ModelInfo.file_digest`), used while the file is still that one."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _file_hashes_lock:
        known = _file_hashes.get(memo)
    if known is not None:
        return known
    if read is not None and tuple(read[0]) == memo[1:]:
        digest = read[1]
    else:
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
        h.update(b"model:" + file_sha256(model.path, model.file_digest).encode())
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

    ``model`` is a :class:`~unirt.model.info.ModelInfo` or a digest already computed with
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


# -- the secret and the MAC ----------------------------------------------------------------------
def _read_secret(root: Path) -> bytes | None:
    """The cache's MAC secret, or None when there is none (yet) or it cannot be read. Memoised
    per file identity: one ``stat`` per lookup, not a read."""
    path = root / SECRET
    try:
        st = path.stat()
    except OSError:
        return None
    ident = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _state_lock:
        known = _secrets.get(str(root))
    if known is not None and known[0] == ident:
        return known[1]
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) != SECRET_BYTES:
        return None
    with _state_lock:
        _secrets[str(root)] = (ident, data)
    return data


def _create_secret(root: Path) -> bytes:
    """The cache's secret, created when missing (``secrets.token_bytes``, mode 0600).

    Written in full to a private file first, then hard-linked into place: a reader sees no
    secret or the whole one, and two processes creating it at once end with the same one (the
    second link fails and that process reads the first one's). Raises OSError when the root
    cannot be written: then nothing is cached, since nothing written could be vouched for.
    """
    found = _read_secret(root)
    if found is not None:
        return found
    import secrets  # here: a cache that has its secret never makes another

    path = root / SECRET
    tmp = root / f".secret-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Another process was first (a linked secret is always whole: its secret is the
            # one), or the file there is damaged (the wrong length): only then replace it.
            if _read_secret(root) is None:
                os.replace(tmp, path)
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    found = _read_secret(root)
    if found is None:
        raise OSError(errno.EIO, f"the cache secret {path} cannot be read back")
    return found


def _mac(secret: bytes, backend: str, key: str, doc: Mapping[str, Any]) -> str:
    """HMAC-SHA256 over the section, the key and the manifest without its MAC: the manifest
    holds every file's SHA-256, so this binds the entry's content to its place."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    message = json.dumps({"section": backend, "key": key, "manifest": body},
                         sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def _signed(doc: Mapping[str, Any], secret: bytes | None, backend: str, key: str) -> bool:
    mac = doc.get("mac")
    return (secret is not None and isinstance(mac, str)
            and hmac.compare_digest(mac, _mac(secret, backend, key, doc)))


def sign_document(root: Path, section: str, key: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with a ``mac`` signing it for (``section``, ``key``) with the cache's secret
    (created when missing): for the small files kept beside the entries (the plugin discovery
    cache). Raises OSError when the root cannot be written."""
    body = {k: v for k, v in doc.items() if k != "mac"}
    return {**body, "mac": _mac(_create_secret(root), section, key, body)}


def document_signed(root: Path | None, section: str, key: str, doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` carries a valid :func:`sign_document` MAC for (``section``, ``key``)."""
    return root is not None and _signed(doc, _read_secret(root), section, key)


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


def _older_format(entry: Path) -> bool:
    """Whether an entry's manifest is a whole one of an older format (no MAC yet)."""
    try:
        doc = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("format"), int) and \
        doc["format"] < MANIFEST_FORMAT


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
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(
            doc.get("files"), dict):
        return None
    return doc


def _write_manifest(directory: Path, doc: dict[str, Any], secret: bytes, backend: str,
                    key: str) -> None:
    """Sign and write a manifest atomically (temporary file, then rename over the old one)."""
    doc = {**doc, "format": MANIFEST_FORMAT, "backend": backend, "key": key}
    doc["mac"] = _mac(secret, backend, key, doc)
    tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, directory / MANIFEST)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _verify_entry(entry: Path, backend: str, key: str, secret: bytes | None) -> bool:
    doc = _read_manifest(entry)
    if doc is None or not _signed(doc, secret, backend, key):
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


def verify_entry(entry: Path) -> bool:
    """True when the entry's manifest is signed with its cache's secret for this very entry
    (section and key) and every file it lists is there with its size and checksum, and no file
    was added: the only state in which an entry may be loaded."""
    entry = Path(entry)
    return _verify_entry(entry, entry.parent.name, entry.name, _read_secret(entry.parent.parent))


def _managed_files(entry: Path) -> list[Path]:
    """The engine's files in a managed directory (not unirt's marker and manifest)."""
    return [p for p in sorted(entry.rglob("*")) if p.is_file()
            and p.relative_to(entry).as_posix() not in (MANIFEST, ENGINE_MANAGED)]


def _managed_state(entry: Path, backend: str, key: str, secret: bytes | None, *,
                   memo: bool = True) -> tuple[dict[str, dict[str, Any]], list[Path]]:
    """(the files a signed manifest vouches for and that match it, the files that do not).

    ``memo``: use :func:`file_sha256`'s per-process memo (keyed on inode, size, mtime and ctime,
    which no rewrite can put back), so a second open in one process hashes nothing again."""
    doc = _read_manifest(entry)
    listed: dict[str, Any] = doc["files"] if doc is not None and _signed(
        doc, secret, backend, key) else {}
    good: dict[str, dict[str, Any]] = {}
    bad: list[Path] = []
    for p in _managed_files(entry):
        rel = p.relative_to(entry).as_posix()
        info = listed.get(rel)
        try:
            ok = (isinstance(info, dict) and p.stat().st_size == info.get("size")
                  and (file_sha256(p) if memo else _sha256_uncached(p)) == info.get("sha256"))
        except OSError:
            ok = False
        if ok and isinstance(info, dict):
            good[rel] = info
        else:
            bad.append(p)
    return good, bad


def _remove_tree(path: Path) -> None:
    """Move a directory out of the way atomically, then delete it, so a reader never sees a
    half-deleted entry under its real name."""
    import shutil

    if not path.exists():
        return
    trash = path.parent / f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def _lock_free(lock_path: Path) -> bool:
    """Whether no process holds the lock (tried without waiting). False when it cannot be
    tried (a read-only cache): then nothing is removed."""
    import filelock

    lock = filelock.FileLock(str(lock_path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except (filelock.Timeout, OSError):
        return False
    lock.release()
    return True


def _scratch_key(name: str) -> str | None:
    """The key of a build directory ``.tmp-<key>-<random>`` (mkdtemp's suffix has no dash)."""
    if not name.startswith(".tmp-"):
        return None
    key = name[len(".tmp-"):].rpartition("-")[0]
    return key or None


def _is_stale(p: Path, now: float) -> bool:
    """Whether a scratch directory belongs to no live build: older than the grace period and,
    for a build directory, its key's lock free (a build holds it from mkdtemp to rename). A build
    directory whose lock file is not there (an older layout) must be an hour old."""
    try:
        age = now - p.lstat().st_mtime
    except OSError:
        return False
    if age < SCRATCH_GRACE_S:
        return False
    key = _scratch_key(p.name)
    if key is None:  # trash: what is in it was an entry, already out of every reader's way
        return True
    lock_path = p.parent / f".{key}.lock"
    if not lock_path.exists():
        return age > 3600.0
    return _lock_free(lock_path)


def _scratch(bdir: Path) -> list[Path]:
    try:
        return [p for p in bdir.iterdir()
                if p.name.startswith((".tmp-", ".trash-")) and p.is_dir()]
    except OSError:
        return []


def _tree_size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for p in path.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
    return total


class ArtifactCache:
    """The cache under one root. Cheap to create; holds no open files; never raises because the
    directory is unusable (see "No cache, no problem" above)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = _resolve_root(root)
        #: Why the cache directory cannot be used at all (it cannot be created); None when it
        #: exists. A directory that exists but cannot be written is found out on the first write.
        self.problem: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.problem = _why(exc)
            _warn_once(self.root, f"the unirt cache directory {self.root} cannot be created "
                                  f"({self.problem}): working without a cache")

    def _unwritable(self, exc: BaseException) -> None:
        _warn_once(self.root, f"the unirt cache directory {self.root} cannot be written "
                              f"({_why(exc)}): entries already there are used when they verify, "
                              "nothing new is stored")

    # -- building and loading ---------------------------------------------------------------
    def entry_path(self, backend: str, key: str) -> Path:
        _check_name(backend, "backend")
        _check_name(key, "key")
        return self.root / backend / key

    def _lock_path(self, backend: str, key: str) -> Path:
        return self.root / backend / f".{key}.lock"

    def _verified(self, backend: str, key: str, entry: Path) -> bool:
        try:
            return entry.is_dir() and _verify_entry(entry, backend, key, _read_secret(self.root))
        except OSError:
            return False

    def has_section(self, backend: str) -> bool:
        """Whether anything was ever stored under ``backend`` (its directory exists): a lookup
        that cannot hit is answered without working out its key."""
        return self.problem is None and (self.root / backend).is_dir()

    def lookup(self, backend: str, key: str) -> Path | None:
        """The entry's directory when it exists and verifies (files and MAC); ``None``
        otherwise. An entry that is there but does not verify is removed (when no process is
        building it and the cache can be written), with a warning."""
        entry = self.entry_path(backend, key)
        if self.problem is not None:
            return None
        self._sweep_once(backend)
        if self._verified(backend, key, entry):
            self._touch(entry)
            return entry
        if os.path.lexists(entry):
            self._discard(backend, key, entry)
        return None

    def _discard(self, backend: str, key: str, entry: Path) -> None:
        """Remove an entry that does not verify, under its key's lock (tried without waiting:
        a builder holding it is about to replace the entry anyway), so that a good entry a
        builder has just renamed into place is never removed."""
        import filelock

        lock = filelock.FileLock(str(self._lock_path(backend, key)), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except (filelock.Timeout, OSError):
            return
        try:
            if os.path.lexists(entry) and not self._verified(backend, key, entry):
                if _older_format(entry):  # written before entries were signed: expected once
                    logger.info("cache entry %s/%s was written by an older unirt: removed",
                                backend, key)
                else:
                    logger.warning("cache entry %s/%s is corrupt or was altered (its files, "
                                   "manifest or MAC do not match): removed", backend, key)
                _remove_tree(entry)
        finally:
            lock.release()

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

        When the cache cannot be written (read-only, full, not a directory, no permission, or
        another process holding the key's lock past :data:`LOCK_TIMEOUT_S`), the artifact is
        built in a private temporary directory instead, which is returned (``built`` True) and
        removed at exit or by :meth:`release`: the caller works the same, nothing is cached.
        """
        hit = self.lookup(backend, key)
        if hit is not None:
            return hit, False
        import shutil
        import tempfile

        if self.problem is not None:
            return self._build_private(backend, key, build), True
        import filelock

        entry = self.entry_path(backend, key)
        lock_path = self._lock_path(backend, key)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644))
            secret = _create_secret(self.root)
        except OSError as exc:
            self._unwritable(exc)
            return self._build_private(backend, key, build), True
        lock = filelock.FileLock(str(lock_path), thread_local=False)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except (filelock.Timeout, OSError) as exc:
            logger.warning("unirt: waited %.0f s for another process building cache entry %s/%s "
                           "(%s); building it privately", LOCK_TIMEOUT_S, backend, key,
                           _why(exc) if isinstance(exc, OSError) else "timed out")
            return self._build_private(backend, key, build), True
        try:
            if self._verified(backend, key, entry):  # another process built it meanwhile
                self._touch(entry)
                return entry, False
            if os.path.lexists(entry):
                logger.warning("cache entry %s/%s is corrupt or incomplete; rebuilding",
                               backend, key)
                _remove_tree(entry)
            try:
                tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=entry.parent))
            except OSError as exc:
                self._unwritable(exc)
                return self._build_private(backend, key, build), True
            try:
                extra = build(tmp) or {}
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                if exc.errno not in _PLACE_ERRNOS:
                    raise
                self._unwritable(exc)  # the disk under the cache, not the build: elsewhere
                return self._build_private(backend, key, build), True
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            try:
                # The manifest goes last: an entry without one is incomplete by definition.
                _write_manifest(tmp, {
                    "created": time.time(), "meta": _canonical({**(meta or {}), **extra}),
                    "files": _manifest_for(tmp)}, secret, backend, key)
                os.rename(tmp, entry)
            except OSError as exc:
                self._unwritable(exc)
                return self._keep_private(tmp, backend, key, build), True
            return entry, True
        finally:
            lock.release()

    def _build_private(self, backend: str, key: str,
                       build: Callable[[Path], Mapping[str, Any] | None]) -> Path:
        import shutil

        try:
            tmp = _private_dir(f"{backend}-{key[:12]}-")
        except OSError as exc:
            raise CacheError(f"cannot build {backend}/{key}: the cache directory {self.root} "
                             f"cannot be written and no temporary directory can be made "
                             f"({_why(exc)})") from exc
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def _keep_private(self, tmp: Path, backend: str, key: str,
                      build: Callable[[Path], Mapping[str, Any] | None]) -> Path:
        """A build that succeeded but could not be stored (the disk filled up writing its
        manifest): moved to a private directory rather than built again."""
        import shutil

        try:
            target = _private_dir(f"{backend}-{key[:12]}-")
            shutil.rmtree(target)
            shutil.move(str(tmp), str(target))
            with contextlib.suppress(OSError):
                (target / MANIFEST).unlink()
            return target
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return self._build_private(backend, key, build)

    def read_json(self, backend: str, key: str, name: str) -> Any:
        """The JSON document ``name`` of the verified entry for ``key``, or None when there is
        no entry. Raises ``OSError`` or ``ValueError`` when the file cannot be read or parsed:
        the caller decides what an unreadable result means."""
        entry = self.lookup(backend, key)
        if entry is None:
            return None
        return json.loads((entry / name).read_text())

    def write_json(self, backend: str, key: str, name: str, doc: Any,
                   meta: Mapping[str, Any]) -> None:
        """Replace the entry for ``key`` by one holding ``doc`` as the JSON file ``name``
        (``meta`` in its manifest), built as :meth:`get_or_build` builds: atomically, signed;
        where the cache cannot be written, nothing is kept."""
        self.remove(backend, key)

        def build(tmp: Path) -> dict[str, Any]:
            (tmp / name).write_text(json.dumps(doc, indent=1))
            return dict(meta)

        entry, _ = self.get_or_build(backend, key, build)
        self.release(entry)

    @staticmethod
    def release(path: Path) -> None:
        """Remove a private build directory now (what :meth:`get_or_build` returns when the
        cache cannot be written), once its files are loaded; a real entry is left alone."""
        import shutil

        if _is_private(Path(path)):
            shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def managed(self, backend: str, key: str, engine: str) -> Iterator[Path | None]:
        """A directory an engine fills itself (OpenVINO's ``CACHE_DIR``), checked before the
        engine sees it and vouched for after it wrote: ``with cache.managed(...) as d:`` then
        compile with ``d`` as the engine's cache (``None``: compile without one).

        Under the key's lock for the whole block (two processes compiling one model at once
        serialise, and the second loads what the first compiled): every file is checked against
        the signed manifest; one that does not match, or that no manifest lists (flipped bytes,
        a blob left by a compile that was killed, a planted file), is deleted with a warning,
        so the engine compiles again instead of loading it. After the block (when it did not
        raise) the manifest is written for what the engine left. ``key`` should be
        content-addressed so two models never share a directory.

        A cache that cannot be written: when every file in the directory verifies, a private
        directory of links to them (see :meth:`_managed_copy`); else ``None``. A cache that
        cannot be created: ``None``.
        """
        entry = self.entry_path(backend, key)
        if self.problem is not None:
            yield None
            return
        import filelock

        lock_path = self._lock_path(backend, key)
        secret: bytes | None = None
        try:
            entry.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644))
            secret = _create_secret(self.root)
            marker = entry / ENGINE_MANAGED
            if not marker.exists():
                marker.write_text(engine)
            os.utime(marker)  # last use, as a manifest's mtime is for other entries
        except OSError as exc:
            self._unwritable(exc)
        if secret is None:  # read-only
            with self._managed_copy(backend, key, entry) as private:
                yield private
            return
        lock = filelock.FileLock(str(lock_path), thread_local=False)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except (filelock.Timeout, OSError):
            logger.warning("unirt: another process holds %s/%s; compiling without the cache",
                           backend, key)
            yield None
            return
        try:
            try:
                good, bad = _managed_state(entry, backend, key, secret)
                for p in bad:
                    p.unlink()
            except OSError as exc:
                self._unwritable(exc)
                clean = False
            else:
                clean = True
                if bad:
                    logger.warning("%s cache %s/%s: %d file(s) do not match the manifest unirt "
                                   "wrote (%s); removed, %s compiles again", engine, backend,
                                   key, len(bad), ", ".join(p.name for p in bad[:3]), engine)
            yield entry if clean else None
            if clean:
                self._record_managed(backend, key, entry, good, secret)
        finally:
            lock.release()

    @contextlib.contextmanager
    def _managed_copy(self, backend: str, key: str, entry: Path) -> Iterator[Path | None]:
        """For a cache that cannot be written: when every file of the managed directory
        verifies, a private directory of links to them, removed after the block (the engine
        has loaded what it needed by then). Not the directory itself: OpenVINO deletes a blob
        it finds stale (its model file's time changed) and raises when it cannot ("cannot
        remove: Read-only file system", 2026.4); in the private copy it deletes a link and
        compiles. ``None`` when the directory is missing or anything in it does not verify."""
        import shutil

        private: Path | None = None
        try:
            if entry.is_dir():
                good, bad = _managed_state(entry, backend, key, _read_secret(self.root))
                if not bad:
                    private = _private_dir(f"{backend}-{key[:12]}-")
                    for rel in good:
                        (private / rel).parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(entry / rel, private / rel)
        except OSError as exc:
            logger.debug("unirt: cannot use %s/%s from a read-only cache: %s", backend, key,
                         _why(exc))
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
            private = None
        try:
            yield private
        finally:
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)

    def _record_managed(self, backend: str, key: str, entry: Path,
                        known: dict[str, dict[str, Any]], secret: bytes) -> None:
        """Bring the manifest up to date with what the engine wrote (files it added or
        replaced are hashed now; unchanged ones keep their checked sums)."""
        try:
            files: dict[str, dict[str, Any]] = {}
            changed = False
            for p in _managed_files(entry):
                rel = p.relative_to(entry).as_posix()
                info = known.get(rel)
                size = p.stat().st_size
                digest = file_sha256(p)
                if info is None or info.get("size") != size or info.get("sha256") != digest:
                    changed = True
                files[rel] = {"size": size, "sha256": digest}
            if changed or set(files) != set(known) or not (entry / MANIFEST).exists():
                _write_manifest(entry, {"managed_by": self._managed_by(entry), "files": files},
                                secret, backend, key)
        except OSError as exc:  # unlisted files are deleted on the next open: nothing unsafe
            self._unwritable(exc)

    @staticmethod
    def _managed_by(entry: Path) -> str:
        try:
            return (entry / ENGINE_MANAGED).read_text().strip()
        except OSError:
            return ""

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

    # -- scratch --------------------------------------------------------------------------------
    def _sweep_once(self, backend: str) -> None:
        """Sweep one section's stale scratch, once per process (a directory listing)."""
        mark = (str(self.root), backend)
        with _state_lock:
            if mark in _swept:
                return
            _swept.add(mark)
        self._sweep(self.root / backend, time.time())

    @staticmethod
    def _sweep(bdir: Path, now: float) -> list[Path]:
        removed = []
        for p in _scratch(bdir):
            if _is_stale(p, now):
                import shutil  # here: the sweep runs on every lookup's path, usually idle

                shutil.rmtree(p, ignore_errors=True)
                if not p.exists():
                    removed.append(p)
        if removed:
            logger.info("unirt: removed %d stale build director%s under %s", len(removed),
                        "y" if len(removed) == 1 else "ies", bdir)
        return removed

    # -- reporting and pruning ----------------------------------------------------------------
    def backends(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return []

    def entries(self, backend: str | None = None, *, verify: bool = False) -> Iterator[CacheEntry]:
        """Every entry (or one backend's). ``verify`` re-checks checksums (reads every file)."""
        names = [backend] if backend else self.backends()
        secret = _read_secret(self.root)
        for name in names:
            bdir = self.root / name
            try:
                listing = sorted(bdir.iterdir()) if bdir.is_dir() else []
            except OSError:
                continue
            for entry in listing:
                if not entry.is_dir() or entry.name.startswith("."):
                    continue
                try:
                    described = self._describe(name, entry, verify, secret)
                except OSError:  # removed while listed
                    continue
                yield described

    @staticmethod
    def _describe(backend: str, entry: Path, verify: bool, secret: bytes | None) -> CacheEntry:
        marker = entry / ENGINE_MANAGED
        size = _tree_size(entry)
        if marker.is_file():
            used = marker.stat().st_mtime
            if verify:
                valid = not _managed_state(entry, backend, entry.name, secret, memo=False)[1]
            else:  # sizes only: what a listing can afford
                doc = _read_manifest(entry)
                listed = doc["files"] if doc is not None and _signed(
                    doc, secret, backend, entry.name) else {}
                valid = all(isinstance(listed.get(rel := p.relative_to(entry).as_posix()), dict)
                            and listed[rel].get("size") == p.stat().st_size
                            for p in _managed_files(entry))
            return CacheEntry(backend=backend, key=entry.name, path=entry, size_bytes=size,
                              created=used, last_used=used, valid=valid,
                              meta={"managed_by": marker.read_text().strip() or backend})
        doc = _read_manifest(entry)
        try:
            last_used = (entry / MANIFEST).stat().st_mtime
        except OSError:
            last_used = entry.stat().st_mtime
        if verify:
            valid = _verify_entry(entry, backend, entry.name, secret)
        else:
            valid = doc is not None and _signed(doc, secret, backend, entry.name)
        return CacheEntry(
            backend=backend, key=entry.name, path=entry, size_bytes=size,
            created=float(doc.get("created", last_used)) if doc else entry.stat().st_mtime,
            last_used=last_used, valid=valid, meta=dict(doc.get("meta", {})) if doc else {},
        )

    def info(self) -> dict[str, Any]:
        """Where the cache is, whether it can be used, what it holds per backend, and the
        scratch of interrupted builds (``stale``: what the next sweep removes)."""
        per_backend: dict[str, dict[str, int]] = {}
        for e in self.entries():
            b = per_backend.setdefault(e.backend, {"entries": 0, "size_bytes": 0})
            b["entries"] += 1
            b["size_bytes"] += e.size_bytes
        now = time.time()
        scratch = {"dirs": 0, "stale": 0, "size_bytes": 0}
        for name in self.backends():
            for p in _scratch(self.root / name):
                scratch["dirs"] += 1
                scratch["stale"] += int(_is_stale(p, now))
                scratch["size_bytes"] += _tree_size(p)
        return {
            "path": str(self.root),
            "problem": self.problem,
            "entries": sum(b["entries"] for b in per_backend.values()),
            "size_bytes": sum(b["size_bytes"] for b in per_backend.values()),
            "backends": per_backend,
            "scratch": scratch,
        }

    def clear(self, *, backend: str | None = None, older_than: float | None = None,
              now: float | None = None) -> list[CacheEntry]:
        """Remove entries (all, one backend's, or those unused for ``older_than`` seconds) and
        leftovers of interrupted builds; returns what was removed. Entries being built by another
        process right now are never touched (they are not entries until renamed into place, and
        their build directory's lock is held)."""
        now = time.time() if now is None else now
        removed: list[CacheEntry] = []
        for e in list(self.entries(backend)):
            if older_than is not None and now - e.last_used < older_than:
                continue
            _remove_tree(e.path)
            removed.append(e)
        for name in [backend] if backend else self.backends():
            self._sweep(self.root / name, now)
        return removed


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
