"""``GemFilterCacheWarmer``: fill a compressor's chunk cache while nodes are ingested."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent

from gemfilter_rag import GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.adapting import cache_to_warm, warm_chunks


class GemFilterCacheWarmer(TransformComponent):
    """An ingestion transformation that encodes each node into the ``ChunkCache`` of a ``GemFilterCompressor``
    (``compressor.warm``) and returns the nodes unchanged: put it in an ``IngestionPipeline`` after the
    splitter, so that a query later runs only its own tokens.

    The text warmed is each node's content without metadata (``MetadataMode.NONE``), as
    ``GemFilterNodePostprocessor`` passes it to ``compress`` at query time.

    Args:
        compressor: a ``GemFilterCompressor`` built with ``cache=ChunkCache(...)``, a ``RemoteGemFilterCompressor``
            (the service's cache: ``gemfilter serve --cache-mib N``), or the
            ``GemFilterNodePostprocessor`` that will compress these nodes (its compressor is used).
        **data: the pydantic fields below.

    Example::

        core = GemFilterCompressor.from_pretrained(cache=ChunkCache(path="chunks.sqlite"))
        pipeline = IngestionPipeline(transformations=[SentenceSplitter(), GemFilterCacheWarmer(compressor=core)])
    """

    batch_size: int = Field(default=8, gt=0, description="Nodes encoded per filter pass.")

    _compressor: GemFilterCompressor | RemoteGemFilterCompressor = PrivateAttr()

    def __init__(self, compressor: Any, **data: Any) -> None:
        super().__init__(**data)
        self._compressor = cache_to_warm(compressor, "GemFilterNodePostprocessor")

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this component under."""
        return "GemFilterCacheWarmer"

    @property
    def compressor(self) -> GemFilterCompressor | RemoteGemFilterCompressor:
        """The compressor whose cache is filled (a local one, or a client of the service whose cache it is)."""
        return self._compressor

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """Encode every node not cached yet; return the nodes as they came."""
        items = list(nodes)
        for i, node in enumerate(items):
            if not isinstance(node, BaseNode):
                raise TypeError(f"nodes[{i}]: expected a LlamaIndex node, got {type(node).__name__}.")
        if items:
            texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in items]
            warm_chunks(self._compressor, texts, self.batch_size)
        return items

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        """``__call__`` in a worker thread, so the event loop never blocks."""
        return await asyncio.to_thread(self.__call__, nodes, **kwargs)
