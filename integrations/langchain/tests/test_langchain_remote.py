"""GemFilterDocumentCompressor(endpoint=...) against a real `gemfilter serve`: the local adapter's output."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_gemfilter import GemFilterDocumentCompressor

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


def make_docs() -> list[Document]:
    return [
        Document(page_content=t, metadata={"source": f"doc{i}.txt", "relevance_score": 0.9 - 0.2 * i}, id=f"id-{i}")
        for i, t in enumerate(TEXTS)
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
        {"top_k": 24, "score_key": "relevance_score"},
        {"top_k": 60, "granularity": "document", "options": {"pool": "avg"}},
        {"top_k": 10_000},
    ],
)
def test_remote_documents_equal_local_ones(service: LiveServer, core: Any, fields: dict[str, Any]) -> None:
    local = GemFilterDocumentCompressor(compressor=core, **fields)
    remote = GemFilterDocumentCompressor(endpoint=service.url, **fields)
    docs = make_docs()
    expected = local.compress_documents(docs, QUERY)
    assert expected, "nothing kept: the comparison would be empty"
    assert remote.compress_documents(docs, QUERY) == expected  # ids, metadata, spans, stats
    assert isinstance(remote.compressor, RemoteGemFilterCompressor)
    assert remote.last_result is not None and local.last_result is not None
    assert without_timings(remote.last_result) == without_timings(local.last_result)
    assert docs == make_docs(), "input documents were mutated"


def test_async_path_uses_the_async_client(service: LiveServer, core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = GemFilterDocumentCompressor(compressor=core, top_k=30).compress_documents(make_docs(), QUERY)

    def sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the remote async path must use the async client, not the sync path in a thread")

    monkeypatch.setattr(GemFilterDocumentCompressor, "compress_with_result", sync)
    monkeypatch.setattr(RemoteGemFilterCompressor, "compress", sync)
    remote = GemFilterDocumentCompressor(endpoint=service.url, top_k=30)

    async def main() -> Any:
        return await asyncio.gather(*(remote.acompress_documents(make_docs(), QUERY) for _ in range(4)))

    assert asyncio.run(main()) == [expected] * 4


def test_contextual_compression_retriever_over_the_service(service: LiveServer, core: Any) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    class Fixed(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return make_docs()

    def retriever(compressor: GemFilterDocumentCompressor) -> ContextualCompressionRetriever:
        return ContextualCompressionRetriever(base_compressor=compressor, base_retriever=Fixed())

    remote = retriever(GemFilterDocumentCompressor(endpoint=service.url, top_k=24)).invoke(QUERY)
    local = retriever(GemFilterDocumentCompressor(compressor=core, top_k=24)).invoke(QUERY)
    assert remote == local and remote


def test_endpoint_arguments() -> None:
    with pytest.raises(ValueError, match="^model: .*endpoint"):
        GemFilterDocumentCompressor(model="/some/model", endpoint="http://127.0.0.1:1")
    closed = GemFilterDocumentCompressor(endpoint="http://127.0.0.1:1")
    assert closed.compress_documents([], QUERY) == []  # nothing to send: no request
    with pytest.raises(ValueError, match="query"):
        closed.compress_documents(make_docs(), " ")  # checked before any request


def test_endpoint_with_a_compressor_is_an_error(core: Any) -> None:
    with pytest.raises(ValueError, match="^endpoint: "):
        GemFilterDocumentCompressor(compressor=core, endpoint="http://127.0.0.1:1")
