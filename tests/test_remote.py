"""RemoteGemFilterCompressor against a real server: the local result, the local errors, retries on 429."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gemfilter_rag import GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.remote import RemoteError, _retry_after
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.testing import LiveServer, running_server, wait_until, without_timings

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "",
    "Dr. Smith said the results were good. The question was whether it would still work.",
]
QUERY = "What does New York tell you?"


@pytest.fixture(scope="module")
def comp() -> GemFilterCompressor:
    from tinymodels import build_model, build_tokenizer

    return GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)


@pytest.fixture(scope="module")
def live(comp: GemFilterCompressor) -> Iterator[LiveServer]:
    with running_server(comp, ServeSettings(max_wait_ms=0, max_documents=8)) as server:
        yield server


def requests_seen(live: LiveServer) -> float:
    return sum(
        s.value
        for m in live.service.metrics.registry.collect()
        if m.name == "gemfilter_requests"
        for s in m.samples
        if s.name.endswith("_total")
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"top_k": 10}, {"top_k": 14, "document_scores": [0.1, 0.9, 0.3, 0.2]}, {"top_k": 10_000}, {}],
)
def test_compress_and_acompress_return_the_local_result(
    live: LiveServer, comp: GemFilterCompressor, kwargs: dict[str, Any]
) -> None:
    expected = without_timings(comp.compress(DOCS, QUERY, **kwargs))
    with RemoteGemFilterCompressor(live.url) as remote:
        assert without_timings(remote.compress(DOCS, QUERY, **kwargs)) == expected

    async def main() -> Any:
        remote = RemoteGemFilterCompressor(live.url)
        try:
            return await remote.acompress(DOCS, QUERY, **kwargs)
        finally:
            await remote.aclose()

    assert without_timings(asyncio.run(main())) == expected


def test_options_travel_with_the_request(live: LiveServer, comp: GemFilterCompressor) -> None:
    remote = RemoteGemFilterCompressor(live.url).with_options(granularity="token", pool="avg")
    expected = comp.with_options(granularity="token", pool="avg").compress(DOCS, QUERY, top_k=9)
    assert without_timings(remote.compress(DOCS, QUERY, top_k=9)) == without_timings(expected)
    assert remote.options == {"granularity": "token", "pool": "avg"}


@pytest.mark.parametrize(
    ("documents", "query", "kwargs"),
    [
        ("one text", QUERY, {}),
        (["a", None], QUERY, {}),
        (DOCS, "", {}),
        (DOCS, None, {}),
        (DOCS, QUERY, {"top_k": 0}),
        (DOCS, QUERY, {"top_k": True}),
        (DOCS, QUERY, {"document_scores": [1.0]}),
        (DOCS, QUERY, {"document_scores": [float("inf"), 1, 2, 3]}),
    ],
)
def test_bad_inputs_raise_the_local_error_without_a_request(
    live: LiveServer, comp: GemFilterCompressor, documents: Any, query: Any, kwargs: dict[str, Any]
) -> None:
    with pytest.raises((TypeError, ValueError)) as local_error:
        comp.compress(documents, query, **kwargs)
    before = requests_seen(live)
    with pytest.raises(type(local_error.value)) as remote_error:
        RemoteGemFilterCompressor(live.url).compress(documents, query, **kwargs)
    assert str(remote_error.value) == str(local_error.value)
    assert requests_seen(live) == before


@pytest.mark.parametrize(("options", "kind"), [({"granularity": "words"}, ValueError), ({"topk": 3}, TypeError)])
def test_errors_found_by_the_server_raise_the_library_exception(
    live: LiveServer, comp: GemFilterCompressor, options: dict[str, Any], kind: type[Exception]
) -> None:
    with pytest.raises(kind) as local_error:
        comp.with_options(**options)
    with pytest.raises(kind) as remote_error:
        RemoteGemFilterCompressor(live.url, options=options).compress(DOCS, QUERY)
    assert str(remote_error.value) == str(local_error.value)


def test_a_request_over_a_limit_raises_value_error_naming_it(live: LiveServer) -> None:
    with pytest.raises(ValueError, match=r"^documents: 9 documents exceed this server's limit of 8"):
        RemoteGemFilterCompressor(live.url).compress(["a"] * 9, QUERY)


class Gate:
    def __init__(self, live: LiveServer) -> None:
        self.open = threading.Event()
        self.held = threading.Event()
        self._run = live.service.batcher._run
        live.service.batcher._run = self

    def __call__(self, key: Hashable, payloads: list[Any]) -> Any:
        self.held.set()
        assert self.open.wait(60)
        return self._run(key, payloads)


def test_429_is_retried_after_retry_after(comp: GemFilterCompressor) -> None:
    with running_server(comp, ServeSettings(max_batch=1, max_queue=1, max_wait_ms=0)) as live:
        gate = Gate(live)
        registry = live.service.metrics.registry
        with ThreadPoolExecutor(3) as pool:
            held = pool.submit(RemoteGemFilterCompressor(live.url).compress, DOCS, QUERY, top_k=8)
            gate.held.wait(30)
            queued = pool.submit(RemoteGemFilterCompressor(live.url).compress, DOCS, QUERY, top_k=9)
            wait_until(lambda: live.service.batcher.depth == 1, what="a full queue")
            started = time.monotonic()
            retried = pool.submit(RemoteGemFilterCompressor(live.url, max_retries=5).compress, DOCS, QUERY, top_k=10)
            wait_until(
                lambda: (
                    (
                        registry.get_sample_value(
                            "gemfilter_errors_total", {"kind": "queue_full", "route": "/v1/compress"}
                        )
                        or 0
                    )
                    >= 1
                ),
                what="a 429",
            )
            gate.open.set()  # room again: the client's retry (after Retry-After: 1) gets through
            result = retried.result()
            waited = time.monotonic() - started
            held.result(), queued.result()
        no_retries = RemoteGemFilterCompressor(live.url, max_retries=0)
        assert without_timings(result) == without_timings(comp.compress(DOCS, QUERY, top_k=10))
        assert waited >= 1.0, "the client did not wait for Retry-After"
        # with the queue full and no retries left, the 429 surfaces as RemoteError
        gate.open.clear()
        with ThreadPoolExecutor(2) as pool:
            gate.held.clear()
            first = pool.submit(RemoteGemFilterCompressor(live.url).compress, DOCS, QUERY)
            gate.held.wait(30)
            second = pool.submit(RemoteGemFilterCompressor(live.url).compress, DOCS, QUERY)
            wait_until(lambda: live.service.batcher.depth == 1, what="a full queue")
            with pytest.raises(RemoteError, match="queue") as err:
                no_retries.compress(DOCS, QUERY)
            gate.open.set()
            first.result(), second.result()
        assert (err.value.status, err.value.kind) == (429, "queue_full")


def test_an_unreachable_endpoint_is_a_remote_error_after_the_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    remote = RemoteGemFilterCompressor(f"http://127.0.0.1:{port}", max_retries=1, max_retry_wait=0.01)
    with pytest.raises(RemoteError, match="could not reach"):
        remote.compress(DOCS, QUERY)


def test_constructor_checks_and_retry_after_parsing() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        RemoteGemFilterCompressor("localhost:8000")
    with pytest.raises(ValueError, match="timeout"):
        RemoteGemFilterCompressor("http://x", timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        RemoteGemFilterCompressor("http://x", max_retries=-1)
    assert _retry_after("3", 0) == 3.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < _retry_after(future, 0) <= 30
    assert 0 < _retry_after("soon", 0) < 1  # unreadable: exponential backoff
    assert 0 < _retry_after(None, 2) < 2
