"""Third-party plugins' entry points, remembered between processes.

``importlib.metadata.entry_points()`` reads the metadata of every installed distribution: on a
plain environment that, with importing :mod:`importlib.metadata` itself, costs 30-50 ms of every
process that loads a model, to find usually nothing. What it finds depends only on ``sys.path``
and on the ``entry_points.txt`` files of the distributions on it, so the answer is kept in the
unirt cache (``<cache>/.plugins/<key>.json``) with a stamp of those: every entry of
``sys.path``, and for each, which ``*.dist-info``/``*.egg-info`` directories it holds and the
identity (inode, size, mtime) of each one's ``entry_points.txt``. Installing, removing or
upgrading a distribution, editing an ``entry_points.txt``, or changing ``sys.path`` changes the
stamp: the next process scans again (one directory listing per ``sys.path`` entry and one
``stat`` per distribution is what checking the stamp costs).

Only what ``importlib.metadata`` finds on ``sys.path`` can be stamped: when ``sys.meta_path``
holds another finder that provides distributions, or an entry point's value is not the plain
``module:attr`` form, the answer is not kept and every process scans. The file is signed with
the cache's secret (as every cache entry is): a file that does not verify is ignored and
rewritten, so nobody who can write the cache directory can make unirt import a module no
installed distribution declares. Where the cache cannot be written, every process scans, and
says nothing: discovery works as it did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger("unirt")

#: The directory under the cache root (a dot-directory: not a cache section).
DISCOVERY_DIR = ".plugins"
#: Bumped when the file's layout or the stamp changes: old files then miss.
FORMAT = 1
#: ``importlib.metadata.EntryPoint.pattern``: values of another form are not kept.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class Found(NamedTuple):
    """One entry point of the group: its name, its ``module:attr`` value, its distribution,
    and the ``importlib.metadata.EntryPoint`` when it was scanned in this process."""

    name: str
    value: str
    dist: str
    entry_point: Any = None

    def load(self) -> Any:
        """Import what the entry point names: ``EntryPoint.load`` when scanned, else the same
        steps (so a plugin that fails to import fails with the same exception)."""
        if self.entry_point is not None:
            return self.entry_point.load()
        import functools
        from importlib import import_module

        match = _VALUE.match(self.value)
        if match is None:  # never kept in the cache; here for safety
            raise ValueError(f"entry point value {self.value!r} is not 'module:attr'")
        module = import_module(match.group("module"))
        attrs = filter(None, (match.group("attr") or "").split("."))
        return functools.reduce(getattr, attrs, module)


def scan(group: str) -> list[Found]:
    """The group's entry points as ``importlib.metadata`` finds them now (no cache)."""
    from importlib.metadata import entry_points

    return [Found(ep.name, ep.value, getattr(ep.dist, "name", None) or "unknown distribution",
                  ep) for ep in entry_points(group=group)]


def discover(group: str) -> list[Found]:
    """The group's entry points: from the cache when its stamp still holds, else scanned (and
    kept for the next process)."""
    stamp = _stamp()
    if stamp is None:
        return scan(group)
    where = _file(group)
    if where is not None:
        cached = _read(*where, group, stamp)
        if cached is not None:
            return cached
    found = scan(group)
    if where is not None and all(_VALUE.match(f.value) for f in found):
        _write(*where, group, stamp, found)
    return found


def _stampable() -> bool:
    """Whether ``importlib.metadata`` finds distributions through ``sys.path`` alone."""
    from importlib.machinery import PathFinder

    return all(finder is PathFinder or not hasattr(finder, "find_distributions")
               for finder in sys.meta_path)


def _stamp() -> str | None:
    """A digest of everything the scan depends on (see the module's docstring); None when the
    scan depends on more than that."""
    if not _stampable():
        return None
    parts: list[Any] = [sys.version, [os.fspath(p) if isinstance(p, os.PathLike) else p
                                      for p in sys.path]]
    cwd = None
    for entry in sys.path:
        if not isinstance(entry, (str, os.PathLike)):
            parts.append(None)
            continue
        where = os.fspath(entry)
        if not where:  # '' is the current directory, as importlib.metadata reads it
            cwd = cwd or os.getcwd()
            where = cwd
        parts.append(_entry_stamp(where))
    return hashlib.sha256(json.dumps(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _entry_stamp(where: str) -> Any:
    try:
        st = os.stat(where)
    except (OSError, ValueError):
        return [where, None]
    if not stat.S_ISDIR(st.st_mode):  # a zip file: its metadata changes with it
        return [where, st.st_ino, st.st_size, st.st_mtime_ns]
    egg = where.lower().endswith(".egg")
    try:
        with os.scandir(where) as listing:
            names = [e.name for e in listing]
    except OSError:
        return [where, "unreadable", st.st_mtime_ns]
    found = []
    for name in names:
        low = name.lower()
        if low.endswith((".dist-info", ".egg-info")) or (egg and low == "egg-info"):
            try:
                ep = os.stat(os.path.join(where, name, "entry_points.txt"))
                found.append([name, ep.st_ino, ep.st_size, ep.st_mtime_ns])
            except OSError:
                found.append([name])
    found.sort()
    return [where, found]


def _key(group: str) -> str:
    """One file per interpreter, ``sys.path`` and group (the stamp is inside it)."""
    paths = [os.fspath(p) if isinstance(p, os.PathLike) else p for p in sys.path
             if isinstance(p, (str, os.PathLike))]
    text = json.dumps([FORMAT, group, sys.executable, os.getcwd() if "" in paths else "",
                       paths])
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _file(group: str) -> tuple[Path, Path] | None:
    """(the file for ``group``, the cache root), or None when there is no cache root."""
    from unirt.store.cache import resolve_root

    try:
        root = resolve_root()
    except Exception:  # no home directory to put a cache in, say: no cache
        return None
    return root / DISCOVERY_DIR / f"{_key(group)}.json", root


def _body(group: str, stamp: str, found: Sequence[Found]) -> dict[str, Any]:
    return {"format": FORMAT, "group": group, "stamp": stamp,
            "entry_points": [[f.name, f.value, f.dist] for f in found]}


def _read(path: Path, root: Path, group: str, stamp: str) -> list[Found] | None:
    from unirt.store.cache import document_signed

    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict) or doc.get("stamp") != stamp or \
                doc.get("format") != FORMAT or doc.get("group") != group:
            return None
        if not document_signed(root, DISCOVERY_DIR, path.stem, doc):
            logger.debug("plugin discovery cache %s does not verify: scanning", path)
            return None
        found = [Found(str(name), str(value), str(dist))
                 for name, value, dist in doc["entry_points"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        logger.debug("plugin discovery cache %s unreadable: scanning", path, exc_info=True)
        return None
    if not all(_VALUE.match(f.value) for f in found):
        return None
    return found


def _write(path: Path, root: Path, group: str, stamp: str,
           found: Sequence[Found]) -> None:
    """Keep the scan for the next process; quietly nothing where the cache cannot be written
    (discovery works without it, and a read-only cache must not cost a warning per process)."""
    from unirt.store.cache import sign_document
    from unirt.store.files import write_atomic

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        doc = sign_document(root, DISCOVERY_DIR, path.stem, _body(group, stamp, found))
        write_atomic(path, json.dumps(doc, indent=1), mode=0o600)
    except (OSError, ValueError):
        logger.debug("plugin discovery cache %s not written", path, exc_info=True)
