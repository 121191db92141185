"""GemFilterDocumentCompressor on the real default model (SmolLM2-135M-Instruct), in real LangChain pipelines."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_gemfilter import GemFilterDocumentCompressor

pytestmark = pytest.mark.real

FILLER = [
    "Cities grew around rivers because water carried goods cheaply. Markets formed where roads crossed. "
    "Over centuries the markets became towns, and the towns became the cities we know.",
    "A good essay starts with a question. The writer does not know the answer yet. Writing is how the writer "
    "finds it, and rewriting is how the reader is spared the search.",
    "Most startups fail because they make something nobody wants. The founders fall in love with an idea. "
    "They should fall in love with a problem instead, and talk to users early.",
    "Painters learn by copying the masters. Musicians learn scales for years. Programmers, oddly, are often "
    "expected to learn by reading manuals, although they too learn best by imitation.",
]
NEEDLE = "The vault at the Larkspur museum opens with the code 4417."
QUESTION = "What code opens the vault at the Larkspur museum?"


def corpus() -> list[Document]:
    texts = [*FILLER[:2], FILLER[2] + " " + NEEDLE + " Investors ask about the market.", FILLER[3]]
    return [Document(page_content=t, metadata={"source": f"essay{i}"}, id=f"e{i}") for i, t in enumerate(texts)]


def test_keeps_the_needle_within_the_budget(real_core: Any) -> None:
    docs = corpus()
    lc = GemFilterDocumentCompressor(compressor=real_core, top_k=32)
    out, result = lc.compress_with_result(docs, QUESTION)
    assert result is not None and result.original_tokens > 100
    assert sum(d.metadata["gemfilter"]["kept_tokens"] for d in out) <= 32
    holder = [d for d in out if "4417" in d.page_content]
    assert [d.id for d in holder] == ["e2"] and holder[0].metadata["source"] == "essay2"
    assert holder[0].metadata["gemfilter"]["score_share"] == max(r.score_share for r in result.documents)


def test_retriever_with_real_embeddings(real_core: Any) -> None:
    from langchain_classic.retrievers.contextual_compression import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors.base import DocumentCompressorPipeline
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from gemfilter_rag.embeddings import default_embedding_path

    store = InMemoryVectorStore(HuggingFaceEmbeddings(model_name=str(default_embedding_path())))
    store.add_documents(corpus())
    splitter = RecursiveCharacterTextSplitter(chunk_size=120, chunk_overlap=0)
    lc = GemFilterDocumentCompressor(compressor=real_core, top_k=40)
    retriever = ContextualCompressionRetriever(
        base_compressor=DocumentCompressorPipeline(transformers=[splitter, lc]),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}),
    )
    out = retriever.invoke(QUESTION)
    assert sum(d.metadata["gemfilter"]["kept_tokens"] for d in out) <= 40
    assert any("4417" in d.page_content and d.metadata["source"] == "essay2" for d in out)


def test_near_equal_reranker_scores_do_not_starve_a_chunk(real_core: Any) -> None:
    """relevance_score 1.00, 0.99, ..., 0.95 (a reranker's near-ties), found by itself: the fact survives."""
    extra = [
        "Gardens need patience. Seeds that go in the ground in spring give nothing for weeks, and then everything "
        "at once, which is how most hard projects feel from the inside.",
        "The printing press made books cheap, and cheap books made readers. Readers, in turn, made writers, and "
        "the cycle has not stopped since.",
    ]
    texts = [FILLER[0], FILLER[1], extra[0], FILLER[2] + " " + NEEDLE, FILLER[3], extra[1]]
    docs = [Document(page_content=t, metadata={"relevance_score": 1.0 - 0.01 * i}) for i, t in enumerate(texts)]
    out = GemFilterDocumentCompressor(compressor=real_core, top_k=64).compress_documents(docs, QUESTION)
    assert sum(d.metadata["gemfilter"]["kept_tokens"] for d in out) <= 64
    assert any("4417" in d.page_content for d in out), [d.page_content for d in out]
