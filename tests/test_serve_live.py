"""The service on a real uvicorn server (127.0.0.1, a free port): batching, back-pressure, drain and faults.

A gate in front of the model thread holds a batch until the test opens it, so that queues and batches
are built deterministically (the tests wait for conditions, never for fixed times).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gemfilter_rag import CompressionResult, GemFilterCompressor
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.testing import LiveServer, running_server, same_result, wait_until

TEXTS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Cambridge tells you that you should be smarter. Silicon Valley tells you to be more powerful.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "When you write an essay, you find out what you think. Most good ideas appear in the middle.",
    "Dr. Smith said the results were good. The question was whether it would still work at length.",
    "Founders often spend months building features nobody asked for. Talk to users instead.",
]
QUESTIONS = ["What does New York tell you?", "When were startups cheap?", "What does writing do?"]


def request(i: int, **extra: Any) -> dict[str, Any]:
    """A varied request: a different subset of documents, question, budget and (sometimes) retriever scores."""
    docs = [TEXTS[(i + k) % len(TEXTS)] for k in range(2 + i % 4)]
    body: dict[str, Any] = {"documents": docs, "query": QUESTIONS[i % len(QUESTIONS)], "top_k": 6 + 3 * (i % 5)}
    if i % 3 == 1:
        body["document_scores"] = [round(0.9 - 0.1 * k, 2) for k in range(len(docs))]
    body.update(extra)
    return body


def local(comp: GemFilterCompressor, body: dict[str, Any]) -> CompressionResult:
    """What the library returns for the same request, called directly."""
    return comp.with_options(**body.get("options", {})).compress(
        body["documents"], body["query"], top_k=body.get("top_k"), document_scores=body.get("document_scores")
    )


class Gate:
    """Holds every batch in the model thread until ``open`` is set."""

    def __init__(self, live: LiveServer) -> None:
        self.open = threading.Event()
        self.held = threading.Event()
        self._run = live.service.batcher._run
        live.service.batcher._run = self

    def __call__(self, key: Hashable, payloads: list[Any]) -> Any:
        self.held.set()
        assert self.open.wait(60), "the test never opened the gate"
        return self._run(key, payloads)


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1/compress", json=body, timeout=60)


def metrics(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


@pytest.fixture(scope="module")
def comp() -> GemFilterCompressor:
    from tinymodels import build_model, build_tokenizer

    return GemFilterCompressor(build_model("qwen2"), build_tokenizer(), filter_layer=2)


def test_concurrent_requests_are_batched_and_equal_one_by_one_calls(comp: GemFilterCompressor) -> None:
    bodies = [request(i) for i in range(7)] + [request(i, options={"granularity": "token"}) for i in (7, 8)]
    with running_server(comp, ServeSettings(max_batch=8, max_wait_ms=5)) as live, ThreadPoolExecutor(9) as pool:
        gate = Gate(live)
        first = pool.submit(post, live.url, bodies[0])
        gate.held.wait(30)
        rest = [pool.submit(post, live.url, b) for b in bodies[1:]]
        wait_until(lambda: live.service.batcher.depth == 8, what="8 queued requests")
        gate.open.set()
        responses = [first.result()] + [f.result() for f in rest]
        m = metrics(live.url)
    assert [r.status_code for r in responses] == [200] * 9
    for body, response in zip(bodies, responses, strict=True):
        assert same_result(CompressionResult.from_dict(response.json()), local(comp, body)), body
    # the held request alone, then the 6 with default options in one pass, then the 2 with other options
    assert (m["gemfilter_batch_size_count"], m["gemfilter_batch_size_sum"]) == (3, 9)
    assert (m["gemfilter_batch_size_bucket{le=1.0}"], m["gemfilter_batch_size_bucket{le=2.0}"]) == (1, 2)
    assert m["gemfilter_batch_size_bucket{le=6.0}"] == 3
    assert m["gemfilter_requests_total{route=/v1/compress,status=200}"] == 9


def test_a_full_queue_answers_429_at_once_and_accepted_requests_complete(comp: GemFilterCompressor) -> None:
    with running_server(comp, ServeSettings(max_batch=1, max_queue=2, max_wait_ms=0)) as live:
        gate = Gate(live)
        with ThreadPoolExecutor(3) as pool:
            held = pool.submit(post, live.url, request(0))
            gate.held.wait(30)
            queued = [pool.submit(post, live.url, request(i)) for i in (1, 2)]
            wait_until(lambda: live.service.batcher.depth == 2, what="a full queue")
            shed = post(live.url, request(3))
            health = httpx.get(live.url + "/health").json()
            gate.open.set()
            accepted = [held.result()] + [f.result() for f in queued]
        m = metrics(live.url)
    assert shed.status_code == 429
    assert int(shed.headers["retry-after"]) >= 1
    error = shed.json()["error"]
    assert (error["kind"], error["limit"]) == ("queue_full", 2) and "Retry-After" in error["message"]
    assert health["queue_depth"] == 2 and health["running"] == 1
    for i, response in enumerate(accepted):
        assert response.status_code == 200
        assert same_result(CompressionResult.from_dict(response.json()), local(comp, request(i)))
    assert (
        m["gemfilter_errors_total{kind=queue_full,route=/v1/compress}"] == 1
        and m["gemfilter_requests_total{route=/v1/compress,status=429}"] == 1
    )


def test_graceful_shutdown_finishes_in_flight_requests_and_answers_new_ones_503(comp: GemFilterCompressor) -> None:
    with running_server(comp, ServeSettings(max_wait_ms=0)) as live, ThreadPoolExecutor(2) as pool:
        gate = Gate(live)
        in_flight = pool.submit(post, live.url, request(4))
        gate.held.wait(30)
        live.server.request_drain()  # what SIGTERM does
        wait_until(lambda: live.service.draining, what="the drain")
        new = post(live.url, request(5))
        health = httpx.get(live.url + "/health")
        assert live.thread.is_alive(), "the server must wait for the request in flight"
        gate.open.set()
        finished = in_flight.result()
        live.thread.join(timeout=30)
        assert not live.thread.is_alive(), "the server did not exit after the drain"
    assert new.status_code == 503 and new.json()["error"]["kind"] == "shutting_down" and new.headers["retry-after"]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert finished.status_code == 200
    assert same_result(CompressionResult.from_dict(finished.json()), local(comp, request(4)))


def test_a_client_that_disconnects_while_queued_leaves_the_queue(comp: GemFilterCompressor) -> None:
    with running_server(comp, ServeSettings(max_batch=1, max_wait_ms=0)) as live, ThreadPoolExecutor(2) as pool:
        gate = Gate(live)
        held = pool.submit(post, live.url, request(0))
        gate.held.wait(30)
        payload = json.dumps(request(1)).encode()
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:  # a whole request, then the client goes away
            sock.sendall(
                b"POST /v1/compress HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            wait_until(lambda: live.service.batcher.depth == 1, what="the request to queue")
        wait_until(lambda: live.service.batcher.depth == 0, what="the request to leave the queue")
        after = pool.submit(post, live.url, request(2))
        wait_until(lambda: live.service.batcher.depth == 1, what="the next request to queue")
        gate.open.set()
        results = [held.result(), after.result()]
        m = metrics(live.url)
    for i, response in zip((0, 2), results, strict=True):
        assert response.status_code == 200
        assert same_result(CompressionResult.from_dict(response.json()), local(comp, request(i)))
    assert m["gemfilter_errors_total{kind=client_disconnected,route=/v1/compress}"] == 1
    assert m["gemfilter_batch_size_count"] == 2, "the abandoned request must not run"


def test_a_client_that_disconnects_while_sending_is_no_server_error(comp: GemFilterCompressor) -> None:
    with running_server(comp, ServeSettings(max_wait_ms=0)) as live:
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:  # promises 1,000 bytes, sends 20, leaves
            sock.sendall(
                b"POST /v1/compress HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b'{"documents": ["a", '
            )
        wait_until(
            lambda: metrics(live.url)["gemfilter_errors_total{kind=client_disconnected,route=/v1/compress}"] == 1,
            what="the disconnect",
        )
        after = post(live.url, request(0))
        m = metrics(live.url)
    assert m["gemfilter_errors_total{kind=internal,route=/v1/compress}"] == 0
    assert after.status_code == 200


def test_a_request_of_the_maximum_size_is_served_beside_small_ones(comp: GemFilterCompressor) -> None:
    limit_docs, limit_bytes = 8, 2_500  # about the tiny model's 1,024 positions
    docs = [TEXTS[i % len(TEXTS)] for i in range(limit_docs)]
    body = {"documents": docs, "query": QUESTIONS[0], "top_k": 40}
    body["documents"][-1] += " " + " ".join([TEXTS[3]] * 20)
    over_by = len(json.dumps(body).encode()) - limit_bytes
    body["documents"][-1] = body["documents"][-1][:-over_by]  # exactly the byte limit (ASCII: a byte a character)
    raw = json.dumps(body).encode()
    assert len(raw) == limit_bytes
    settings = ServeSettings(max_request_bytes=limit_bytes, max_documents=limit_docs, max_wait_ms=2)
    with running_server(comp, settings) as live, ThreadPoolExecutor(6) as pool:
        big = pool.submit(post, live.url, body)
        small = [pool.submit(post, live.url, request(i)) for i in range(5)]
        over = httpx.post(
            live.url + "/v1/compress", content=raw + b" ", headers={"content-type": "application/json"}, timeout=60
        )
        responses = [big.result()] + [f.result() for f in small]
    assert over.status_code == 413 and over.json()["error"]["limit"] == limit_bytes
    assert [r.status_code for r in responses] == [200] * 6
    assert same_result(CompressionResult.from_dict(responses[0].json()), local(comp, body))
    for i, response in enumerate(responses[1:]):
        assert same_result(CompressionResult.from_dict(response.json()), local(comp, request(i)))


MALFORMED = [
    b"{",
    b"null",
    b"[]",
    b'{"documents": "x", "query": "q"}',
    b'{"documents": ["a"], "query": ""}',
    b'{"documents": ["a"], "query": "q", "top_k": -3}',
    b'{"documents": ["a"], "query": "q", "options": {"pool": "median"}}',
    b"\x00\x01\x02",
]


def test_a_burst_of_malformed_requests_does_not_disturb_good_ones(comp: GemFilterCompressor) -> None:
    def bad(i: int) -> httpx.Response:
        return httpx.post(
            live.url + "/v1/compress",
            content=MALFORMED[i % len(MALFORMED)],
            headers={"content-type": "application/json"},
            timeout=60,
        )

    with running_server(comp, ServeSettings(max_wait_ms=2)) as live, ThreadPoolExecutor(16) as pool:
        bads = [pool.submit(bad, i) for i in range(48)]
        goods = [pool.submit(post, live.url, request(i)) for i in range(8)]
        bad_responses = [f.result() for f in bads]
        good_responses = [f.result() for f in goods]
        health = httpx.get(live.url + "/health").json()
        m = metrics(live.url)
    assert [r.status_code for r in bad_responses] == [422] * 48
    assert all(r.json()["error"]["message"] for r in bad_responses)
    for i, response in enumerate(good_responses):
        assert response.status_code == 200
        assert same_result(CompressionResult.from_dict(response.json()), local(comp, request(i)))
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["queue_depth"] == 0
    assert (
        m["gemfilter_requests_total{route=/v1/compress,status=422}"] == 48
        and m["gemfilter_requests_total{route=/v1/compress,status=200}"] == 8
    )
