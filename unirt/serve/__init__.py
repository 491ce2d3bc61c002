"""``unirt serve``: the Open Inference Protocol v2 (KServe v2) over HTTP/REST on every engine.

Needs the ``serve`` extra (Starlette, uvicorn, prometheus-client): ``pip install "unirt[serve]"``.
``import unirt`` imports nothing of this package, and this package imports none of those
libraries until a server is built: :func:`serve` runs one from a :class:`ServeConfig`,
:func:`create_app` builds the ASGI app from models already open, for an ASGI stack of one's own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelSpec", "ServeConfig", "build_config", "create_app", "open_model", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("ServeConfig", "ModelSpec", "build_config"):
        from unirt.serve import config

        return getattr(config, name)
    if name == "create_app":
        from unirt.serve.app import create_app

        return create_app
    if name == "open_model":
        from unirt.serve.served import open_model

        return open_model
    if name == "serve":
        from unirt.serve.server import serve

        return serve
    raise AttributeError(f"module 'unirt.serve' has no attribute {name!r}")
