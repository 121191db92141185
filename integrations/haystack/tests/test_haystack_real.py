"""GemFilterDocumentCompressor on the real default model (SmolLM2-135M-Instruct) in a Haystack RAG pipeline."""

from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.components.builders import PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack_integrations.components.rankers.gemfilter import GemFilterDocumentCompressor

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
TEMPLATE = "Context:\n{% for doc in documents %}{{ doc.content }}\n{% endfor %}Question: {{ query }}\nAnswer:"


def corpus() -> list[Document]:
    texts = [*FILLER[:2], FILLER[2] + " " + NEEDLE + " Investors ask about the market.", FILLER[3]]
    return [Document(content=t, meta={"source": f"essay{i}"}, id=f"e{i}") for i, t in enumerate(texts)]


def rag(compressor: GemFilterDocumentCompressor) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents(corpus())
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=4))
    pipe.add_component("compressor", compressor)
    pipe.add_component("prompt_builder", PromptBuilder(template=TEMPLATE, required_variables=["query"]))
    pipe.connect("retriever.documents", "compressor.documents")
    pipe.connect("compressor.documents", "prompt_builder.documents")
    return pipe


def test_default_model_keeps_the_needle_in_a_pipeline(real_core: Any) -> None:
    """The component as a user builds it (default model, loaded by the pipeline's warm-up) keeps the fact."""
    data = {"retriever": {"query": QUESTION}, "compressor": {"query": QUESTION}, "prompt_builder": {"query": QUESTION}}
    comp = GemFilterDocumentCompressor(top_k=32, device="cpu")
    out = rag(comp).run(data, include_outputs_from={"compressor"})
    kept, dropped = out["compressor"]["documents"], out["compressor"]["dropped"]
    assert len(kept) + len(dropped) == 4
    assert sum(d.meta["gemfilter"]["kept_tokens"] for d in kept) <= 32
    assert sum(d.meta["gemfilter"]["original_tokens"] for d in kept + dropped) > 100
    holder = [d for d in kept if "4417" in (d.content or "")]
    assert [d.id for d in holder] == ["e2"] and holder[0].meta["source"] == "essay2"
    assert "4417" in out["prompt_builder"]["prompt"]
    shared = rag(GemFilterDocumentCompressor(compressor=real_core, top_k=32)).run(
        data, include_outputs_from={"compressor"}
    )
    assert shared == out, "the default loaded by warm_up must be the library's default compressor"
