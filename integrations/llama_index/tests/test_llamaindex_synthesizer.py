"""GemFilterSynthesizer: answers from nodes like the core generate, streams, and fits a query engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.response.schema import Response, StreamingResponse
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.gemfilter.synthesizer import GemFilterSynthesizer

TEXTS = [
    "The lighthouse keeper counted forty ships before the storm arrived at the harbour.",
    "The secret password for the vault is marmalade, said the night guard.",
    "Bananas ripen faster when they are stored next to apples in a paper bag.",
]
QUESTION = "What is the secret password for the vault?"


def _nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10) for i, t in enumerate(TEXTS)]


class _FixedRetriever(BaseRetriever):
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return _nodes()


def test_synthesize_equals_core_generate(core: Any) -> None:
    synth = GemFilterSynthesizer(core, top_k=12, max_new_tokens=6)
    response = synth.synthesize(QUESTION, _nodes())
    assert isinstance(response, Response)
    expected = core.generate(TEXTS, QUESTION, top_k=12, max_new_tokens=6)
    assert response.response == expected.text
    assert [n.node.node_id for n in response.source_nodes] == ["n0", "n1", "n2"]
    assert synth.last_result.compression.kept_token_indices == expected.compression.kept_token_indices
    aresponse = asyncio.run(synth.asynthesize(QUESTION, _nodes()))
    assert aresponse.response == expected.text


def test_query_engine_and_streaming(core: Any) -> None:
    plain = GemFilterSynthesizer(core, top_k=12, max_new_tokens=8)
    engine = RetrieverQueryEngine(retriever=_FixedRetriever(), response_synthesizer=plain)
    answer = engine.query(QUESTION)
    assert str(answer) == plain.get_response(QUESTION, TEXTS)
    streaming = GemFilterSynthesizer(core, top_k=12, max_new_tokens=8, streaming=True)
    streamed = RetrieverQueryEngine(retriever=_FixedRetriever(), response_synthesizer=streaming).query(QUESTION)
    assert isinstance(streamed, StreamingResponse)
    chunks = list(streamed.response_gen)
    assert len(chunks) >= 2 and "".join(chunks) == str(answer)


def test_bad_arguments_are_named(core: Any) -> None:
    with pytest.raises(TypeError, match="compressor"):
        GemFilterSynthesizer("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_new_tokens"):
        GemFilterSynthesizer(core, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_k"):
        GemFilterSynthesizer(core, top_k=0)
