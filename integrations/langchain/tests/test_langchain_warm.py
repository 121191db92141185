"""GemFilterCacheWarmer on tiny random models: it fills the chunk cache and leaves the documents alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_gemfilter import GemFilterCacheWarmer, GemFilterDocumentCompressor

from gemfilter_rag import ChunkCache

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour.",
    "The secret password for the vault is marmalade. The night guard said so.",
    "A quiet river runs through the valley. The old mill still stands.",
]
QUERY = "What is the secret password for the vault?"


def test_fields_have_descriptions() -> None:
    for name, field in GemFilterCacheWarmer.model_fields.items():
        assert field.description, f"field {name} has no description"


def test_warmed_documents_are_not_encoded_again(core: Any) -> None:
    cache = ChunkCache()
    comp = core.with_cache(cache, cache_mode="force")
    docs = [Document(page_content=t, metadata={"i": i}, id=f"id-{i}") for i, t in enumerate(TEXTS)]
    warmer = GemFilterCacheWarmer(compressor=comp, batch_size=2)
    assert warmer.transform_documents(docs) == docs
    stored = cache.stats()["stored"]
    assert stored == 1 + len(TEXTS) + 1  # the prefix, the separator and every document
    out = GemFilterDocumentCompressor(compressor=comp, top_k=20).compress_documents(docs, QUERY)
    assert out and cache.stats()["stored"] == stored  # the query encoded nothing
    assert asyncio.run(warmer.atransform_documents(docs)) == docs and cache.stats()["stored"] == stored


def test_it_takes_the_document_compressor_and_refuses_what_has_no_cache(core: Any) -> None:
    comp = core.with_cache(ChunkCache(), cache_mode="force")
    lc = GemFilterDocumentCompressor(compressor=comp, top_k=20)
    assert GemFilterCacheWarmer(compressor=lc).compressor.cache is comp.cache
    with pytest.raises(ValueError, match="chunk cache"):
        GemFilterCacheWarmer(compressor=core)
    with pytest.raises(TypeError, match="GemFilterCompressor"):
        GemFilterCacheWarmer(compressor="model")
    with pytest.raises(TypeError, match="Document"):
        GemFilterCacheWarmer(compressor=comp).transform_documents(["text"])  # type: ignore[list-item]


def test_it_warms_a_services_cache_through_its_client(core: Any) -> None:
    from gemfilter_rag import RemoteGemFilterCompressor
    from gemfilter_rag.serve import ServeSettings
    from gemfilter_rag.serve.testing import running_server

    cache = ChunkCache()
    with running_server(core.with_cache(cache, cache_mode="force"), ServeSettings(max_wait_ms=0)) as server:
        with RemoteGemFilterCompressor(server.url) as remote:
            docs = [Document(page_content=t) for t in TEXTS]
            assert GemFilterCacheWarmer(compressor=remote).compressor is remote
            lc = GemFilterDocumentCompressor(endpoint=server.url)  # the adapter's own client of the service
            warmer = GemFilterCacheWarmer(compressor=lc)
            assert isinstance(warmer.compressor, RemoteGemFilterCompressor)
            assert warmer.transform_documents(docs) == docs
            assert cache.stats()["stored"] == 1 + len(TEXTS) + 1  # the service's cache holds every document
