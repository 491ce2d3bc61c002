"""Running the server: listen first (a busy port fails before any model is loaded), load every
model through ``unirt.load``, then serve until SIGTERM or SIGINT, which drain the requests in
flight and return normally (exit status 0)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
from typing import Any

from unirt.errors import UnirtError
from unirt.serve.config import ServeConfig

logger = logging.getLogger("unirt")

#: uvicorn cancels what is left this long after the app has answered it with a 503.
DRAIN_MARGIN_S = 1.0
#: The libraries of the ``serve`` extra, by import name.
REQUIRED = ("starlette", "uvicorn", "prometheus_client")


def require_extra() -> None:
    """A clear error naming the extra when a library of it is missing."""
    import importlib.util

    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        raise UnirtError(f"unirt serve needs the serve extra (missing: {', '.join(missing)}): "
                         'pip install "unirt[serve]"')


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UnirtError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UnirtError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: ServeConfig) -> None:
    """Serve ``config``'s models until SIGTERM/SIGINT; returns after draining."""
    require_extra()
    import uvicorn

    from unirt.serve.app import create_app
    from unirt.serve.served import open_model

    sock = bind(config.host, config.port)
    opened: dict[str, Any] = {}
    try:
        for spec in config.models:
            opened[spec.name] = open_model(spec, config)
        url = url_of(sock)

        def on_ready() -> None:
            logger.info("unirt serve: %d model(s) ready on %s (%s)", len(opened), url,
                        ", ".join(f"{n} on {m.backend}" for n, m in opened.items()))

        app = create_app(opened, workers=config.workers,
                         max_request_bytes=config.max_request_bytes, on_ready=on_ready)
        state = app.state.unirt
        drain = config.drain_timeout_s

        class Server(uvicorn.Server):
            """uvicorn's server, telling the app when SIGTERM came: the app answers what is
            still unanswered at the drain's end with a 503, before uvicorn would cancel it
            (a plain-text 500 and a traceback per request)."""

            def handle_exit(self, sig: int, frame: Any) -> None:
                if not self.should_exit:
                    logger.info("unirt serve: %s: draining the requests in flight (up to "
                                "%g s)", signal.Signals(sig).name, drain)
                    with contextlib.suppress(RuntimeError):  # no loop: nothing in flight
                        asyncio.get_running_loop().call_soon_threadsafe(state.begin_drain, drain)
                super().handle_exit(sig, frame)

        server = Server(uvicorn.Config(
            app, lifespan="on", access_log=False, log_level="warning", server_header=False,
            timeout_graceful_shutdown=math.ceil(drain + DRAIN_MARGIN_S)))
        # uvicorn re-raises the signal that stopped it once it has drained; a handler of ours
        # takes it, so that a drained stop is a normal return (exit status 0), not a kill.
        previous = {sig: signal.signal(sig, _drained) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        logger.info("unirt serve: stopped")
    finally:
        sock.close()
        for served in opened.values():
            served.session.close()


def _drained(signum: int, frame: Any) -> None:
    logger.debug("unirt serve: drained (%s)", signal.Signals(signum).name)
