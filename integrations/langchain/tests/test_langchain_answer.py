"""GemFilterAnswer: the Runnable answers like the core generate, streams, and batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.runnables import RunnableLambda
from langchain_gemfilter.answer import GemFilterAnswer

DOCS = [
    Document(page_content="The lighthouse keeper counted forty ships before the storm arrived at the harbour."),
    Document(page_content="The secret password for the vault is marmalade, said the night guard."),
    Document(page_content="Bananas ripen faster when they are stored next to apples in a paper bag."),
]
QUESTION = "What is the secret password for the vault?"


def _core_text(core: Any, docs: list[Document], question: str, **kwargs: Any) -> str:
    return str(core.generate([d.page_content for d in docs], question, **kwargs).text)


def test_invoke_equals_core_generate(core: Any) -> None:
    answer = GemFilterAnswer(core, top_k=12, max_new_tokens=6)
    out = answer.invoke({"documents": DOCS, "question": QUESTION})
    assert isinstance(out, str)
    assert out == _core_text(core, DOCS, QUESTION, top_k=12, max_new_tokens=6)
    # plain strings and the "query" key work too
    texts = [d.page_content for d in DOCS]
    assert answer.invoke({"documents": texts, "query": QUESTION}) == out


def test_stream_yields_chunks_of_the_answer(core: Any) -> None:
    answer = GemFilterAnswer(core, top_k=12, max_new_tokens=8)
    chunks = list(answer.stream({"documents": DOCS, "question": QUESTION}))
    assert len(chunks) >= 2
    assert "".join(chunks) == answer.invoke({"documents": DOCS, "question": QUESTION})
    achunks = asyncio.run(_collect(answer.astream({"documents": DOCS, "question": QUESTION})))
    assert achunks == chunks


async def _collect(stream: Any) -> list[str]:
    return [c async for c in stream]


def test_batch_equals_invoke_and_works_in_a_chain(core: Any) -> None:
    answer = GemFilterAnswer(core, top_k=10, max_new_tokens=5)
    inputs = [
        {"documents": DOCS, "question": QUESTION},
        {"documents": DOCS[:1], "question": "How many ships did the keeper count?"},
    ]
    batched = answer.batch(inputs)
    assert batched == [answer.invoke(x) for x in inputs]
    assert asyncio.run(answer.abatch(inputs)) == batched
    retriever = RunnableLambda(lambda q: DOCS)
    chain = {"documents": retriever, "question": RunnableLambda(lambda q: q)} | answer
    assert chain.invoke(QUESTION) == batched[0]


def test_bad_input_names_the_field(core: Any) -> None:
    answer = GemFilterAnswer(core)
    with pytest.raises(TypeError, match="question"):
        answer.invoke({"documents": DOCS})
    with pytest.raises(TypeError, match="documents"):
        answer.invoke({"documents": "one text", "question": QUESTION})
    with pytest.raises(TypeError, match="compressor"):
        GemFilterAnswer(compressor="not a compressor")  # type: ignore[arg-type]
