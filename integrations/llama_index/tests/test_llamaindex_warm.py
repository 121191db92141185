"""GemFilterCacheWarmer on tiny random models: it fills the chunk cache and leaves the nodes alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.gemfilter import GemFilterCacheWarmer, GemFilterNodePostprocessor

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


def test_warmed_nodes_are_not_encoded_again(core: Any) -> None:
    cache = ChunkCache()
    comp = core.with_cache(cache, cache_mode="force")
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"source": f"doc{i}"}) for i, t in enumerate(TEXTS)]
    warmer = GemFilterCacheWarmer(compressor=comp, batch_size=2)
    out = IngestionPipeline(transformations=[warmer]).run(nodes=nodes)
    assert [n.node_id for n in out] == [n.node_id for n in nodes]
    stored = cache.stats()["stored"]
    assert stored == 1 + len(TEXTS) + 1  # the prefix, the separator and every node
    post = GemFilterNodePostprocessor(compressor=comp, top_k=20)
    kept = post.postprocess_nodes([NodeWithScore(node=n, score=1.0) for n in nodes], QueryBundle(QUERY))
    assert kept and cache.stats()["stored"] == stored  # the query encoded nothing
    assert list(asyncio.run(warmer.acall(nodes))) == nodes and cache.stats()["stored"] == stored


def test_it_takes_the_postprocessor_and_refuses_what_has_no_cache(core: Any) -> None:
    comp = core.with_cache(ChunkCache(), cache_mode="force")
    assert GemFilterCacheWarmer(compressor=GemFilterNodePostprocessor(compressor=comp)).compressor.cache is comp.cache
    with pytest.raises(ValueError, match="chunk cache"):
        GemFilterCacheWarmer(compressor=core)
    with pytest.raises(TypeError, match="GemFilterCompressor"):
        GemFilterCacheWarmer(compressor=None)


def test_it_warms_a_services_cache_through_its_client(core: Any) -> None:
    from gemfilter_rag import RemoteGemFilterCompressor
    from gemfilter_rag.serve import ServeSettings
    from gemfilter_rag.serve.testing import running_server

    cache = ChunkCache()
    with running_server(core.with_cache(cache, cache_mode="force"), ServeSettings(max_wait_ms=0)) as server:
        with RemoteGemFilterCompressor(server.url) as remote:
            nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
            warmer = GemFilterCacheWarmer(compressor=remote)
            out = IngestionPipeline(transformations=[warmer]).run(nodes=nodes)
            assert [n.node_id for n in out] == [n.node_id for n in nodes]
            assert cache.stats()["stored"] == 1 + len(TEXTS) + 1  # the service's cache holds every node
