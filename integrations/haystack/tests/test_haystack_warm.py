"""GemFilterCacheWarmer on tiny random models: it fills the chunk cache, passes the documents on unchanged, and
runs in an indexing pipeline beside a DocumentWriter."""

import asyncio
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack.core.errors import SerializationError
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack_integrations.components.rankers.gemfilter import GemFilterCacheWarmer, GemFilterDocumentCompressor

from gemfilter_rag import ChunkCache, RemoteGemFilterCompressor

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour.",
    "The secret password for the vault is marmalade. The night guard said so.",
    "A quiet river runs through the valley. The old mill still stands.",
]
QUERY = "What is the secret password for the vault?"
ENTRIES = 1 + len(TEXTS) + 1  # the prompt's prefix, the separator and every document


def make_docs() -> list[Document]:
    return [Document(content=t, meta={"i": i}, id=f"id-{i}") for i, t in enumerate(TEXTS)]


def test_warmed_documents_are_not_encoded_again(core: Any) -> None:
    cache = ChunkCache()
    comp = core.with_cache(cache, cache_mode="force")
    docs = make_docs()
    warmer = GemFilterCacheWarmer(compressor=comp, batch_size=2)
    out = warmer.run(documents=docs)
    assert out["documents"] == docs and out["encoded"] == ENTRIES
    assert cache.stats()["stored"] == ENTRIES
    compressed = GemFilterDocumentCompressor(compressor=comp, top_k=20).run(documents=docs, query=QUERY)
    assert compressed["documents"] and cache.stats()["stored"] == ENTRIES  # the query encoded nothing
    again = asyncio.run(warmer.run_async(documents=docs))
    assert again == {"documents": docs, "encoded": 0}


def test_documents_without_text_pass_through(core: Any) -> None:
    cache = ChunkCache()
    docs = [Document(content=None, id="blob"), *make_docs()[:1]]
    out = GemFilterCacheWarmer(compressor=core.with_cache(cache, cache_mode="force")).run(documents=docs)
    assert out["documents"] == docs and out["encoded"] == 3  # prefix, separator, the one text


def test_it_takes_the_document_compressor_and_refuses_what_has_no_cache(core: Any) -> None:
    comp = core.with_cache(ChunkCache(), cache_mode="force")
    given = GemFilterCacheWarmer(compressor=GemFilterDocumentCompressor(compressor=comp, top_k=20))
    assert given.compressor is comp
    with pytest.raises(ValueError, match="chunk cache"):
        GemFilterCacheWarmer(compressor=core)
    with pytest.raises(TypeError, match="GemFilterCompressor"):
        GemFilterCacheWarmer(compressor="model")
    with pytest.raises(ValueError, match="compressor/endpoint"):
        GemFilterCacheWarmer()
    with pytest.raises(ValueError, match="endpoint"):
        GemFilterCacheWarmer(endpoint="localhost:8000")
    with pytest.raises(ValueError, match="batch_size"):
        GemFilterCacheWarmer(compressor=comp, batch_size=0)
    with pytest.raises(TypeError, match="Document"):
        GemFilterCacheWarmer(compressor=comp).run(documents=["text"])  # type: ignore[list-item]
    with pytest.raises(SerializationError, match="endpoint="):
        GemFilterCacheWarmer(compressor=comp).to_dict()


def test_an_indexing_pipeline_over_a_service_saved_and_loaded(core: Any) -> None:
    from gemfilter_rag.serve import ServeSettings
    from gemfilter_rag.serve.testing import running_server

    cache = ChunkCache()
    with running_server(core.with_cache(cache, cache_mode="force"), ServeSettings(max_wait_ms=0)) as server:
        store = InMemoryDocumentStore()
        indexing = Pipeline()
        indexing.add_component("warmer", GemFilterCacheWarmer(endpoint=server.url))
        indexing.add_component("writer", DocumentWriter(document_store=store))
        indexing.connect("warmer.documents", "writer.documents")
        loaded = Pipeline.loads(indexing.dumps())
        out = loaded.run({"warmer": {"documents": make_docs()}})
        assert out["warmer"]["encoded"] == ENTRIES and out["writer"]["documents_written"] == len(TEXTS)
        assert cache.stats()["stored"] == ENTRIES  # the service's cache holds every document
        assert sorted(d.id for d in store.filter_documents()) == [f"id-{i}" for i in range(len(TEXTS))]
        warmer = loaded.get_component("warmer")
        assert isinstance(warmer.compressor, RemoteGemFilterCompressor)
        warmer.close()
        # the query side's component over the same service, not opened yet: warm_up opens its client
        query_side = GemFilterDocumentCompressor(endpoint=server.url)
        lazy = GemFilterCacheWarmer(compressor=query_side)
        assert lazy.compressor is None
        assert lazy.run(documents=make_docs())["encoded"] == 0  # every entry is there already
        assert lazy.compressor is query_side.compressor and isinstance(lazy.compressor, RemoteGemFilterCompressor)
        query_side.close()
