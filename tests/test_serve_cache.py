"""The service's chunk cache: ``gemfilter serve --cache-*``, ``POST /v1/warm``, its counters in /health and
/metrics, and warming it from a client (``RemoteGemFilterCompressor.warm`` and the framework warmers)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gemfilter_rag import ChunkCache, CompressionResult, GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.remote import RemoteError
from gemfilter_rag.serve import ServeSettings, create_app
from gemfilter_rag.serve.command import add_arguments, load_options
from gemfilter_rag.serve.testing import running_server, without_timings

DOCS = [
    "Cities send messages. New York tells you that you should make more money.",
    "Startups in 2005 could be started for far less money than in 1995. Servers were cheaper.",
    "Dr. Smith said the results were good. The question was whether it would still work.",
]
QUERY = "What does New York tell you?"


def cached_compressor(cache: ChunkCache | None = None) -> GemFilterCompressor:
    from tinymodels import build_model, build_tokenizer

    # "force": the tiny model's profile has no cache-mode readout; the cached path runs with its own scorer
    return GemFilterCompressor(
        build_model("llama"),
        build_tokenizer(),
        filter_layer=2,
        cache=cache if cache is not None else ChunkCache(),
        cache_mode="force",
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(cached_compressor(), ServeSettings(max_wait_ms=0, max_documents=4))) as c:
        yield c


def gauges(client: TestClient) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name.startswith("gemfilter_chunk_cache_")
    }


def test_warm_encodes_each_chunk_once_and_compress_then_reads_it(client: TestClient) -> None:
    first = client.post("/v1/warm", json={"documents": DOCS})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["documents"] == 3
    assert body["encoded"] == 5  # the three chunks, the prompt's prefix and the separator
    assert body["cache"]["entries"] == 5 and body["cache"]["misses"] == 5
    again = client.post("/v1/warm", json={"documents": DOCS[::-1]}).json()
    assert again["encoded"] == 0 and again["cache"]["entries"] == 5

    hits = client.get("/health").json()["cache"]["hits"]
    answer = client.post("/v1/compress", json={"documents": DOCS, "query": QUERY, "top_k": 12})
    assert answer.status_code == 200, answer.text
    health = client.get("/health").json()["cache"]
    assert health["hits"] >= hits + 5 and health["entries"] == 5  # every chunk came from the cache
    seen = gauges(client)
    assert seen["gemfilter_chunk_cache_hits"] == health["hits"]
    assert seen["gemfilter_chunk_cache_entries"] == 5 and seen["gemfilter_chunk_cache_bytes"] > 0


def test_the_served_result_is_the_local_cached_result(client: TestClient) -> None:
    local = cached_compressor()
    local.warm(DOCS)
    expected = local.compress(DOCS, QUERY, top_k=12)
    client.post("/v1/warm", json={"documents": DOCS})
    got = client.post("/v1/compress", json={"documents": DOCS, "query": QUERY, "top_k": 12}).json()
    assert without_timings(CompressionResult.from_dict(got)) == without_timings(expected)


def test_warm_errors_name_the_field_and_the_fix(client: TestClient) -> None:
    bad = client.post("/v1/warm", json={"documents": "one text"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "documents"
    extra = client.post("/v1/warm", json={"documents": DOCS, "query": QUERY})
    assert extra.status_code == 422
    many = client.post("/v1/warm", json={"documents": DOCS * 2})
    assert many.status_code == 413 and "--max-documents" in many.json()["error"]["message"]
    option = client.post("/v1/warm", json={"documents": DOCS, "options": {"granularity": "paragraphs"}})
    assert option.status_code == 422 and option.json()["error"]["field"].startswith("options")


def test_a_server_without_a_cache_answers_409_and_reports_none() -> None:
    from tinymodels import build_model, build_tokenizer

    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)
    with TestClient(create_app(comp, ServeSettings(max_wait_ms=0))) as c:
        answer = c.post("/v1/warm", json={"documents": DOCS})
        assert answer.status_code == 409
        error = answer.json()["error"]
        assert error["kind"] == "no_cache" and "--cache-mib" in error["message"]
        assert c.get("/health").json()["cache"] is None
        assert gauges(c) == {}


def test_the_warm_route_is_in_the_openapi_document(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/v1/warm"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"documents", "options"} and schema["required"] == ["documents"]
    assert {"200", "409", "413", "422"} <= set(op["responses"])


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(list(argv))


def test_cache_flags_become_chunk_cache_arguments(tmp_path: Path) -> None:
    assert "cache" not in load_options(parse())
    opts = load_options(parse("--cache-mib", "64", "--cache-dtype", "int8"))
    assert opts["cache"] == {"dtype": "int8", "path": None, "max_bytes": 64 << 20}
    store = tmp_path / "chunks.sqlite"
    assert load_options(parse("--cache-file", str(store)))["cache"] == {"path": str(store)}  # ChunkCache's dtype
    with pytest.raises(ValueError, match="--cache-dtype: given without --cache-mib or --cache-file"):
        load_options(parse("--cache-dtype", "int8"))
    with pytest.raises(ValueError, match="--cache-mib"):
        load_options(parse("--cache-mib", "-1"))
    with pytest.raises(ValueError, match="--cache-file: .* is a directory"):
        load_options(parse("--cache-file", str(tmp_path)))


def test_load_compressor_makes_the_cache_from_its_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gemfilter_rag.serve import loader

    seen: dict[str, object] = {}
    monkeypatch.setattr(GemFilterCompressor, "from_pretrained", staticmethod(lambda **kw: seen.update(kw)))
    loader.load_compressor({"model": None, "cache": {"max_bytes": 1 << 20, "path": str(tmp_path / "c.sqlite")}})
    cache = seen["cache"]
    assert isinstance(cache, ChunkCache) and cache.max_bytes == 1 << 20 and cache.path == tmp_path / "c.sqlite"
    loader.load_compressor({"model": None})
    assert seen["cache"] is None
    with pytest.raises(TypeError, match="cache: expected ChunkCache keyword arguments"):
        loader.load_compressor({"cache": 512})


def test_ray_app_builder_takes_the_cache_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from gemfilter_rag.serve import ray as served

    seen: dict[str, object] = {}
    monkeypatch.setattr(served, "deployment", lambda *a, **kw: seen.update(kw))
    served.app({"cache_mib": "32", "cache_file": "/tmp/x.sqlite", "cache_dtype": "int8", "max_batch": "4"})
    assert seen["options"] == {"cache": {"max_bytes": 32 << 20, "path": "/tmp/x.sqlite", "dtype": "int8"}}
    served.app({})
    assert seen["options"] is None


def test_a_client_warms_the_services_cache_in_requests_under_its_limit() -> None:
    cache = ChunkCache()
    with running_server(cached_compressor(cache), ServeSettings(max_wait_ms=0, max_documents=2)) as server:
        with RemoteGemFilterCompressor(server.url) as remote:
            assert remote.warm(DOCS, per_request=2) == 5  # two requests under the server's limit of two documents
            assert cache.stats()["entries"] == 5
            assert remote.warm(DOCS[1:], per_request=2) == 0
            with pytest.raises(ValueError, match="per_request"):
                remote.warm(DOCS, per_request=0)
            with pytest.raises(ValueError, match="--max-documents"):
                remote.warm(DOCS)  # the default 64 per request is over this server's limit
    from tinymodels import build_model, build_tokenizer

    bare = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=2)
    with running_server(bare, ServeSettings(max_wait_ms=0)) as server:
        with RemoteGemFilterCompressor(server.url) as remote, pytest.raises(RemoteError, match="--cache-mib"):
            remote.warm(DOCS)
