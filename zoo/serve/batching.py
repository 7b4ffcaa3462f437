"""Dynamic batching: concurrent requests for one model, of the same shape, run as one batch.

Each model has a bounded queue and one worker. The worker takes the first waiting request and
gathers more of the same shape until ``max_batch`` or ``max_wait`` seconds; the batch runs in a
thread (the runtime tiles large images), and every request gets its own slice back.

A batch whose requests have all gone (timed out) stops at its next batch of tiles, so that the
worker is free for the next request. Closing (unloading the model) never blocks: requests
already queued or running finish, new ones are refused.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("zoo.serve")


class QueueFull(Exception):
    """The model's queue is full: answer 503 with Retry-After."""


class Unloaded(Exception):
    """The model is being unloaded: answer 503 (a later request gets 404)."""


class Abandoned(Exception):
    """Raised between tiles inside the worker thread: every request of the batch has gone."""


@dataclass
class _Job:
    x: np.ndarray                                  # b=1, c, *spatial (float32, the spec's layout)
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, run, max_batch: int = 8, max_wait: float = 0.01, max_queue: int = 64, on_batch=None):
        """``run(batch, progress) -> outputs`` with the batch on the first axis; ``progress(done, total)`` is
        to be called between tiles (it raises :class:`Abandoned` to stop); ``on_batch(size)`` is told each
        batch size."""
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch or (lambda size: None)
        self.closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-batch")
        self._task: asyncio.Task | None = None
        self._held: _Job | None = None             # a request of another shape, first of the next batch
        self._idle = False                         # the worker waits for a request

    @property
    def depth(self) -> int:
        return self.queue.qsize() + (self._held is not None)

    async def submit(self, x: np.ndarray) -> np.ndarray:
        if self.closed:
            raise Unloaded
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work())
        job = _Job(x, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        return await job.future

    async def _work(self) -> None:
        try:
            while not (self.closed and self.depth == 0):
                batch = [job for job in await self._gather() if not job.future.cancelled()]   # timed out
                if batch:
                    await self._run(batch)
        finally:
            self._refuse_waiting()
            self._executor.shutdown(wait=False)

    async def _gather(self) -> list[_Job]:
        """The next batch: the first waiting request and more of its shape, up to ``max_batch``."""
        loop = asyncio.get_running_loop()
        first = self._held or await self._next()
        self._held = None
        batch = [first]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            if job.x.shape != first.x.shape:
                self._held = job
                break
            batch.append(job)
        return batch

    async def _next(self) -> _Job:
        self._idle = True
        try:
            return await self.queue.get()
        finally:
            self._idle = False

    async def _run(self, batch: list[_Job]) -> None:
        """Run one batch in the worker thread; it stops between tiles once every request has gone."""
        abandoned = threading.Event()

        def on_done(_future) -> None:
            if all(job.future.done() for job in batch):
                abandoned.set()

        def progress(done: int, total: int) -> None:
            if abandoned.is_set():
                raise Abandoned(f"stopped after {done} of {total} tiles: every request of the batch has gone")

        for job in batch:
            job.future.add_done_callback(on_done)
        self.on_batch(len(batch))
        x = np.concatenate([j.x for j in batch])
        try:
            y = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, x, progress)
            for k, job in enumerate(batch):
                if not job.future.done():
                    job.future.set_result(y[k:k + 1])
        except Abandoned as e:
            log.info("%s", e)
        except Exception as e:   # noqa: BLE001 - the requests get the error, the worker goes on
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(e)

    def _refuse_waiting(self) -> None:
        jobs = [self._held] if self._held else []
        self._held = None
        while not self.queue.empty():
            jobs.append(self.queue.get_nowait())
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(Unloaded())

    def close(self) -> None:
        """Take no more requests; those queued or running finish, then the worker ends. Never blocks
        (call it on the event loop)."""
        self.closed = True
        if self._task is None:
            self._executor.shutdown(wait=False)
        elif self._idle:
            self._task.cancel()
