"""GemFilterNodePostprocessor(endpoint=...) against a real `gemfilter serve`: the local postprocessor's output."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
from llama_index.postprocessor.gemfilter import GemFilterNodePostprocessor

from gemfilter_rag import RemoteGemFilterCompressor
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.testing import LiveServer, running_server, without_timings

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour. Nobody slept that night.",
    "Bananas ripen faster next to apples. Store them in a paper bag. Eat them within a week.",
    "The secret password for the vault is marmalade. The night guard said so. He was very tired.",
    "A quiet river runs through the valley. The old mill still stands. Children play by the water.",
]
QUERY = "What is the secret password for the vault?"


def make_nodes() -> list[NodeWithScore]:
    out = []
    for i, text in enumerate(TEXTS):
        node = TextNode(text=text, id_=f"node-{i}", metadata={"file_name": f"doc{i}.txt", "page": i})
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"source-{i}")
        out.append(NodeWithScore(node=node, score=1.0 - 0.2 * i))
    return out


def view(nodes: list[NodeWithScore]) -> list[tuple[Any, ...]]:
    """What a node carries: id, text, metadata, excluded keys, relationships, score."""
    return [
        (
            n.node.node_id,
            n.node.get_content(),
            n.node.metadata,
            n.node.excluded_llm_metadata_keys,
            n.node.excluded_embed_metadata_keys,
            n.node.relationships,
            n.score,
        )
        for n in nodes
    ]


@pytest.fixture(scope="module")
def service(core: Any) -> Iterator[LiveServer]:
    with running_server(core, ServeSettings(max_wait_ms=0)) as live:
        yield live


@pytest.mark.parametrize(
    "fields",
    [
        {"top_k": 30, "granularity": "token"},
        {"top_k": 24},
        {"top_k": 24, "use_node_scores": False},
        {"top_k": 60, "granularity": "document", "options": {"pool": "avg"}},
    ],
)
def test_remote_nodes_equal_local_ones(service: LiveServer, core: Any, fields: dict[str, Any]) -> None:
    local = GemFilterNodePostprocessor(compressor=core, **fields)
    remote = GemFilterNodePostprocessor(endpoint=service.url, **fields)
    expected = local.postprocess_nodes(make_nodes(), query_str=QUERY)
    got = remote.postprocess_nodes(make_nodes(), query_str=QUERY)
    assert expected and view(got) == view(expected)
    assert isinstance(remote.compressor, RemoteGemFilterCompressor)
    assert remote.last_result is not None and local.last_result is not None
    assert without_timings(remote.last_result) == without_timings(local.last_result)


def test_async_path_uses_the_async_client(service: LiveServer, core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = GemFilterNodePostprocessor(compressor=core, top_k=30).postprocess_nodes(make_nodes(), query_str=QUERY)

    def sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the remote async path must use the async client, not the sync path in a thread")

    monkeypatch.setattr(GemFilterNodePostprocessor, "compress_with_result", sync)
    monkeypatch.setattr(RemoteGemFilterCompressor, "compress", sync)
    remote = GemFilterNodePostprocessor(endpoint=service.url, top_k=30)

    async def main() -> Any:
        return await asyncio.gather(
            *(remote.apostprocess_nodes(make_nodes(), query_bundle=QueryBundle(QUERY)) for _ in range(4))
        )

    assert [view(r) for r in asyncio.run(main())] == [view(expected)] * 4


def test_endpoint_arguments(core: Any) -> None:
    with pytest.raises(ValueError, match="^model: .*endpoint"):
        GemFilterNodePostprocessor(model="/some/model", endpoint="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="^endpoint: "):
        GemFilterNodePostprocessor(compressor=core, endpoint="http://127.0.0.1:1")
    closed = GemFilterNodePostprocessor(endpoint="http://127.0.0.1:1")
    assert closed.postprocess_nodes([], query_str=QUERY) == []  # nothing to send: no request
    assert "endpoint" in GemFilterNodePostprocessor(endpoint="http://127.0.0.1:1").to_dict()
