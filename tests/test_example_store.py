"""The examples' persisted vector store (examples/_store.py): built once, reused from disk, rebuilt when stale.

Fake deterministic embeddings that count their calls; Qdrant's local mode in ``tmp_path``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("qdrant_client", reason="the examples' store needs the 'examples' extra")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import _store  # noqa: E402

MODEL = "fake-embedding-v1"


class CountingEmbeddings:
    """LangChain-style embeddings: a deterministic vector per text, and a count of the texts embedded."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.texts = 0
        self.fail_after = fail_after

    def _vector(self, text: str) -> list[float]:
        words = set(text.lower().split())
        return [float(w in words) for w in ("cats", "dogs", "ships", "rain")] + [0.1]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.fail_after is not None and self.texts + len(texts) > self.fail_after:
            raise RuntimeError("simulated crash while embedding")
        self.texts += len(texts)
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.texts += 1
        return self._vector(text)


def _docs(extra: str = "") -> list[Any]:
    from langchain_core.documents import Document

    texts = ["cats purr", "dogs bark", "ships sail", "rain falls" + extra]
    return [Document(page_content=t, metadata={"n": i}, id=f"doc#{i}") for i, t in enumerate(texts)]


def _open(path: Path, emb: CountingEmbeddings, docs: list[Any] | None = None, model: str = MODEL) -> Any:
    store, info = _store.langchain_qdrant_store(docs or _docs(), emb, path, model, batch_size=2)
    return store, info


def test_builds_once_then_reuses_from_disk_without_embedding(tmp_path: Path) -> None:
    path = tmp_path / "store"
    first = CountingEmbeddings()
    store, info = _open(path, first)
    assert info.built and info.points == 4 and first.texts >= 4
    assert json.loads((path / _store.MANIFEST).read_text())["points"] == 4
    store.client.close()

    again = CountingEmbeddings()
    store, info = _open(path, again)
    assert not info.built and info.points == 4
    assert again.texts == 0  # opening embedded nothing
    (doc, score), *_ = store.similarity_search_with_score("dogs", k=2)
    assert again.texts == 1  # the query only
    assert doc.page_content == "dogs bark" and doc.metadata["id"] == "doc#1" and doc.metadata["n"] == 1
    assert score == pytest.approx(1.0)  # the query and the chunk have one vector: cosine 1
    store.client.close()


def test_rebuilds_when_the_corpus_or_the_model_changes(tmp_path: Path) -> None:
    path = tmp_path / "store"
    _open(path, CountingEmbeddings())[0].client.close()

    changed = CountingEmbeddings()
    store, info = _open(path, changed, _docs(extra=" hard"))
    assert info.built and "corpus_sha256" in info.reason and changed.texts >= 4
    assert any(d.page_content == "rain falls hard" for d in store.similarity_search("rain", k=1))
    store.client.close()

    other_model = CountingEmbeddings()
    store, info = _open(path, other_model, _docs(extra=" hard"), model="fake-embedding-v2")
    assert info.built and "embedding_model" in info.reason and other_model.texts >= 4
    store.client.close()


def test_a_store_without_manifest_is_rebuilt_never_used(tmp_path: Path) -> None:
    path = tmp_path / "store"
    _open(path, CountingEmbeddings())[0].client.close()
    (path / _store.MANIFEST).unlink()  # as if the run had died before finishing

    emb = CountingEmbeddings()
    store, info = _open(path, emb)
    assert info.built and "unfinished" in info.reason and emb.texts >= 4 and info.points == 4
    store.client.close()


def test_a_build_that_dies_midway_leaves_no_manifest_and_the_next_run_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _open(path, CountingEmbeddings(fail_after=3))  # the probe and the first batch of 2, then the crash
    assert (path / "qdrant").is_dir() and not (path / _store.MANIFEST).exists()

    emb = CountingEmbeddings()
    store, info = _open(path, emb)
    assert info.built and "unfinished" in info.reason and info.points == 4
    store.client.close()


def test_a_collection_that_disagrees_with_its_manifest_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "store"
    _open(path, CountingEmbeddings())[0].client.close()
    manifest = json.loads((path / _store.MANIFEST).read_text())
    (path / _store.MANIFEST).write_text(json.dumps({**manifest, "points": 5}))  # one point lost

    emb = CountingEmbeddings()
    store, info = _open(path, emb)
    assert info.built and "does not match" in info.reason and emb.texts >= 4
    assert json.loads((path / _store.MANIFEST).read_text())["points"] == 4
    store.client.close()


def test_documents_without_ids_are_refused(tmp_path: Path) -> None:
    from langchain_core.documents import Document

    with pytest.raises(ValueError, match="needs an id"):
        _store.langchain_qdrant_store([Document(page_content="x")], CountingEmbeddings(), tmp_path / "s", MODEL)


def test_llamaindex_index_is_reused_from_disk_without_embedding(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.schema import TextNode

    class CountingMock(MockEmbedding):
        texts: int = 0

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            self.texts += len(texts)
            return [[1.0, float(len(t)), 0.0, 0.0] for t in texts]

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embeddings([text])[0]

    nodes = [TextNode(text=t, id_=_store.point_id(f"n#{i}")) for i, t in enumerate(["alpha", "beta", "gamma"])]
    first = CountingMock(embed_dim=4)
    index, info = _store.llamaindex_qdrant_index(nodes, first, tmp_path / "li", MODEL)
    assert info.built and info.points == 3 and first.texts == 3
    index.vector_store.client.close()

    again = CountingMock(embed_dim=4)
    index, info = _store.llamaindex_qdrant_index(nodes, again, tmp_path / "li", MODEL)
    assert not info.built and again.texts == 0
    found = index.as_retriever(similarity_top_k=3).retrieve("alpha")
    assert sorted(n.node.get_content() for n in found) == ["alpha", "beta", "gamma"]
    index.vector_store.client.close()
