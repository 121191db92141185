"""The asyncio dynamic batcher on its own: gathering, keys, bounded queue, failures, cancellation, close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

import pytest

from gemfilter_rag.serve.batcher import Batcher, BatchStats, ClosedError, QueueFullError


class Recorder:
    """A ``run`` function that records its batches, optionally held at a gate, and fails on "bad"."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[tuple[Hashable, list[Any]]] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.entered = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        self.threads.add(threading.get_ident())
        self.batches.append((key, list(payloads)))
        if "bad" in payloads:
            raise ValueError("payload: bad")
        return [f"{key}:{p}" for p in payloads]


def test_concurrent_requests_share_one_batch_without_waiting_out_max_wait() -> None:
    run = Recorder()
    stats: list[BatchStats] = []

    async def main() -> list[Any]:
        b = Batcher(run, max_batch=4, max_wait_s=30.0, max_queue=10, on_batch=stats.append)
        # a full batch runs at once: were max_wait honoured, this would take 30 s and time out
        out = await asyncio.wait_for(asyncio.gather(*(b.submit("k", i) for i in range(4))), timeout=10)
        await b.close()
        return out

    assert asyncio.run(main()) == ["k:0", "k:1", "k:2", "k:3"]
    assert run.batches == [("k", [0, 1, 2, 3])]
    assert [s.size for s in stats] == [4] and len(stats[0].queue_waits) == 4


def test_a_lone_request_runs_after_max_wait() -> None:
    run = Recorder()

    async def main() -> Any:
        b = Batcher(run, max_batch=8, max_wait_s=0.01, max_queue=10)
        out = await asyncio.wait_for(b.submit("k", "x"), timeout=10)
        await b.close()
        return out

    assert asyncio.run(main()) == "k:x"
    assert run.batches == [("k", ["x"])]


def test_different_keys_never_share_a_batch_and_the_oldest_goes_first() -> None:
    run = Recorder()

    async def main() -> list[Any]:
        b = Batcher(run, max_batch=8, max_wait_s=0.05, max_queue=10)
        out = await asyncio.gather(b.submit("a", 1), b.submit("b", 2), b.submit("a", 3), b.submit("b", 4))
        await b.close()
        return list(out)

    assert asyncio.run(main()) == ["a:1", "b:2", "a:3", "b:4"]
    assert run.batches == [("a", [1, 3]), ("b", [2, 4])]


def test_batches_run_in_one_worker_thread_off_the_event_loop() -> None:
    run = Recorder()

    async def main() -> int:
        b = Batcher(run, max_batch=2, max_wait_s=0.0, max_queue=10)
        for i in range(3):
            await b.submit("k", i)
        await b.close()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(run.threads) == 1 and loop_thread not in run.threads


def test_a_full_queue_rejects_at_once_with_retry_after() -> None:
    run = Recorder(gated=True)

    async def main() -> None:
        b = Batcher(run, max_batch=1, max_wait_s=0.0, max_queue=2)
        first = asyncio.ensure_future(b.submit("k", 0))
        while not run.entered.is_set():  # the first request holds the worker
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(b.submit("k", i)) for i in (1, 2)]
        await asyncio.sleep(0)
        assert b.depth == 2 and b.running == 1
        with pytest.raises(QueueFullError) as err:
            await b.submit("k", 3)
        assert err.value.depth == 2 and err.value.retry_after >= 1
        run.gate.set()
        assert await asyncio.gather(first, *queued) == ["k:0", "k:1", "k:2"]
        await b.close()

    asyncio.run(main())


def test_a_failing_request_fails_alone() -> None:
    run = Recorder()

    async def main() -> list[Any]:
        b = Batcher(run, max_batch=3, max_wait_s=1.0, max_queue=10)
        out = await asyncio.gather(b.submit("k", "x"), b.submit("k", "bad"), b.submit("k", "y"), return_exceptions=True)
        await b.close()
        return list(out)

    good, bad, other = asyncio.run(main())
    assert (good, other) == ("k:x", "k:y")
    assert isinstance(bad, ValueError) and str(bad) == "payload: bad"
    assert run.batches[0] == ("k", ["x", "bad", "y"])  # tried together, then each alone
    assert sorted(p[0] for _, p in run.batches[1:]) == ["bad", "x", "y"]


def test_a_cancelled_request_leaves_the_queue() -> None:
    run = Recorder(gated=True)

    async def main() -> None:
        b = Batcher(run, max_batch=1, max_wait_s=0.0, max_queue=10)
        first = asyncio.ensure_future(b.submit("k", "first"))
        while not run.entered.is_set():
            await asyncio.sleep(0.001)
        gone = asyncio.ensure_future(b.submit("k", "gone"))
        kept = asyncio.ensure_future(b.submit("k", "kept"))
        await asyncio.sleep(0)
        assert b.depth == 2
        gone.cancel()
        await asyncio.sleep(0)
        assert b.depth == 1
        run.gate.set()
        assert await asyncio.gather(first, kept) == ["k:first", "k:kept"]
        await b.close()

    asyncio.run(main())
    assert [p for _, p in run.batches] == [["first"], ["kept"]]


def test_close_finishes_what_it_holds_and_rejects_new_requests() -> None:
    run = Recorder()

    async def main() -> None:
        b = Batcher(run, max_batch=2, max_wait_s=5.0, max_queue=10)
        pending = asyncio.ensure_future(b.submit("k", "late"))
        await asyncio.sleep(0)
        await asyncio.wait_for(b.close(), timeout=10)  # does not wait out max_wait
        assert pending.result() == "k:late"
        with pytest.raises(ClosedError):
            await b.submit("k", "after")

    asyncio.run(main())
