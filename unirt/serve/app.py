"""The ASGI app: the Open Inference Protocol v2 over HTTP/REST, on Starlette.

Endpoints (``{v}`` is ``1``; every model route also answers without ``/versions/{v}``)::

    GET  /v2/health/live                          200 while the process serves
    GET  /v2/health/ready                         200 once every model is loaded
    GET  /v2                                      server metadata
    GET  /v2/models/{name}[/versions/{v}]         model metadata (+ backend, route, batching)
    GET  /v2/models/{name}[/versions/{v}]/ready   200 when ready
    POST /v2/models/{name}[/versions/{v}]/infer   inference, JSON or binary tensor data
    GET  /metrics                                 Prometheus

Errors are ``{"error": "<one line>"}`` as Triton sends them: 400 for a malformed body or a feed
that does not fit the model (unirt's own message), 404 for an unknown model, version or route,
413 for a body over the limit (refused from its Content-Length, or as soon as the bytes read
pass the limit, never after reading it whole), 500 for an engine failure. Nothing a client
sends can raise out of a handler: anything unexpected is logged here with its traceback and
answered as a one-line 500.

Engine calls run on a thread pool, never on the event loop, at most ``slots`` of a model at once
(measured at load: one where a second call at once only slows both); a model that batches goes
through its :class:`~unirt.serve.batching.Batcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from unirt.errors import InputError, OutputError, RequestError, UnirtError, first_line
from unirt.serve.batching import Batcher, BatchQueue
from unirt.serve.metrics import Metrics
from unirt.serve.protocol import encode_infer_response, parse_infer_request
from unirt.serve.served import ServedModel

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

logger = logging.getLogger("unirt")

SERVER_NAME = "unirt"
#: The status counted (``unirt_requests_total{code="499"}``) for a client that left before its
#: request was read whole, as nginx counts it: not a server error.
CLIENT_CLOSED = 499
EXTENSIONS = ["binary_tensor_data", "model_metadata"]


class ServerState:
    """Everything the handlers share: models by name, the engine threads, metrics, limits."""

    def __init__(self, models: Mapping[str, ServedModel], *, workers: int,
                 max_request_bytes: int) -> None:
        self.models = dict(models)
        self.workers = workers
        self.max_request_bytes = max_request_bytes
        self.metrics = Metrics()
        self.executor: ThreadPoolExecutor | None = None
        self.batchers: dict[str, BatchQueue] = {}
        self.slots: dict[str, asyncio.Semaphore] = {}
        self.ready = False
        self._drained = asyncio.Event()  # binds to the loop that first waits on it

    def begin_drain(self, seconds: float) -> None:
        """SIGTERM came: requests still unanswered ``seconds`` from now get a 503 (and the engine
        calls under them finish in the background) rather than the host's cancellation. Call on
        the event loop's thread."""
        asyncio.get_running_loop().call_later(seconds, self._drained.set)

    async def before_drain_ends(self, work: Any) -> Any:
        """``await work``, or a 503 once the drain time given to :meth:`begin_drain` is over."""
        task = asyncio.ensure_future(work)
        over = asyncio.ensure_future(self._drained.wait())
        try:
            await asyncio.wait({task, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            over.cancel()
        if not task.done():
            task.add_done_callback(_consume)
            raise RequestError("the server is shutting down (--drain-timeout passed)", 503)
        return task.result()

    async def start(self) -> None:
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="unirt-engine")
        for name, served in self.models.items():
            self.slots[name] = asyncio.Semaphore(max(1, served.batching.slots))
            if served.batching.enabled:
                batcher = self.make_batcher(served, self.executor)
                batcher.start()
                self.batchers[name] = batcher
        self.ready = True

    def make_batcher(self, served: ServedModel, executor: ThreadPoolExecutor) -> BatchQueue:
        """The batcher of one model; a host that batches its own way (Ray Serve's
        ``@serve.batch``) returns one of its own with the same ``start/submit/stop``."""
        return Batcher(self._runner(served), executor, max_batch=served.batching.max_batch,
                       timeout_s=served.batching.timeout_s, slots=served.batching.slots,
                       observe=self._observer(served))

    async def stop(self) -> None:
        self.ready = False
        for batcher in self.batchers.values():
            await batcher.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def _runner(self, served: ServedModel) -> Any:
        run = served.session.run
        return lambda feeds: run(feeds)

    def _observer(self, served: ServedModel) -> Any:
        m = self.metrics

        def observe(rows: int, seconds: float) -> None:
            backend = served.backend
            m.batch_size.labels(served.name, backend).observe(rows)
            m.engine_latency.labels(served.name, backend).observe(seconds)

        return observe

    async def infer(self, served: ServedModel, feeds: dict[str, np.ndarray],
                    outputs: list[str] | None) -> dict[str, np.ndarray]:
        """Run one checked request: batched when the model batches, else on its own."""
        batcher = self.batchers.get(served.name)
        if batcher is not None:
            rows = served.rows(feeds)
            if rows >= 0:
                if outputs is not None:  # fail an unknown name alone, before the batch
                    names = {t.name for t in served.session.outputs}
                    unknown = [n for n in outputs if n not in names]
                    if unknown:
                        raise OutputError(f"{unknown[0]!r} is not an output of {served.name}; "
                                          f"outputs: {', '.join(sorted(names))}")
                result = await batcher.submit(feeds, rows)
                return result if outputs is None else {n: result[n] for n in outputs}
        loop = asyncio.get_running_loop()
        async with self.slots[served.name]:  # the engine calls at once it runs best with
            start = time.perf_counter()
            result = await loop.run_in_executor(self.executor, _run_one, served, feeds, outputs)
        rows = served.rows(feeds) if served.batching.enabled else 1
        self._observer(served)(max(rows, 1), time.perf_counter() - start)
        return result


def _consume(task: asyncio.Future) -> None:
    """A result (or error) nobody waits for any more: read, so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


def _run_one(served: ServedModel, feeds: dict[str, np.ndarray],
             outputs: list[str] | None) -> dict[str, np.ndarray]:
    return served.session.run(feeds, outputs)


def _error(status: int, message: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed when sent gzip/deflate, refused with 413 as soon as it is
    known to pass ``limit`` bytes (from Content-Length, before reading anything)."""
    length = request.headers.get("content-length")
    mb = limit / (1024 * 1024)
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise RequestError(f"Content-Length {length!r} is not a number") from None
        if declared > limit:
            raise RequestError(f"the request body is {declared:,} bytes, over the limit of "
                               f"{mb:g} MB (--max-request-mb)", 413)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise RequestError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)",
                           415)
    inflate = None if encoding == "identity" else zlib.decompressobj(
        16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if inflate is not None and chunk:
            try:
                chunk = inflate.decompress(chunk, limit - size + 1)
            except zlib.error as exc:
                raise RequestError(f"the {encoding} body cannot be decompressed: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body is over the limit of {mb:g} MB "
                               "(--max-request-mb)", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(models: Mapping[str, ServedModel], *, workers: int = 2,
               max_request_bytes: int = 64 * 1024 * 1024,
               on_ready: Callable[[], None] | None = None) -> Starlette:
    """The Starlette app serving ``models`` (by name). Engine threads and batchers start with
    the app's lifespan and stop after the requests in flight are answered."""
    return build_app(ServerState(models, workers=workers, max_request_bytes=max_request_bytes),
                     on_ready=on_ready)


def build_app(state: ServerState, *,
              on_ready: Callable[[], None] | None = None) -> Starlette:
    """The app over a :class:`ServerState` made elsewhere (``unirt.serve.ray`` passes one whose
    batching is Ray Serve's): the same routes, codecs, errors and metrics.

    Long by design: the handlers are closures over ``state``, one short block each in route
    order, then the route table; as module functions each would fetch the state back from
    ``request.app.state`` and the table would sit far from what it routes to."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from unirt.version import __version__

    def model_of(request: Request) -> ServedModel:
        name = request.path_params["model"]
        served = state.models.get(name)
        if served is None:
            raise RequestError(f"unknown model {name!r}; models: "
                               f"{', '.join(sorted(state.models)) or 'none'}", 404)
        version = request.path_params.get("version")
        if version is not None and version != served.version:
            raise RequestError(f"model {name!r} has no version {version!r}; versions: "
                               f"{served.version}", 404)
        return served

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        if not state.ready:
            return _error(503, "not ready")
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__,
                             "extensions": EXTENSIONS})

    async def model_metadata(request: Request) -> Response:
        try:
            return JSONResponse(model_of(request).metadata())
        except RequestError as exc:
            return _error(exc.status, str(exc))

    async def model_ready(request: Request) -> Response:
        try:
            served = model_of(request)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        if not state.ready or served.session.closed:
            return _error(503, f"model {served.name!r} is not ready")
        return JSONResponse({"name": served.name, "ready": True})

    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        served = None
        backend = "-"
        m = state.metrics
        try:
            served = model_of(request)
            backend = served.backend
            body = await _read_body(request, state.max_request_bytes)
            req = parse_infer_request(body, request.headers.get("inference-header-content-length"))
            feeds = served.check(req.inputs)
            wanted = None if req.outputs is None else [o.name for o in req.outputs]
            depth = m.queue_depth.labels(served.name, backend)
            depth.inc()
            try:
                results = await state.before_drain_ends(state.infer(served, feeds, wanted))
            finally:
                depth.dec()
            if req.outputs is None:
                binary = [req.binary_output] * len(results)
            else:
                binary = [o.binary for o in req.outputs]
            content, headers = encode_infer_response(
                served.name, served.version, req.id, results, binary,
                {"backend": served.backend})
            response = Response(content, headers=headers)
        except RequestError as exc:
            response = _error(exc.status, str(exc))
        except ClientDisconnect:  # the client left mid-body: nothing to answer, not our error
            logger.debug("unirt serve: client left during %s", request.url.path)
            response = _error(CLIENT_CLOSED, "client closed the request")
        except (InputError, OutputError) as exc:
            response = _error(400, str(exc))
        except UnirtError as exc:
            response = _error(500, first_line(exc))
        except Exception as exc:  # a bug: logged with its traceback here, one line to the client
            logger.exception("unirt serve: internal error on %s", request.url.path)
            response = _error(500, f"internal error: {type(exc).__name__}: {first_line(exc)}")
        if served is not None:
            m.requests.labels(served.name, backend, str(response.status_code)).inc()
            m.latency.labels(served.name, backend).observe(time.perf_counter() - start)
        return response

    async def metrics(request: Request) -> Response:
        content, media_type = state.metrics.render()
        return Response(content, media_type=media_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")
        logger.exception("unirt serve: internal error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            await state.stop()

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/metrics", metrics),
    ]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata),
            Route(prefix + "/ready", model_ready),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: http_error})
    app.state.unirt = state
    return app
