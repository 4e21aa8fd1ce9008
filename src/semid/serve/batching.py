"""A small asyncio micro-batcher: concurrent requests share one model call.

A model answers 16 histories in one call in about the time of 2-3 single calls (``bench/serve_load.py``),
so a server under load should not call it once per request. :class:`MicroBatcher` queues requests; a
worker takes the first one, waits up to ``max_wait_ms`` for company (requests that arrive while a call is
running join the next one anyway), and hands up to ``max_batch`` of them to ``fn`` in a worker thread, so
the event loop keeps accepting requests meanwhile. ``max_batch=1`` gives one call per request, for
comparison.

Example::

    batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], max_batch=32, max_wait_ms=2)
    await asyncio.gather(*(batcher.submit(i) for i in range(100)))   # a few calls, not 100
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["BatchStats", "MicroBatcher"]


@dataclass
class BatchStats:
    """Requests answered and model calls made so far (``requests / calls`` is the mean batch size)."""

    requests: int = 0
    calls: int = 0
    largest: int = 0

    def to_dict(self) -> dict[str, float]:
        mean = self.requests / self.calls if self.calls else 0.0
        return {
            "requests": self.requests,
            "calls": self.calls,
            "largest": self.largest,
            "mean": round(mean, 2),
        }


class MicroBatcher(Generic[T, R]):
    """Gathers :meth:`submit` calls into batches for ``fn(list[T]) -> list[R]`` (one result per input).

    Must be used from one event loop (the one it was first used in). ``executor`` runs ``fn``; sharing a
    one-thread executor between batchers keeps every model call on one thread. An exception from ``fn``
    is raised in every request of that batch.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        executor: Executor | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} should be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.executor = executor
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T) -> R:
        """The result of ``fn`` for ``item``, computed in a batch with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new loop (e.g. a test client's): start afresh
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run())
        assert self._queue is not None
        future: asyncio.Future[R] = loop.create_future()
        await self._queue.put((item, future))
        return await future

    def _drain(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        assert self._queue is not None
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())

    async def _run(self) -> None:
        assert self._queue is not None and self._loop is not None
        queue, loop = self._queue, self._loop
        while True:
            batch = [await queue.get()]
            self._drain(batch)
            if len(batch) < self.max_batch and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)  # let concurrent requests join
                self._drain(batch)
            batch = [(x, f) for x, f in batch if not f.cancelled()]  # clients that gave up
            if not batch:
                continue
            self.stats.requests += len(batch)
            self.stats.calls += 1
            self.stats.largest = max(self.stats.largest, len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.fn, [x for x, _ in batch])
            except Exception as e:  # every request of the batch gets the error
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(batch, results, strict=True):
                if not f.done():
                    f.set_result(r)
