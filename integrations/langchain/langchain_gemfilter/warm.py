"""``GemFilterCacheWarmer``: fill a compressor's chunk cache while documents are indexed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import BaseDocumentTransformer, Document
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from gemfilter_rag import GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.adapting import cache_to_warm, warm_chunks


class GemFilterCacheWarmer(BaseDocumentTransformer, BaseModel):
    """A document transformer that encodes each document into the ``ChunkCache`` of a ``GemFilterCompressor``
    (``compressor.warm``) and returns the documents unchanged: put it in the indexing pipeline, after the
    splitter and before the vector store, so that a query later runs only its own tokens.

    The text warmed is each document's ``page_content``, as ``GemFilterDocumentCompressor`` passes it to
    ``compress`` at query time.

    Args:
        compressor: a ``GemFilterCompressor`` built with ``cache=ChunkCache(...)``, a ``RemoteGemFilterCompressor``
            (the service's cache: ``gemfilter serve --cache-mib N``), or the
            ``GemFilterDocumentCompressor`` that will compress these documents (its compressor is used).
        **data: the pydantic fields below.

    Example::

        core = GemFilterCompressor.from_pretrained(cache=ChunkCache(path="chunks.sqlite"))
        chunks = GemFilterCacheWarmer(compressor=core).transform_documents(splitter.split_documents(docs))
        vectorstore.add_documents(chunks)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    batch_size: int = Field(default=8, gt=0, description="Documents encoded per filter pass.")

    _compressor: GemFilterCompressor | RemoteGemFilterCompressor = PrivateAttr()

    def __init__(self, compressor: Any, **data: Any) -> None:
        super().__init__(**data)
        self._compressor = cache_to_warm(compressor, "GemFilterDocumentCompressor")

    @property
    def compressor(self) -> GemFilterCompressor | RemoteGemFilterCompressor:
        """The compressor whose cache is filled (a local one, or a client of the service whose cache it is)."""
        return self._compressor

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        """Encode every document not cached yet; return the documents as they came."""
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise TypeError(f"documents[{i}]: expected a langchain Document, got {type(doc).__name__}.")
        if docs:
            warm_chunks(self._compressor, [d.page_content for d in docs], self.batch_size)
        return docs

    async def atransform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        """``transform_documents`` in a worker thread, so the event loop never blocks."""
        return await asyncio.to_thread(self.transform_documents, documents, **kwargs)
