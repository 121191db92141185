"""GemFilterDocumentCompressor(endpoint=...) against a real `gemfilter serve` on 127.0.0.1: the local output."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from haystack import Document, Pipeline
from haystack.components.builders import PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack_integrations.components.rankers.gemfilter import GemFilterDocumentCompressor

from gemfilter_rag import RemoteGemFilterCompressor
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.testing import LiveServer, running_server

TEXTS = [
    "The lighthouse keeper counted forty ships. The storm arrived at the harbour. Nobody slept that night.",
    "Bananas ripen faster next to apples. Store them in a paper bag. Eat them within a week.",
    "The secret password for the vault is marmalade. The night guard said so. He was very tired.",
    "A quiet river runs through the valley. The old mill still stands. Children play by the water.",
]
QUERY = "What is the secret password for the vault?"


def make_docs() -> list[Document]:
    return [
        Document(content=t, meta={"source": f"doc{i}.txt"}, id=f"id-{i}", score=0.9 - 0.2 * i)
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
        {"top_k": 24, "use_document_scores": False},
        {"top_k": 60, "granularity": "document", "options": {"pool": "avg"}},
        {"top_k": 10_000},
    ],
)
def test_remote_documents_equal_local_ones(service: LiveServer, core: Any, fields: dict[str, Any]) -> None:
    local = GemFilterDocumentCompressor(compressor=core, **fields)
    remote = GemFilterDocumentCompressor(endpoint=service.url, **fields)
    expected = local.run(make_docs(), QUERY)
    assert expected["documents"], "nothing kept: the comparison would be empty"
    assert remote.run(make_docs(), QUERY) == expected  # ids, scores, meta, spans, statistics
    assert isinstance(remote.compressor, RemoteGemFilterCompressor)
    remote.close()
    assert remote.run(make_docs(), QUERY) == expected, "a closed client opens again on the next run"


def test_run_async_uses_the_async_client(service: LiveServer, core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = GemFilterDocumentCompressor(compressor=core, top_k=30).run(make_docs(), QUERY)

    def sync(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the remote async path must use the async client, not the sync one in a thread")

    remote = GemFilterDocumentCompressor(endpoint=service.url, top_k=30)
    monkeypatch.setattr(remote, "run", sync)
    monkeypatch.setattr(RemoteGemFilterCompressor, "compress", sync)

    async def main() -> list[Any]:
        outs = await asyncio.gather(*(remote.run_async(make_docs(), QUERY) for _ in range(4)))
        await remote.close_async()
        return list(outs)

    assert asyncio.run(main()) == [expected] * 4


def test_pipeline_over_the_service_saved_and_loaded(service: LiveServer, core: Any) -> None:
    store = InMemoryDocumentStore()
    store.write_documents(make_docs())
    template = "{% for doc in documents %}{{ doc.content }}\n{% endfor %}Q: {{ query }}"

    def pipeline(compressor: GemFilterDocumentCompressor) -> Pipeline:
        pipe = Pipeline()
        pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=3))
        pipe.add_component("compressor", compressor)
        pipe.add_component("prompt_builder", PromptBuilder(template=template, required_variables=["query"]))
        pipe.connect("retriever.documents", "compressor.documents")
        pipe.connect("compressor.documents", "prompt_builder.documents")
        return pipe

    data = {"retriever": {"query": QUERY}, "compressor": {"query": QUERY}, "prompt_builder": {"query": QUERY}}
    text = pipeline(GemFilterDocumentCompressor(endpoint=service.url, top_k=24)).dumps()
    assert service.url in text
    remote = Pipeline.loads(text).run(data, include_outputs_from={"compressor"})
    local = pipeline(GemFilterDocumentCompressor(compressor=core, top_k=24)).run(
        data, include_outputs_from={"compressor"}
    )
    assert remote == local and remote["compressor"]["documents"]


def test_endpoint_arguments() -> None:
    closed = GemFilterDocumentCompressor(endpoint="http://127.0.0.1:1", max_retries=0, timeout=2)
    assert closed.run([], QUERY) == {"documents": [], "dropped": []}  # nothing to send: no request
    with pytest.raises(ValueError, match="^query: "):
        closed.run(make_docs(), " ")  # checked before any request
    with pytest.raises(RuntimeError):
        closed.run(make_docs(), QUERY)  # nobody listens on port 1
    with pytest.raises(ValueError, match="^endpoint: "):
        GemFilterDocumentCompressor(endpoint="127.0.0.1:8000")  # refused when built, not at warm-up
