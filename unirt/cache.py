"""Where unirt keeps artifacts (converted models, compiled blobs, engine caches).

One directory for every backend: the platform's user cache directory by default, overridden by
``UNIRT_CACHE_DIR``. Backends ask for a subdirectory of their own with :func:`backend_cache_dir`.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "UNIRT_CACHE_DIR"


def cache_dir() -> Path:
    """The cache root (created on demand): ``$UNIRT_CACHE_DIR`` or the user cache dir."""
    override = os.environ.get(CACHE_ENV)
    if override:
        root = Path(override).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("unirt", appauthor=False))
    root.mkdir(parents=True, exist_ok=True)
    return root


def backend_cache_dir(backend: str) -> Path:
    """A directory that belongs to one backend, under the cache root."""
    path = cache_dir() / backend
    path.mkdir(parents=True, exist_ok=True)
    return path
