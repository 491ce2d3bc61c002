"""``unirt serve``: the command. Importing it imports no serving library (the ``serve`` extra
is needed only when the command runs)."""

from __future__ import annotations

import logging

import click

from unirt.cli.options import load_inputs_option
from unirt.errors import UnirtError


@click.command("serve")
@click.argument("models", nargs=-1, metavar="[MODEL]...")
@click.option("--name", default=None, help="Name of the model (one MODEL; default: file stem).")
@click.option("--host", default=None, help="Address to listen on  [default: 127.0.0.1]")
@click.option("--port", type=int, default=None,
              help="Port (0: any free one, printed when ready)  [default: 8000]")
@click.option("--backend", "-b", default=None, help="Run on this backend only (no fallback).")
@click.option("--prefer", multiple=True, help="Try this backend first (repeatable).")
@click.option("--precision", type=click.Choice(["exact", "fast"]), default=None,
              help="exact: float32 as declared; fast: the engine's defaults  [default: exact]")
@click.option("--shape", "-s", "shape_specs", multiple=True, metavar="NAME=1x3x224x224",
              help="The shape verification measures an input at (repeatable).")
@load_inputs_option
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="A TOML or JSON file: [server] settings, [[models]] with their own "
                   "options, and [ray] (the --ray options, used with --ray).")
@click.option("--max-batch", type=int, default=None,
              help="Dynamic batching: most rows per engine call for models with a batch axis; "
                   "the size served is measured up to it (1: off)  [default: 1]")
@click.option("--batch-timeout-ms", type=float, default=None,
              help="How long a request may wait for others to batch with (0: only those "
                   "already queued)  [default: 0]")
@click.option("--measure/--no-measure", default=None,
              help="Time each model at load (cached) for the batch size up to --max-batch and "
                   "the engine calls at once that serve it fastest; --no-measure serves "
                   "--max-batch and --workers as given  [default: measure]")
@click.option("--max-request-mb", type=float, default=None,
              help="Largest request body; a larger one is refused with 413  [default: 64]")
@click.option("--workers", type=int, default=None,
              help="Engine threads  [default: one per core, at least 2]")
@click.option("--drain-timeout", "drain_timeout_s", type=float, default=None,
              help="Seconds SIGTERM waits for requests in flight  [default: 30]")
@click.option("--ray", "use_ray", is_flag=True,
              help="Serve on Ray Serve: replicas each holding the models, behind Serve's HTTP "
                   "proxy, batching with @serve.batch (needs unirt[ray]).")
@click.option("--ray-address", default=None,
              help="With --ray: the Ray cluster to join  [default: RAY_ADDRESS, else a local "
                   "Ray]")
@click.option("--replicas", type=int, default=None,
              help="With --ray: fixed replica count  [default: 1]")
@click.option("--autoscaling", default=None, metavar="JSON|FILE",
              help="With --ray: Ray Serve's autoscaling_config, e.g. "
                   "'{\"min_replicas\": 1, \"max_replicas\": 4}' (instead of --replicas).")
@click.option("--replica-cpus", type=float, default=None,
              help="With --ray: CPUs per replica  [default: 1]")
@click.option("--replica-gpus", type=float, default=None,
              help="With --ray: GPUs per replica  [default: 1 when a model names a GPU backend, "
                   "else 0]")
@click.option("--max-ongoing-requests", type=int, default=None,
              help="With --ray: requests a replica takes at once  [default: 64, or 2 x "
                   "max-batch]")
def serve_command(models: tuple[str, ...], name: str | None, host: str | None,
                  port: int | None, backend: str | None, prefer: tuple[str, ...],
                  precision: str | None, shape_specs: tuple[str, ...], load_dir: str | None,
                  config_file: str | None,
                  max_batch: int | None, batch_timeout_ms: float | None,
                  measure: bool | None, max_request_mb: float | None, workers: int | None,
                  drain_timeout_s: float | None, use_ray: bool, ray_address: str | None,
                  replicas: int | None, autoscaling: str | None, replica_cpus: float | None,
                  replica_gpus: float | None, max_ongoing_requests: int | None) -> None:
    """Serve MODELs over the Open Inference Protocol v2 (KServe v2, as Triton speaks it) on
    HTTP: JSON and binary tensor data, /metrics for Prometheus. Each model is loaded through
    unirt.load (routing, verification, cache) before the server reports ready; SIGTERM drains
    the requests in flight and exits 0."""
    from unirt.evidence.inputs import parse_assignments, parse_shape
    from unirt.serve.config import build_config
    from unirt.serve.server import require_extra, serve

    require_extra()
    ray_given = {"--ray-address": ray_address, "--replicas": replicas,
                 "--autoscaling": autoscaling, "--replica-cpus": replica_cpus,
                 "--replica-gpus": replica_gpus, "--max-ongoing-requests": max_ongoing_requests}
    if not use_ray:
        named = [k for k, v in ray_given.items() if v is not None]
        if named:
            raise UnirtError(f"{', '.join(named)} only apply with --ray")
    if backend and prefer:
        raise UnirtError("give --backend or --prefer, not both")
    shapes = {k: parse_shape(v) for k, v in parse_assignments(shape_specs, "--shape").items()}
    ray_options = None
    if use_ray:  # keyed as the config file's [ray] table, which they win over
        from unirt.serve.ray import parse_autoscaling

        ray_options = {"address": ray_address, "replicas": replicas,
                       "autoscaling": None if autoscaling is None
                       else parse_autoscaling(autoscaling),
                       "replica_cpus": replica_cpus, "replica_gpus": replica_gpus,
                       "max_ongoing_requests": max_ongoing_requests}
    config = build_config(models, name=name, backend=backend, prefer=prefer,
                          precision=precision, shapes=shapes, config_file=config_file,
                          ray=ray_options, inputs=load_dir, host=host, port=port,
                          max_batch=max_batch,
                          batch_timeout_ms=batch_timeout_ms, measure=measure,
                          max_request_mb=max_request_mb, workers=workers,
                          drain_timeout_s=drain_timeout_s)
    log = logging.getLogger("unirt")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    if use_ray:
        from unirt.serve import ray as on_ray

        on_ray.require_ray()
        options = config.ray or on_ray.RayOptions()
        on_ray.deployment_options(config, options)  # every bad option before Ray starts
        on_ray.run(config, options)
        return
    if config.ray is not None:
        log.info("unirt serve: the config file's [ray] table is ignored without --ray")
    serve(config)
