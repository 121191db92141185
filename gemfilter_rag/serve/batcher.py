"""A dynamic batcher for asyncio: gather concurrent requests, run them as one batch in a worker thread.

Pure asyncio (no web framework). Requests carry a ``key``; only requests with the same key share a
batch (for gemfilter: the same compressor options). The worker takes the oldest request, waits at most
``max_wait_s`` after its arrival for up to ``max_batch`` requests of its key, and runs them through
``run(key, payloads)`` in one dedicated thread, so the event loop never runs the model. While a batch
runs, new requests queue up and form the next batch. The queue is bounded: ``submit`` raises
``QueueFullError`` at once when ``max_queue`` requests are waiting, so the caller can shed load.

If a batch raises, each of its requests is run again alone, so that one bad request fails alone.
A request whose caller is cancelled (a client that went away) leaves the queue; if its batch already
runs, its result is dropped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFullError(Exception):
    """The queue holds ``max_queue`` requests; retry after ``retry_after`` seconds."""

    def __init__(self, depth: int, retry_after: int) -> None:
        super().__init__(f"queue: {depth} requests are waiting (the limit); retry after {retry_after} s.")
        self.depth = depth
        self.retry_after = retry_after


class ClosedError(Exception):
    """The batcher is closed (the server is shutting down)."""


@dataclass(eq=False)
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BatchStats:
    """What one batch took: its size, each request's wait in the queue, and the compute seconds."""

    size: int
    queue_waits: list[float]
    compute_s: float


RunBatch = Callable[[Hashable, list[Any]], Sequence[Any]]


class Batcher:
    """Gather requests with the same key into batches of at most ``max_batch``; run them in a thread.

    Args:
        run: ``run(key, payloads) -> results``, one result per payload, in order; called in the worker
            thread, one batch at a time.
        max_batch: most requests per batch.
        max_wait_s: longest wait for a batch to fill, counted from the arrival of its oldest request.
        max_queue: most waiting requests (the running batch not counted).
        on_batch: called on the event loop with a ``BatchStats`` after each batch.
    """

    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._batch_seconds = 0.0  # moving average, for Retry-After

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Requests in the batch that runs now."""
        return len(self._running)

    def retry_after(self) -> int:
        """Whole seconds after which a rejected request may find room: the batches ahead of it, at least 1."""
        batches = math.ceil((len(self._queue) + 1) / self.max_batch)
        return max(1, min(60, math.ceil(batches * self._batch_seconds)))

    def check_room(self) -> None:
        """Raise ``QueueFullError`` (or ``ClosedError``) now if a new request would be rejected."""
        if self._closed:
            raise ClosedError("the batcher is closed")
        if len(self._queue) >= self.max_queue:
            raise QueueFullError(len(self._queue), self.retry_after())

    async def submit(self, key: Hashable, payload: Any) -> Any:
        """Queue one request and wait for its result (or its exception)."""
        self.check_room()
        self._start()
        job = _Job(key, payload, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            if job in self._queue:  # not started: leave the queue
                self._queue.remove(job)
            raise

    async def close(self) -> None:
        """Reject new requests, finish the queued and running ones, stop the worker and its thread."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _start(self) -> None:
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gemfilter-batch")
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            jobs = await self._gather()
            if jobs:
                await self._run_jobs(jobs)

    async def _gather(self) -> list[_Job]:
        """Wait until the oldest request's key has ``max_batch`` requests or its wait is over; take them."""
        assert self._wakeup is not None
        head = self._queue[0]
        deadline = head.enqueued + self.max_wait_s
        while not self._closed:
            same = sum(1 for j in self._queue if j.key == head.key)
            left = deadline - time.monotonic()
            if same >= self.max_batch or left <= 0 or head not in self._queue:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except asyncio.TimeoutError:
                break
        if not self._queue:
            return []
        key = self._queue[0].key
        jobs = [j for j in self._queue if j.key == key][: self.max_batch]
        for j in jobs:
            self._queue.remove(j)
        return jobs

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        self._running = jobs
        started = time.monotonic()
        waits = [started - j.enqueued for j in jobs]
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(
                self._executor, self._run_safely, jobs[0].key, [j.payload for j in jobs]
            )
        finally:
            self._running = []
        elapsed = time.monotonic() - started
        self._batch_seconds = elapsed if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * elapsed
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            if job.future.done():  # its caller went away
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        if self._on_batch is not None:
            self._on_batch(BatchStats(len(jobs), waits, elapsed))

    def _run_safely(self, key: Hashable, payloads: list[Any]) -> list[tuple[bool, Any]]:
        """``run`` the batch; if it raises, run each payload alone so that only the failing ones fail."""
        try:
            results = list(self._run(key, payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"run: returned {len(results)} results for {len(payloads)} requests.")
            return [(True, r) for r in results]
        except Exception as err:
            if len(payloads) == 1:
                return [(False, err)]
        outcomes: list[tuple[bool, Any]] = []
        for p in payloads:
            try:
                outcomes.append((True, self._run(key, [p])[0]))
            except Exception as err:
                outcomes.append((False, err))
        return outcomes
