"""The rerank routes of ``gemfilter serve`` through the real clients that speak them, on 127.0.0.1:
Cohere's SDK (``ClientV2`` on ``/v2/rerank``, ``Client`` on ``/v1/rerank``), LlamaIndex's ``CohereRerank``
with ``base_url``, and LlamaIndex's ``TextEmbeddingInference`` on TEI's ``/rerank``. Relevance comes from
the same filter pass as ``/v1/compress`` (``gemfilter_rag.rerank``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tinymodels import TRAINING_TEXT, build_model, build_tokenizer

from gemfilter_rag import GemFilterCompressor
from gemfilter_rag.serve import ServeSettings
from gemfilter_rag.serve.testing import LiveServer, running_server

cohere = pytest.importorskip("cohere", reason="the rerank client tests need the cohere SDK (the dev extra)")

DOCS = [p.replace("\n", " ") for p in TRAINING_TEXT.split("\n\n")[:5]]
QUERY = "What does Cambridge tell you?"


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    comp = GemFilterCompressor(build_model("llama"), build_tokenizer(), filter_layer=1)
    with running_server(comp, ServeSettings(max_documents=8)) as server:
        yield server


def _v2(live: LiveServer, **body: Any) -> httpx.Response:
    return httpx.post(live.url + "/v2/rerank", json={"model": "gemfilter", "query": QUERY, **body}, timeout=60)


def _metrics(live: LiveServer) -> str:
    return httpx.get(live.url + "/metrics", timeout=10).text


def test_the_cohere_v2_client_reads_every_document_ranked_by_relevance(live: LiveServer) -> None:
    client = cohere.ClientV2(api_key="unused", base_url=live.url)
    res = client.rerank(model="gemfilter", query=QUERY, documents=DOCS)
    assert sorted(r.index for r in res.results) == list(range(len(DOCS)))  # every document, each once
    scores = [r.relevance_score for r in res.results]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    top = client.rerank(model="gemfilter", query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in top.results] == [r.index for r in res.results[:2]]
    raw = _v2(live, documents=DOCS).json()  # what the SDK parsed is what the route answered
    assert [r["index"] for r in raw["results"]] == [r.index for r in res.results]


def test_the_cohere_v1_client_takes_objects_and_gets_the_documents_back(live: LiveServer) -> None:
    client = cohere.Client(api_key="unused", base_url=live.url)
    res = client.rerank(
        model="gemfilter", query=QUERY, documents=[{"text": d} for d in DOCS], top_n=3, return_documents=True
    )
    assert len(res.results) == 3
    for r in res.results:
        assert r.document is not None and r.document.text == DOCS[r.index]
    v2 = cohere.ClientV2(api_key="unused", base_url=live.url).rerank(model="gemfilter", query=QUERY, documents=DOCS)
    assert [r.index for r in res.results] == [r.index for r in v2.results[:3]]  # one pass, one ranking


def test_llamaindex_cohere_rerank_with_base_url_reorders_the_nodes(live: LiveServer) -> None:
    pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"n{i}"), score=0.5) for i, d in enumerate(DOCS)]
    ranked = CohereRerank(api_key="unused", base_url=live.url, top_n=3).postprocess_nodes(nodes, query_str=QUERY)
    expected = [r["index"] for r in _v2(live, documents=DOCS, top_n=3).json()["results"]]
    assert [n.node.node_id for n in ranked] == [f"n{i}" for i in expected]
    assert [n.node.get_content() for n in ranked] == [DOCS[i] for i in expected]  # texts unchanged: no compression


def test_llamaindex_tei_rerank_speaks_the_tei_route(live: LiveServer) -> None:
    pytest.importorskip("llama_index.postprocessor.tei_rerank")
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"n{i}")) for i, d in enumerate(DOCS)]
    ranked = TextEmbeddingInference(base_url=live.url, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    tei = httpx.post(live.url + "/rerank", json={"query": QUERY, "texts": DOCS}, timeout=60).json()
    assert [t["index"] for t in tei] == sorted(
        range(len(DOCS)), key=lambda i: -next(x["score"] for x in tei if x["index"] == i)
    )
    assert [n.node.node_id for n in ranked] == [f"n{t['index']}" for t in tei[:2]]


def test_bad_requests_get_each_api_s_error_shape_and_are_counted_per_route(live: LiveServer) -> None:
    before = _metrics(live)
    empty = _v2(live, documents=[])
    zero = _v2(live, documents=DOCS, top_n=0)
    too_many = _v2(live, documents=DOCS * 2)  # 10 documents, the server takes 8
    assert empty.status_code == 422 and "documents" in empty.json()["message"]
    assert zero.status_code == 422 and "top_n" in zero.json()["message"]
    assert too_many.status_code == 413
    tei = httpx.post(live.url + "/rerank", json={"query": "", "texts": DOCS}, timeout=60)
    assert tei.status_code == 422 and "query" in tei.json()["error"]
    after = _metrics(live)
    assert after != before
    assert 'gemfilter_requests_total{route="/v2/rerank",status="422"}' in after
    assert 'gemfilter_requests_total{route="/rerank",status="422"}' in after
