"""GemFilterNodePostprocessor on the real default model, in a LlamaIndex query engine that also answers with it."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.postprocessor.gemfilter import GemFilterNodePostprocessor

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


def test_query_engine_with_real_models(real_core: Any) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.llms.huggingface import HuggingFaceLLM

    from gemfilter_rag.embeddings import default_embedding_path

    texts = [*FILLER[:2], FILLER[2] + " " + NEEDLE + " Investors ask about the market.", FILLER[3]]
    docs = [Document(text=t, id_=f"essay{i}", metadata={"source": f"essay{i}"}) for i, t in enumerate(texts)]
    embed = HuggingFaceEmbedding(model_name=str(default_embedding_path()))
    splitter = SentenceSplitter(chunk_size=512, tokenizer=real_core.tokenizer.encode)
    index = VectorStoreIndex.from_documents(docs, embed_model=embed, transformations=[splitter])
    llm = HuggingFaceLLM(
        model=real_core.model,  # the compressor's own weights: nothing is loaded twice
        tokenizer=real_core.tokenizer,
        max_new_tokens=16,
        is_chat_model=True,
        context_window=2048,
        generate_kwargs={"do_sample": False},
    )
    pp = GemFilterNodePostprocessor(compressor=real_core, top_k=32)
    engine = index.as_query_engine(llm=llm, similarity_top_k=4, node_postprocessors=[pp])
    response = engine.query(QUESTION)

    assert pp.last_result is not None and len(pp.last_result.documents) == 4
    kept = response.source_nodes
    assert sum(n.node.metadata["gemfilter"]["kept_tokens"] for n in kept) <= 32
    holder = [n for n in kept if "4417" in n.node.get_content()]
    assert len(holder) == 1 and holder[0].node.metadata["source"] == "essay2"
    assert holder[0].node.ref_doc_id == "essay2"
    assert holder[0].score is not None
    assert str(response).strip(), "the LLM gave no answer"


MORE_FILLER = [
    "Gardens need patience. Seeds that go in the ground in spring give nothing for weeks, and then everything "
    "at once, which is how most hard projects feel from the inside.",
    "The printing press made books cheap, and cheap books made readers. Readers, in turn, made writers, and "
    "the cycle has not stopped since.",
]


def test_near_equal_node_scores_do_not_starve_a_chunk(real_core: Any) -> None:
    """Node scores 1.00, 0.99, ..., 0.95 (a retriever's near-ties): the fact in the fourth chunk survives."""
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    chunks = [FILLER[0], FILLER[1], MORE_FILLER[0], FILLER[2] + " " + NEEDLE, FILLER[3], MORE_FILLER[1]]
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"c{i}"), score=1.0 - 0.01 * i) for i, t in enumerate(chunks)]
    pp = GemFilterNodePostprocessor(compressor=real_core, top_k=64)  # defaults: node scores used, prior "auto"
    kept = pp.postprocess_nodes(nodes, QueryBundle(QUESTION))
    assert sum(n.node.metadata["gemfilter"]["kept_tokens"] for n in kept) <= 64
    assert any("4417" in n.node.get_content() for n in kept), [n.node.get_content() for n in kept]
