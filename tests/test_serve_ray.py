"""The app on Ray Serve: a local Ray instance, two replicas of a tiny model, requests through Ray's HTTP proxy.

Marked ``ray`` (also ``make test-ray``): the module starts a local Ray instance (about 30 s on 2 idle cores;
on a machine too loaded for Ray's 15 s agent startup window, ray-project/ray#65983, ``ray.init`` fails).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from gemfilter_rag import CompressionResult, GemFilterCompressor
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.testing import same_result

pytestmark = pytest.mark.ray

TEXTS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Cambridge tells you that you should be smarter. Silicon Valley tells you to be more powerful.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "When you write an essay, you find out what you think. Most good ideas appear in the middle.",
    "Dr. Smith said the results were good. The question was whether it would still work at length.",
]
QUESTIONS = ["What does New York tell you?", "When were startups cheap?", "What does writing do?"]


def request(i: int) -> dict[str, Any]:
    docs = [TEXTS[(i + k) % len(TEXTS)] for k in range(2 + i % 3)]
    body: dict[str, Any] = {"documents": docs, "query": QUESTIONS[i % 3], "top_k": 6 + 2 * (i % 4)}
    if i % 2:
        body["document_scores"] = [1.0 - 0.1 * k for k in range(len(docs))]
    return body


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinymodels import build_model, build_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    build_model("llama").save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ray_url(tiny_dir: Path) -> Iterator[str]:
    import ray
    from ray import serve

    from gemfilter_rag.serve.ray import deployment

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = deployment(
            str(tiny_dir),
            device="cpu",
            settings=ServeSettings(max_batch=4, max_wait_ms=5),
            # each replica makes its own chunk cache over one file (ChunkCache keyword arguments travel)
            options={"cache": {"max_bytes": 1 << 20, "path": str(tiny_dir / "chunks.sqlite")}},
            num_replicas=2,
            ray_actor_options={"num_cpus": 0.5},
        )
        serve.run(app, name="gemfilter", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_serve_concurrent_requests_equal_to_the_library(tiny_dir: Path, ray_url: str) -> None:
    from ray import serve

    status = serve.status().applications["gemfilter"]
    replicas = status.deployments["GemFilter"].replica_states
    assert replicas.get("RUNNING") == 2, replicas
    bodies = [request(i) for i in range(24)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda b: httpx.post(ray_url + "/v1/compress", json=b, timeout=120), bodies))
    assert time.monotonic() - started < 120
    local = GemFilterCompressor.from_pretrained(str(tiny_dir), device="cpu")
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = local.compress(
            body["documents"], body["query"], top_k=body["top_k"], document_scores=body.get("document_scores")
        )
        assert same_result(CompressionResult.from_dict(response.json()), expected), body


def test_errors_and_health_through_the_proxy(ray_url: str) -> None:
    bad = httpx.post(ray_url + "/v1/compress", json={"documents": ["a"], "query": ""}, timeout=60)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"] == "query: is empty; pass the question the context must answer."
    health = httpx.get(ray_url + "/health", timeout=60).json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert "gemfilter_requests_total" in httpx.get(ray_url + "/metrics", timeout=60).text


@pytest.mark.filterwarnings("ignore:coroutine .*__del__' was never awaited:RuntimeWarning")  # Ray's async __del__
def test_a_replica_serves_the_app_through_ray_serves_own_asgi_wrapper(tiny_dir: Path) -> None:
    """Without a cluster: Ray Serve's ingress wrapper around ``ReplicaApp`` starts (lifespan), answers
    and stops as a replica does; this holds even where a loaded machine cannot start Ray itself."""
    import asyncio
    import inspect

    from ray import serve

    from gemfilter_rag.serve.ray import GemFilterReplica, ReplicaApp

    replica_cls = serve.ingress(ReplicaApp({"model": str(tiny_dir), "device": "cpu"}, ServeSettings()))(
        GemFilterReplica
    )

    async def main() -> list[httpx.Response]:
        replica = object.__new__(replica_cls)
        started = replica_cls.__init__(replica)
        if inspect.isawaitable(started):  # async in recent Ray, sync in older ones
            await started
        await replica._run_asgi_lifespan_startup()  # loads the model, as on a replica
        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            answers = await asyncio.gather(*(client.post("/v1/compress", json=request(i)) for i in range(4)))
            answers.append(await client.get("/health"))
        await replica.__del__()  # lifespan shutdown: the batcher stops
        return list(answers)

    responses = asyncio.run(main())
    local = GemFilterCompressor.from_pretrained(str(tiny_dir), device="cpu")
    for i, response in enumerate(responses[:4]):
        body = request(i)
        expected = local.compress(
            body["documents"], body["query"], top_k=body["top_k"], document_scores=body.get("document_scores")
        )
        assert response.status_code == 200 and same_result(CompressionResult.from_dict(response.json()), expected)
    assert responses[4].json()["model_loaded"] is True


def test_replicas_share_the_chunk_cache_file(ray_url: str) -> None:
    import httpx

    first = httpx.post(f"{ray_url}/v1/warm", json={"documents": TEXTS[:3]}, timeout=120)
    assert first.status_code == 200, first.text
    assert first.json()["encoded"] == 5  # three chunks, the prefix and the separator
    for _ in range(4):  # whichever replica answers: the file has every entry
        again = httpx.post(f"{ray_url}/v1/warm", json={"documents": TEXTS[:3]}, timeout=120).json()
        assert again["encoded"] == 0 and again["cache"]["disk_entries"] == 5


def test_the_application_builder_reads_string_arguments(tiny_dir: Path) -> None:
    from gemfilter_rag.serve.ray import app

    built = app({"model": str(tiny_dir), "num_replicas": "3", "num_cpus": "0.5", "max_batch": "16"})
    deployment = built._bound_deployment
    assert deployment.num_replicas == 3 and deployment.ray_actor_options["num_cpus"] == 0.5
    assert deployment.max_ongoing_requests == 16 + ServeSettings().max_queue
    scaled = app({"min_replicas": "1", "max_replicas": "4"})._bound_deployment
    assert scaled._deployment_config.autoscaling_config.max_replicas == 4
    with pytest.raises(TypeError, match="unknown setting"):
        app({"max_bach": "3"})
    with pytest.raises(ValueError, match="cache_mib: -1 is negative"):  # refused when built, not in each replica
        app({"cache_mib": "-1"})
    with pytest.raises(ValueError, match="cache_dtype: given without cache_mib or cache_file"):
        app({"cache_dtype": "int8"})
