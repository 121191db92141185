"""GemFilterDocumentCompressor on tiny random models: provenance, budget, async, LangChain pipelines."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_gemfilter import GemFilterDocumentCompressor
from tinymodels import fills_kept

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour. Nobody slept that night.",
    "Bananas ripen faster next to apples. Store them in a paper bag. Eat them within a week.",
    "The secret password for the vault is marmalade. The night guard said so. He was very tired.",
    "A quiet river runs through the valley. The old mill still stands. Children play by the water.",
]
QUERY = "What is the secret password for the vault?"


def make_docs(texts: list[str] = TEXTS) -> list[Document]:
    return [
        Document(page_content=t, metadata={"source": f"doc{i}.txt", "tags": ["a", "b"]}, id=f"id-{i}")
        for i, t in enumerate(texts)
    ]


def test_exports() -> None:
    import langchain_gemfilter

    for name in langchain_gemfilter.__all__:
        assert getattr(langchain_gemfilter, name) is not None


def test_fields_have_descriptions() -> None:
    for name, field in GemFilterDocumentCompressor.model_fields.items():
        assert field.description, f"field {name} has no description"


def test_provenance_kept(core: Any) -> None:
    docs = make_docs()
    before = [d.model_copy(deep=True) for d in docs]
    lc = GemFilterDocumentCompressor(compressor=core, top_k=40, granularity="token")
    out = lc.compress_documents(docs, QUERY)
    assert docs == before, "input documents were mutated"
    indices = [d.metadata["gemfilter"]["index"] for d in out]
    assert indices == sorted(indices), "output is not in input order"
    for d in out:
        i = d.metadata["gemfilter"]["index"]
        src = docs[i]
        assert d.id == src.id
        assert {k: v for k, v in d.metadata.items() if k != "gemfilter"} == src.metadata
        stats = d.metadata["gemfilter"]
        assert d.page_content == "".join(src.page_content[a:b] for a, b in stats["spans"])
        assert 0 < stats["kept_tokens"] <= stats["original_tokens"]
        assert stats["ratio"] == pytest.approx(stats["original_tokens"] / stats["kept_tokens"])
        assert 0.0 <= stats["score_share"] <= 1.0
        assert stats["filter_layer"] == core.filter_layer


def test_budget_is_global(core: Any) -> None:
    docs = make_docs()
    lc = GemFilterDocumentCompressor(compressor=core, top_k=30, granularity="token")
    out, result = lc.compress_with_result(docs, QUERY)
    assert result is not None and result.original_tokens > 30
    assert fills_kept([d.metadata["gemfilter"]["kept_tokens"] for d in out], 30, core)
    assert fills_kept([r.kept_tokens for r in result.documents], 30, core)


def test_every_document_accounted_for(core: Any) -> None:
    docs = make_docs()
    longest = max(len(core.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    lc = GemFilterDocumentCompressor(compressor=core, top_k=longest, granularity="document")  # room for one
    out, result = lc.compress_with_result(docs, QUERY)
    assert result is not None and lc.last_result is result
    assert [r.index for r in result.documents] == list(range(len(docs)))
    kept = [r.index for r in result.documents if r.kept]
    assert len(kept) == 1, "the budget has room for exactly one whole document"
    assert [d.metadata["gemfilter"]["index"] for d in out] == kept
    assert [d.id for d in out] == [docs[i].id for i in kept]


def test_identical_texts_keep_their_own_provenance(core: Any) -> None:
    text = TEXTS[2]
    docs = [Document(page_content=text, metadata={"n": n}, id=f"dup-{n}") for n in range(3)]
    out = GemFilterDocumentCompressor(compressor=core, top_k=10_000).compress_documents(docs, QUERY)
    assert [(d.id, d.metadata["n"], d.page_content) for d in out] == [(f"dup-{n}", n, text) for n in range(3)]


def test_default_budget_comes_from_the_compressor(core: Any) -> None:
    docs = make_docs()
    small = type(core)(core.model, core.tokenizer, core.config.with_options(top_k=12, granularity="token"))
    out = GemFilterDocumentCompressor(compressor=small).compress_documents(docs, QUERY)
    assert fills_kept([d.metadata["gemfilter"]["kept_tokens"] for d in out], 12, core)


def test_options_share_the_model(core: Any) -> None:
    lc = GemFilterDocumentCompressor(compressor=core, granularity="document", options={"pool": "avg"})
    assert lc.compressor.model is core.model and lc.compressor.tokenizer is core.tokenizer
    assert lc.compressor.config.granularity == "document" and lc.compressor.config.scoring.pool == "avg"
    assert core.config.granularity != "document" or core.config.scoring.pool != "avg"


def test_empty_documents_do_not_load_a_model() -> None:
    lc = GemFilterDocumentCompressor(model="/nonexistent/model.gguf")
    assert lc.compress_documents([], QUERY) == []
    assert lc.compress_with_result([], QUERY) == ([], None)
    assert not lc._holder.loaded


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_an_error(core: Any, query: str) -> None:
    with pytest.raises(ValueError, match="query"):
        GemFilterDocumentCompressor(compressor=core).compress_documents(make_docs(), query)


def test_bad_arguments(core: Any) -> None:
    with pytest.raises(TypeError, match="compressor"):
        GemFilterDocumentCompressor(compressor="not a compressor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        GemFilterDocumentCompressor(compressor=core, model="some/model")
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        GemFilterDocumentCompressor(compressor=core).compress_documents(["text"], QUERY)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        GemFilterDocumentCompressor(top_k=0)


def test_async_does_not_block_the_event_loop(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lc = GemFilterDocumentCompressor(compressor=core, top_k=20, granularity="token")
    released = threading.Event()
    real = lc.compressor.compress

    def gated(*args: Any, **kwargs: Any) -> Any:
        assert released.wait(5), "the event loop was blocked while compressing"
        return real(*args, **kwargs)

    monkeypatch.setattr(lc.compressor, "compress", gated)

    async def main() -> list[Document]:
        task = asyncio.create_task(lc.acompress_documents(make_docs(), QUERY))
        await asyncio.sleep(0.05)  # runs only if the loop is free
        released.set()
        return list(await task)

    out = asyncio.run(main())
    assert fills_kept([d.metadata["gemfilter"]["kept_tokens"] for d in out], 20, core)


def test_concurrent_calls_match_serial(core: Any) -> None:
    lc = GemFilterDocumentCompressor(compressor=core, top_k=25, granularity="token")
    queries = [QUERY, "Where does the river run?", "How many ships were counted?", "When do bananas ripen?"]
    serial = [lc.compress_documents(make_docs(), q) for q in queries]

    async def main() -> list[Any]:
        return await asyncio.gather(*(lc.acompress_documents(make_docs(), q) for q in queries * 2))

    concurrent = asyncio.run(main())
    assert [list(c) for c in concurrent] == serial * 2


def _vector_retriever(k: int) -> Any:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(make_docs())
    return store.as_retriever(search_kwargs={"k": k})


def test_contextual_compression_retriever(core: Any) -> None:
    from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever

    lc = GemFilterDocumentCompressor(compressor=core, top_k=24, granularity="token")
    retriever = ContextualCompressionRetriever(base_compressor=lc, base_retriever=_vector_retriever(3))
    out = retriever.invoke(QUERY)
    assert out and fills_kept([d.metadata["gemfilter"]["kept_tokens"] for d in out], 24, core)
    by_id = {d.id: d for d in make_docs()}
    for d in out:
        original = by_id[d.id].page_content
        assert d.page_content == "".join(original[a:b] for a, b in d.metadata["gemfilter"]["spans"])
        assert d.metadata["source"] == by_id[d.id].metadata["source"]
    assert [d.page_content for d in asyncio.run(retriever.ainvoke(QUERY))] == [d.page_content for d in out]


def test_document_compressor_pipeline(core: Any) -> None:
    from langchain_classic.retrievers.document_compressors.base import DocumentCompressorPipeline
    from langchain_text_splitters import CharacterTextSplitter

    splitter = CharacterTextSplitter(separator=". ", chunk_size=40, chunk_overlap=0)
    lc = GemFilterDocumentCompressor(compressor=core, top_k=30, granularity="token")
    pipeline = DocumentCompressorPipeline(transformers=[splitter, lc])
    out = pipeline.compress_documents(make_docs(), QUERY)
    assert out and fills_kept([d.metadata["gemfilter"]["kept_tokens"] for d in out], 30, core)
    assert lc.last_result is not None and len(lc.last_result.documents) > len(TEXTS)  # the splitter's pieces
    assert all(d.metadata["source"].startswith("doc") for d in out)
    assert [d.page_content for d in asyncio.run(pipeline.acompress_documents(make_docs(), QUERY))] == [
        d.page_content for d in out
    ]


def _record_scores(core: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    real = core.compress

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("document_scores"))
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "compress", spy)
    return seen


def test_retriever_scores_from_metadata_share_out_the_budget(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_scores(core, monkeypatch)
    docs = make_docs()
    for i, d in enumerate(docs):
        d.metadata["relevance_score"] = 0.9 - 0.1 * i
    comp = GemFilterDocumentCompressor(compressor=core, top_k=30, score_key="relevance_score")
    out = comp.compress_documents(docs, QUERY)
    assert seen == [[0.9 - 0.1 * i for i in range(len(docs))]]
    assert sum(d.metadata["gemfilter"]["kept_tokens"] for d in out) <= 30
    assert all("relevance_score" in d.metadata for d in out)


def test_retriever_scores_ignored_without_key_or_when_missing(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_scores(core, monkeypatch)
    GemFilterDocumentCompressor(compressor=core, top_k=30).compress_documents(make_docs(), QUERY)
    GemFilterDocumentCompressor(compressor=core, top_k=30, score_key="relevance_score").compress_documents(
        make_docs(), QUERY
    )
    assert seen == [None, None]


def test_auto_score_key_finds_reranker_scores(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_scores(core, monkeypatch)
    docs = make_docs()
    for i, d in enumerate(docs):
        d.metadata["relevance_score"] = 1.0 - 0.01 * i  # as CohereRerank / FlashrankRerank write it
    GemFilterDocumentCompressor(compressor=core, top_k=30).compress_documents(docs, QUERY)
    GemFilterDocumentCompressor(compressor=core, top_k=30, score_key=None).compress_documents(docs, QUERY)
    for d in docs:
        d.metadata["score"] = d.metadata.pop("relevance_score")  # ambiguous (may be a distance): not guessed
    GemFilterDocumentCompressor(compressor=core, top_k=30).compress_documents(docs, QUERY)
    GemFilterDocumentCompressor(compressor=core, top_k=30, score_key="score").compress_documents(docs, QUERY)
    expected = [1.0 - 0.01 * i for i in range(len(docs))]
    assert seen == [expected, None, None, expected]


def test_auto_score_key_reads_embeddings_filter_state_in_a_pipeline(core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In DocumentCompressorPipeline([EmbeddingsFilter, GemFilter]) the filter's similarities become the scores."""
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline, EmbeddingsFilter
    from langchain_core.embeddings import DeterministicFakeEmbedding

    seen = _record_scores(core, monkeypatch)
    import numpy as np

    def cosine(a: Any, b: Any) -> Any:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T

    filt = EmbeddingsFilter(
        embeddings=DeterministicFakeEmbedding(size=16), similarity_fn=cosine, k=None, similarity_threshold=-1.0
    )
    pipeline = DocumentCompressorPipeline(transformers=[filt, GemFilterDocumentCompressor(compressor=core, top_k=30)])
    out = pipeline.compress_documents(make_docs(), QUERY)
    assert len(seen) == 1 and seen[0] is not None and len(seen[0]) == len(make_docs())
    assert all(-1.0 <= s <= 1.0 for s in seen[0])
    assert sum(d.metadata["gemfilter"]["kept_tokens"] for d in out) <= 30


def test_embeddings_field_gives_the_compressor_an_embedding_model(core: Any) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    fake = DeterministicFakeEmbedding(size=8)
    assert GemFilterDocumentCompressor(compressor=core).compressor.embedder is core.embedder  # "auto" keeps it
    with_emb = GemFilterDocumentCompressor(compressor=core, embeddings=fake).compressor
    assert with_emb.embedder is not None and with_emb.model is core.model
    assert GemFilterDocumentCompressor(compressor=with_emb, embeddings=None).compressor.embedder is None
