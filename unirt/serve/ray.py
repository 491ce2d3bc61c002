"""Scale-out on Ray Serve: the same Open Inference Protocol v2 app, served by a Ray Serve
deployment whose replicas each hold their own unirt sessions.

Nothing here manages a cluster: Ray Serve places the replicas, routes HTTP to them through its
proxy, restarts the ones that fail their health check and scales them by its autoscaling
config. What unirt adds is what a replica is: in its constructor it loads every model through
:func:`unirt.load` (routing, verification, cache: on its own node, so a GPU node routes to a GPU
backend), then hands Serve the very Starlette app ``unirt serve`` runs (routes, codecs, errors,
metrics: :func:`unirt.serve.app.build_app`) as its ASGI ingress. Only batching changes hands:
a model that batches goes through Ray Serve's ``@serve.batch``, sized in rows (not requests)
so that ``max_batch`` means what it means under ``unirt serve``.

Needs the ``ray`` extra (``pip install "unirt[ray]"``); importing this module imports no Ray.
On a cluster::

    from ray import serve
    from unirt.serve.config import build_config
    from unirt.serve.ray import RayOptions, deployment

    config = build_config(["/models/resnet.onnx"], prefer=["onnxruntime-cuda"])
    serve.run(deployment(config, RayOptions(num_gpus=1, autoscaling={"min_replicas": 1,
              "max_replicas": 8})), name="unirt", route_prefix="/")

Or from a config file's ``[ray]`` table: ``build_config(config_file="serve.toml")`` reads it
into ``config.ray``, which :func:`deployment` and :func:`run` use when given no options
(``build_config``'s ``ray=`` puts overrides over it, as ``unirt serve --ray`` does). The model
path must exist on every node that may hold a replica (a shared file system, or the same image
on each).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.errors import UnirtError, first_line
from unirt.serve.app import ServerState
from unirt.serve.batching import run_stacked, stack_key
from unirt.serve.config import APP_NAME as APP_NAME  # re-exported: the application's name on Serve
from unirt.serve.config import RayOptions as RayOptions  # re-exported: built by build_config
from unirt.serve.config import ServeConfig
from unirt.serve.served import ServedModel

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

logger = logging.getLogger("unirt")

#: The libraries of the ``ray`` extra, by import name.
REQUIRED = ("ray", "ray.serve")
DEPLOYMENT_NAME = "unirt"
#: Requests a replica takes at once, unless asked (or twice the largest max_batch).
MAX_ONGOING = 64


def require_ray() -> None:
    """A clear error naming the extra when Ray Serve is missing."""
    import importlib.util

    try:
        missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    except ModuleNotFoundError:
        missing = ["ray"]
    if missing:
        raise UnirtError(f"unirt serve --ray needs the ray extra (missing: {', '.join(missing)})"
                         ': pip install "unirt[ray]"')


def parse_autoscaling(text: str) -> dict[str, Any]:
    """``--autoscaling``: a JSON object, inline or in a ``.json`` file."""
    from pathlib import Path

    source = text
    if not text.lstrip().startswith(("{", "[")):
        try:
            source = Path(text).read_text()
        except OSError as exc:
            raise UnirtError(f"--autoscaling: give a JSON object or a .json file; cannot read "
                             f"{text!r}: {exc.strerror or exc}") from None
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise UnirtError(f"--autoscaling is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UnirtError("--autoscaling must be a JSON object, e.g. "
                         '{"min_replicas": 1, "max_replicas": 4}')
    return value


def gpus_needed(config: ServeConfig) -> float:
    """1 when a model is pinned to (or prefers first) a GPU-class backend, else 0: a replica
    routed by default gets no GPU, so Ray hides the GPUs from it and it routes to the CPU."""
    from unirt.plugin.registry import get_registry

    backends = get_registry().backends
    for spec in config.models:
        name = spec.backend or (spec.prefer[0] if spec.prefer else None)
        backend = backends.get(name) if name else None
        if backend is not None and backend.device_class == "gpu":
            return 1.0
    return 0.0


def _check(options: RayOptions) -> None:
    if options.replicas < 1:
        raise UnirtError(f"--replicas must be at least 1, got {options.replicas}")
    if options.num_cpus < 0:
        raise UnirtError(f"--replica-cpus must be >= 0, got {options.num_cpus:g}")
    if options.num_gpus is not None and options.num_gpus < 0:
        raise UnirtError(f"--replica-gpus must be >= 0, got {options.num_gpus:g}")
    if options.max_ongoing_requests is not None and options.max_ongoing_requests < 1:
        raise UnirtError("--max-ongoing-requests must be at least 1, got "
                         f"{options.max_ongoing_requests}")
    if options.autoscaling is not None:
        from ray.serve.config import AutoscalingConfig

        fields: Any = getattr(AutoscalingConfig, "model_fields", None)
        known = set(fields or getattr(AutoscalingConfig, "__fields__", {}))
        unknown = sorted(set(options.autoscaling) - known)
        if unknown:  # Serve would ignore them: a misspelt max_replicas would go unnoticed
            raise UnirtError("autoscaling (--autoscaling or [ray.autoscaling]): not a Ray "
                             "Serve autoscaling config key: "
                             f"{', '.join(unknown)}; keys: {', '.join(sorted(known))}")
        try:
            AutoscalingConfig(**dict(options.autoscaling))
        except Exception as exc:  # pydantic's ValidationError: the fields and why
            raise UnirtError("autoscaling (--autoscaling or [ray.autoscaling]) is not a Ray "
                             "Serve autoscaling config: "
                             f"{' '.join(str(exc).split())}") from None


def deployment_options(config: ServeConfig, options: RayOptions) -> dict[str, Any]:
    """The keyword arguments of ``serve.deployment`` for ``config`` under ``options``."""
    _check(options)
    gpus = gpus_needed(config) if options.num_gpus is None else options.num_gpus
    largest = max(config.batching(spec)[0] for spec in config.models)
    out: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": options.num_cpus, "num_gpus": gpus},
        # Serve's default (5) caps a replica's batch below max_batch, and a replica at its cap
        # refuses requests that the proxy then retries with backoff: measured here (2 cores,
        # 1 replica, 32 clients, tiny model), 29 req/s at a cap of 8, 356 at 64.
        "max_ongoing_requests": options.max_ongoing_requests or max(MAX_ONGOING, 2 * largest),
        # as `unirt serve` alone: no line per request (Serve's replicas log each at INFO);
        # requests are counted in /metrics
        "logging_config": {"enable_access_log": False},
    }
    if options.autoscaling is not None:
        out["autoscaling_config"] = dict(options.autoscaling)
    else:
        out["num_replicas"] = options.replicas
    out.update(options.extra)
    return out


# -- what a replica holds ------------------------------------------------------------------
class ServeBatcher:
    """A model's batching through Ray Serve's ``@serve.batch``: a batch is counted in rows
    (``batch_size_fn``), requests whose non-batch dims differ run as separate engine calls of
    one batch, and a request of more rows than ``max_batch`` runs alone."""

    def __init__(self, served: ServedModel, executor: ThreadPoolExecutor, *, slots: int,
                 observe: Any) -> None:
        from ray import serve

        self._served = served
        self._executor = executor
        self._observe = observe
        self.max_batch = served.batching.max_batch
        self._handler = serve.batch(
            max_batch_size=self.max_batch, batch_wait_timeout_s=served.batching.timeout_s,
            max_concurrent_batches=slots,
            batch_size_fn=lambda items: sum(rows for _, rows in items))(self._run_batch)

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def submit(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if rows > self.max_batch or rows == 0:
            return (await self._execute([feeds]))[0]
        result: dict[str, np.ndarray] = await self._handler((feeds, rows))
        return result

    async def _run_batch(self, items: list[tuple[dict[str, np.ndarray], int]]
                         ) -> list[dict[str, np.ndarray]]:
        groups: dict[tuple, list[int]] = {}
        for i, (feeds, _) in enumerate(items):
            groups.setdefault(stack_key(feeds), []).append(i)
        results: list[dict[str, np.ndarray]] = [{} for _ in items]
        for members in groups.values():
            outs = await self._execute([items[i][0] for i in members])
            for i, out in zip(members, outs):
                results[i] = out
        return results

    async def _execute(self, parts: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        run = self._served.session.run
        results = await loop.run_in_executor(self._executor, run_stacked, run, parts)
        self._observe(sum(next(iter(p.values())).shape[0] for p in parts),
                      time.perf_counter() - start)
        return results


class RayServerState(ServerState):
    """The app's state with Ray Serve doing the batching."""

    def make_batcher(self, served: ServedModel, executor: ThreadPoolExecutor) -> ServeBatcher:
        return ServeBatcher(served, executor, slots=served.batching.slots,
                            observe=self._observer(served))


class UnirtReplica:
    """One Ray Serve replica: the models loaded through ``unirt.load`` on its node, and the
    ``unirt serve`` app over them as the replica's ASGI ingress."""

    def __init__(self, config: ServeConfig) -> None:
        from unirt.serve.served import open_model

        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        start = time.perf_counter()
        self.models: dict[str, ServedModel] = {}
        try:
            for spec in config.models:
                self.models[spec.name] = open_model(spec, config)
        except BaseException:
            self._close()
            raise
        self.state = RayServerState(self.models, workers=config.workers,
                                    max_request_bytes=config.max_request_bytes)
        logger.info("unirt serve --ray: replica loaded %d model(s) in %.2f s (%s)",
                    len(self.models), time.perf_counter() - start,
                    ", ".join(f"{n} on {m.backend}" for n, m in self.models.items()))

    def __serve_build_asgi_app__(self) -> Starlette:
        from unirt.serve.app import build_app

        return build_app(self.state)

    def check_health(self) -> None:
        """Serve's health check: a replica whose session was closed is replaced."""
        closed = [n for n, m in self.models.items() if m.session.closed]
        if closed:
            raise UnirtError(f"model(s) {', '.join(closed)} closed")

    def _close(self) -> None:
        for served in self.models.values():
            served.session.close()

    def __del__(self) -> None:
        self._close()


def deployment(config: ServeConfig, options: RayOptions | None = None) -> Any:
    """The Ray Serve application (``Deployment.bind(...)``) serving ``config``'s models: pass
    it to ``serve.run(app, route_prefix="/")`` on any Ray cluster. ``options``: default
    ``config.ray`` (the config file's ``[ray]`` table)."""
    require_ray()
    from ray import serve

    opts = deployment_options(config, options or config.ray or RayOptions())
    ingress = serve.ingress()(UnirtReplica)
    deployed: Any = serve.deployment(**opts)(ingress)
    return deployed.bind(config)


def run(config: ServeConfig, options: RayOptions | None = None, *, block: bool = True) -> str:
    """Start (or join) Ray, run the deployment behind Serve's HTTP proxy on ``config``'s host
    and port, and return its URL once every replica is up; with ``block``, serve until SIGTERM
    or SIGINT, then delete the application (and stop the Ray this call started). ``options``:
    default ``config.ray``."""
    require_ray()
    import ray
    from ray import serve

    options = options or config.ray or RayOptions()
    app = deployment(config, options)
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"address": options.address, "log_to_driver": True}
        if options.address is None:
            import os

            if "RAY_ADDRESS" not in os.environ:
                kwargs["include_dashboard"] = False
        ray.init(**kwargs)
        started = True
    host, port = config.host, config.port
    if port == 0:
        from unirt.serve.server import bind

        sock = bind(host, 0)  # a free port now; Serve's proxy takes it just after
        port = sock.getsockname()[1]
        sock.close()
    serve.start(http_options={"host": host, "port": port})
    t0 = time.perf_counter()
    try:
        serve.run(app, name=options.app_name, route_prefix="/")
    except Exception as exc:
        if started and block:
            serve.shutdown()
            ray.shutdown()
        raise UnirtError(f"Ray Serve could not start the deployment: {first_line(exc)}") from None
    host, port = _serving_address(host, port)
    url = f"http://{host}:{port}"
    logger.info("unirt serve --ray: %d model(s) ready on %s (%s replica(s) up in %.1f s)",
                len(config.models), url,
                "autoscaled" if options.autoscaling else options.replicas,
                time.perf_counter() - t0)
    if not block:
        return url
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop(options.app_name, started, config.drain_timeout_s + 10.0)
    return url


def _serving_address(host: str, port: int) -> tuple[str, int]:
    """Where Serve's proxy really listens: a Serve already running on the cluster keeps its
    own HTTP options (and says so), so the address asked for may not be the one in use."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        cfg = client.http_config if client is not None else None
    except Exception:  # a private API of Ray's: without it, the address asked for
        cfg = None
    if cfg is None:
        return host, port
    if (cfg.host, cfg.port) != (host, port):
        logger.warning("unirt serve --ray: Serve was already running on %s:%s; the "
                       "application is served there, not on %s:%s", cfg.host, cfg.port, host,
                       port)
    return str(cfg.host), int(cfg.port)


def _stop(app_name: str, started: bool, timeout_s: float) -> None:
    """Delete the application (Serve drains its replicas), bounded: a Ray whose processes
    were signalled too (Ctrl-C reaches the whole process group) may never answer."""
    import ray
    from ray import serve

    def delete() -> None:
        serve.delete(app_name)
        if started:
            serve.shutdown()

    worker = threading.Thread(target=delete, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        logger.warning("unirt serve --ray: Ray Serve did not stop within %g s", timeout_s)
    if started:
        ray.shutdown()
    logger.info("unirt serve --ray: stopped")
