"""Dynamic batching: requests for one model are stacked along the batch axis, run as one engine
call, and the outputs split back by rows.

Why here and not in the engine: stacking needs only numpy, and it pays wherever the engine's
cost per row falls with the batch (GPUs, weight-bound dense models; on a CPU a conv net can run
slower per image batched, which is why it is off by default). A batch is formed when an engine
slot is free: requests that queued while every slot was busy join it at once (up to
``max_batch`` rows), and it waits for more at most until ``timeout`` after its oldest request
arrived. With ``timeout`` 0 a lone request leaves at once, so batching costs no latency when
there is no load. Only requests whose non-batch dims and dtypes agree are
stacked together; a request with more rows than ``max_batch`` runs on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from unirt.errors import BackendError

#: ``run(feeds) -> {output name: array}``: one engine call, made on an executor thread.
RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(eq=False)
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple
    arrived: float
    future: asyncio.Future = field(repr=False)


def stack_key(feeds: dict[str, np.ndarray]) -> tuple:
    """Requests with equal keys can share a batch: same inputs, dtypes and non-batch dims."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items())


def run_stacked(run: RunFn, parts: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Concatenate ``parts`` along axis 0, run once, and split the outputs back by rows.

    An output whose first dim is not the total row count cannot be split: that is an engine
    (or model) that does not batch the way its declaration says, an error, not a guess."""
    if len(parts) == 1:
        return [run(parts[0])]
    names = list(parts[0])
    stacked = {n: np.concatenate([p[n] for p in parts], axis=0) for n in names}
    rows = [next(iter(p.values())).shape[0] for p in parts]
    total = sum(rows)
    outs = run(stacked)
    bounds = np.cumsum(rows)[:-1]
    split: list[dict[str, np.ndarray]] = [{} for _ in parts]
    for name, arr in outs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise BackendError(f"output {name!r} of a batch of {total} rows has shape "
                               f"{list(arr.shape)}: it cannot be split back into requests")
        for i, piece in enumerate(np.split(arr, bounds, axis=0)):
            split[i][name] = piece
    return split


class BatchQueue(Protocol):
    """What the app needs of a model's batching: :class:`Batcher` here, Ray Serve's
    ``@serve.batch`` under ``unirt.serve.ray``."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]: ...


class Batcher:
    """Collects requests of one model on the event loop; runs batches on ``executor``."""

    def __init__(self, run: RunFn, executor: Executor, *, max_batch: int, timeout_s: float,
                 slots: int, observe: Callable[[int, float], None] | None = None) -> None:
        self._run = run
        self._executor = executor
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(slots)
        self._observe = observe
        self._waiting: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Finish the batches running; requests still waiting get an error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._waiting:
            p = self._waiting.popleft()
            if not p.future.done():
                p.future.set_exception(BackendError("the server is shutting down"))

    async def submit(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Run ``feeds`` (``rows`` along the batch axis) in a batch; its share of the outputs."""
        loop = asyncio.get_running_loop()
        if rows > self.max_batch or rows == 0:
            return (await self._execute([feeds]))[0]
        pending = _Pending(feeds, rows, stack_key(feeds), time.monotonic(), loop.create_future())
        self._waiting.append(pending)
        self._arrived.set()
        return await pending.future

    def _take(self, key: tuple) -> tuple[list[_Pending], int]:
        """The waiting requests that stack with ``key``, oldest first, up to max_batch rows."""
        batch: list[_Pending] = []
        rows = 0
        for p in self._waiting:
            if p.key == key and rows + p.rows <= self.max_batch:
                batch.append(p)
                rows += p.rows
                if rows == self.max_batch:
                    break
        return batch, rows

    async def _collect(self) -> None:
        while True:
            await self._slots.acquire()
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._waiting[0]
            deadline = first.arrived + self.timeout_s
            while True:
                batch, rows = self._take(first.key)
                left = deadline - time.monotonic()
                if rows >= self.max_batch or left <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            for p in batch:
                self._waiting.remove(p)
            task = asyncio.get_running_loop().create_task(self._dispatch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        try:
            results = await self._execute([p.feeds for p in batch])
        except BaseException as exc:  # every waiter hears of it; the collector goes on
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)
        finally:
            self._slots.release()

    async def _execute(self, parts: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        results = await loop.run_in_executor(self._executor, run_stacked, self._run, parts)
        if self._observe is not None:
            self._observe(sum(next(iter(p.values())).shape[0] for p in parts),
                          time.perf_counter() - start)
        return results
