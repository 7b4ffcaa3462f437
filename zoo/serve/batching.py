"""Dynamic batching: concurrent requests for one model, of the same shape, run as one batch.

Each model has a bounded queue and one worker. The worker takes the first waiting request and
gathers more of the same shape until ``max_batch`` or ``max_wait`` seconds; the batch runs in a
thread (the runtime tiles large images), and every request gets its own slice back.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    """The model's queue is full: answer 503 with Retry-After."""


@dataclass
class _Job:
    x: np.ndarray                                  # b=1, c, *spatial (float32, the spec's layout)
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, run, max_batch: int = 8, max_wait: float = 0.01, max_queue: int = 64, on_batch=None):
        """``run(batch) -> outputs`` with the batch on the first axis; ``on_batch(size)`` is told each batch size."""
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch or (lambda size: None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-batch")
        self._task: asyncio.Task | None = None
        self._held: _Job | None = None             # a request of another shape, first of the next batch

    @property
    def depth(self) -> int:
        return self.queue.qsize() + (self._held is not None)

    async def submit(self, x: np.ndarray) -> np.ndarray:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work())
        job = _Job(x, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        return await job.future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = self._held or await self.queue.get()
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
            batch = [job for job in batch if not job.future.cancelled()]   # clients that timed out
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                y = await loop.run_in_executor(self._executor, self.run, np.concatenate([j.x for j in batch]))
                for k, job in enumerate(batch):
                    if not job.future.done():
                        job.future.set_result(y[k:k + 1])
            except Exception as e:   # noqa: BLE001 - the requests get the error, the worker goes on
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)
