"""GemFilterNodePostprocessor on tiny random models: provenance, budget, async, a real query engine."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
from llama_index.postprocessor.gemfilter import GemFilterNodePostprocessor
from tinymodels import fills_kept

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour. Nobody slept that night.",
    "Bananas ripen faster next to apples. Store them in a paper bag. Eat them within a week.",
    "The secret password for the vault is marmalade. The night guard said so. He was very tired.",
    "A quiet river runs through the valley. The old mill still stands. Children play by the water.",
]
QUERY = "What is the secret password for the vault?"


def make_nodes(texts: list[str] = TEXTS) -> list[NodeWithScore]:
    out = []
    for i, text in enumerate(texts):
        node = TextNode(
            text=text,
            id_=f"node-{i}",
            metadata={"file_name": f"doc{i}.txt", "page": i},
            excluded_llm_metadata_keys=["page"],
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"source-{i}")
        out.append(NodeWithScore(node=node, score=1.0 - 0.1 * i))
    return out


def test_exports() -> None:
    import llama_index.postprocessor.gemfilter as pkg

    for name in pkg.__all__:
        assert getattr(pkg, name) is not None


def test_namespace_layout() -> None:
    import llama_index.postprocessor as ns

    assert not hasattr(ns, "__file__") or ns.__file__ is None, "llama_index.postprocessor must stay a namespace"


def test_class_name_and_serialisation(core: Any) -> None:
    pp = GemFilterNodePostprocessor(compressor=core, top_k=16)
    assert GemFilterNodePostprocessor.class_name() == "GemFilterNodePostprocessor"
    data = pp.to_dict()
    assert data["class_name"] == "GemFilterNodePostprocessor" and data["top_k"] == 16
    assert "compressor" not in data and "_compressor" not in data


def test_provenance_kept(core: Any) -> None:
    nodes = make_nodes()
    before = [n.model_copy(deep=True) for n in nodes]
    pp = GemFilterNodePostprocessor(compressor=core, top_k=40, granularity="token")
    out = pp.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.model_dump() for n in nodes] == [n.node.model_dump() for n in before], "inputs were mutated"
    indices = [n.node.metadata["gemfilter"]["index"] for n in out]
    assert indices == sorted(indices) and len(out) > 0
    for item in out:
        i = item.node.metadata["gemfilter"]["index"]
        src = nodes[i]
        assert item.node.node_id == src.node.node_id
        assert item.score == src.score
        assert item.node.relationships == src.node.relationships
        assert {k: v for k, v in item.node.metadata.items() if k != "gemfilter"} == src.node.metadata
        stats = item.node.metadata["gemfilter"]
        assert item.node.get_content() == "".join(src.node.get_content()[a:b] for a, b in stats["spans"])
        assert 0 < stats["kept_tokens"] <= stats["original_tokens"]
        assert "gemfilter" in item.node.excluded_embed_metadata_keys
        assert set(item.node.excluded_llm_metadata_keys) == {"page", "gemfilter"}
        assert "gemfilter" not in item.node.get_content(metadata_mode="llm")


def test_budget_is_global_and_every_node_accounted_for(core: Any) -> None:
    pp = GemFilterNodePostprocessor(compressor=core, top_k=30, granularity="token")
    out, result = pp.compress_with_result(make_nodes(), QueryBundle(QUERY))
    assert result is not None and pp.last_result is result and result.original_tokens > 30
    assert fills_kept([n.node.metadata["gemfilter"]["kept_tokens"] for n in out], 30, core)
    assert [r.index for r in result.documents] == list(range(len(TEXTS)))
    assert [n.node.metadata["gemfilter"]["index"] for n in out] == [r.index for r in result.documents if r.kept]


def test_nodes_with_nothing_kept_are_dropped(core: Any) -> None:
    longest = max(len(core.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    pp = GemFilterNodePostprocessor(compressor=core, top_k=longest, granularity="document")  # room for one node
    out, result = pp.compress_with_result(make_nodes(), QueryBundle(QUERY))
    assert result is not None
    assert len(out) == 1
    assert [n.node.node_id for n in out] == [f"node-{r.index}" for r in result.documents if r.kept]


def test_missing_query_names_it(core: Any) -> None:
    pp = GemFilterNodePostprocessor(compressor=core)
    with pytest.raises(ValueError, match="query_bundle"):
        pp.postprocess_nodes(make_nodes())
    with pytest.raises(ValueError, match="query"):
        pp.postprocess_nodes(make_nodes(), query_str="  ")


def test_empty_nodes_do_not_load_a_model() -> None:
    pp = GemFilterNodePostprocessor(model="/nonexistent/model.gguf")
    assert pp.postprocess_nodes([], query_str=QUERY) == []
    assert not pp._holder.loaded


def test_bad_arguments(core: Any) -> None:
    with pytest.raises(TypeError, match="compressor"):
        GemFilterNodePostprocessor(compressor=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        GemFilterNodePostprocessor(compressor=core, model="some/model")
    with pytest.raises(TypeError, match=r"nodes\[0\]"):
        GemFilterNodePostprocessor(compressor=core).postprocess_nodes(["text"], query_str=QUERY)  # type: ignore[list-item]


def test_async_does_not_block_the_event_loop(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pp = GemFilterNodePostprocessor(compressor=core, top_k=20, granularity="token")
    released = threading.Event()
    real = pp.compressor.compress

    def gated(*args: Any, **kwargs: Any) -> Any:
        assert released.wait(5), "the event loop was blocked while compressing"
        return real(*args, **kwargs)

    monkeypatch.setattr(pp.compressor, "compress", gated)

    async def main() -> list[NodeWithScore]:
        task = asyncio.create_task(pp.apostprocess_nodes(make_nodes(), query_str=QUERY))
        await asyncio.sleep(0.05)  # runs only if the loop is free
        released.set()
        return await task

    out = asyncio.run(main())
    assert fills_kept([n.node.metadata["gemfilter"]["kept_tokens"] for n in out], 20, core)


def test_concurrent_calls_match_serial(core: Any) -> None:
    pp = GemFilterNodePostprocessor(compressor=core, top_k=25, granularity="token")
    queries = [QUERY, "Where does the river run?", "How many ships were counted?", "When do bananas ripen?"]

    def view(nodes: list[NodeWithScore]) -> list[tuple[str, str]]:
        return [(n.node.node_id, n.node.get_content()) for n in nodes]

    serial = [view(pp.postprocess_nodes(make_nodes(), query_str=q)) for q in queries]

    async def main() -> list[list[NodeWithScore]]:
        return await asyncio.gather(*(pp.apostprocess_nodes(make_nodes(), query_str=q) for q in queries * 2))

    assert [view(c) for c in asyncio.run(main())] == serial * 2


def test_query_engine_end_to_end(core: Any) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.node_parser import SentenceSplitter

    docs = [Document(text=t, id_=f"doc-{i}", metadata={"file_name": f"doc{i}.txt"}) for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex.from_documents(
        docs, embed_model=MockEmbedding(embed_dim=8), transformations=[SentenceSplitter(chunk_size=512)]
    )
    pp = GemFilterNodePostprocessor(compressor=core, top_k=24, granularity="token")
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=4, node_postprocessors=[pp])
    response = engine.query(QUERY)
    assert response.source_nodes
    assert fills_kept([n.node.metadata["gemfilter"]["kept_tokens"] for n in response.source_nodes], 24, core)
    prompt = str(response)  # MockLLM without max_tokens echoes its prompt
    for n in response.source_nodes:
        assert n.node.get_content().strip() in prompt
    assert "kept_tokens" not in prompt, "statistics leaked into the LLM prompt"
    aresponse = asyncio.run(engine.aquery(QUERY))
    assert [n.node.get_content() for n in aresponse.source_nodes] == [
        n.node.get_content() for n in response.source_nodes
    ]


def _record_scores(core: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = core.compress

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("document_scores"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "compress", spy)
    return seen


def test_node_scores_share_out_the_budget(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_scores(core, monkeypatch)
    nodes = make_nodes()
    out = GemFilterNodePostprocessor(compressor=core, top_k=30).postprocess_nodes(nodes, query_str=QUERY)
    assert seen == [[n.score for n in nodes]]
    assert sum(n.node.metadata["gemfilter"]["kept_tokens"] for n in out) <= 30


def test_node_scores_ignored_when_off_or_missing(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_scores(core, monkeypatch)
    GemFilterNodePostprocessor(compressor=core, top_k=30, use_node_scores=False).postprocess_nodes(
        make_nodes(), query_str=QUERY
    )
    nodes = make_nodes()
    nodes[1].score = None
    GemFilterNodePostprocessor(compressor=core, top_k=30).postprocess_nodes(nodes, query_str=QUERY)
    assert seen == [None, None]


def test_embeddings_field_gives_the_compressor_an_embedding_model(core: Any) -> None:
    from llama_index.core.embeddings import MockEmbedding

    assert GemFilterNodePostprocessor(compressor=core).compressor.embedder is core.embedder  # "auto" keeps it
    with_emb = GemFilterNodePostprocessor(compressor=core, embeddings=MockEmbedding(embed_dim=8)).compressor
    assert with_emb.embedder is not None and with_emb.model is core.model
    assert GemFilterNodePostprocessor(compressor=with_emb, embeddings=None).compressor.embedder is None
