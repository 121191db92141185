"""``GemFilterCacheWarmer``: fill a compressor's chunk cache while documents are indexed, as a Haystack component."""

import asyncio
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.core.errors import SerializationError

from gemfilter_rag import GemFilterCompressor, RemoteGemFilterCompressor
from gemfilter_rag.adapting import cache_to_warm, warm_chunks


@component
class GemFilterCacheWarmer:
    """
    Encodes each document into the chunk cache of a GemFilter compressor and passes the documents on unchanged.

    Put it in the indexing pipeline, after the splitter and before the `DocumentWriter`, so that a query later
    runs only its own tokens through the filter model. The text warmed is each document's `content`, as
    `GemFilterDocumentCompressor` passes it to `compress` at query time; documents without text (`content=None`)
    pass through without being encoded.

    Usage example:
    ```python
    from haystack import Pipeline
    from haystack.components.writers import DocumentWriter
    from haystack_integrations.components.rankers.gemfilter import GemFilterCacheWarmer

    indexing = Pipeline()
    # a service started with: gemfilter serve --cache-mib 512
    indexing.add_component("warmer", GemFilterCacheWarmer(endpoint="http://127.0.0.1:8000"))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("warmer.documents", "writer.documents")
    indexing.run({"warmer": {"documents": chunks}})
    ```
    """

    def __init__(
        self,
        compressor: Any = None,
        endpoint: str | None = None,
        batch_size: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        """
        Creates the component; a service's client is opened by `warm_up()` (a Pipeline calls it), not here.

        :param compressor: What holds the cache: a `GemFilterCompressor` built with `cache=ChunkCache(...)`, a
            `RemoteGemFilterCompressor`, or the `GemFilterDocumentCompressor` that will compress these documents
            (its compressor is used, loaded by `warm_up()`). A component built with it cannot be saved in a
            pipeline file (pass `endpoint` instead).
        :param endpoint: Base URL of a `gemfilter serve` service started with a cache (`--cache-mib N` and/or
            `--cache-file PATH`) whose cache to fill; give this or `compressor`.
        :param batch_size: Documents encoded per filter pass by a local compressor (a service takes its own size).
        :param timeout: Seconds to wait for the service's answer (with `endpoint`).
        :param max_retries: Retries when the service answers 429/503 (with `endpoint`).
        """
        if (compressor is None) == (endpoint is None):
            raise ValueError(
                "compressor/endpoint: give exactly one: a compressor with a chunk cache, or the URL of a "
                "gemfilter serve service started with --cache-mib N."
            )
        if endpoint is not None and (not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://"))):
            raise ValueError(f"endpoint: {endpoint!r} is not a URL; pass e.g. 'http://127.0.0.1:8000'.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size: {batch_size!r} is not a positive whole number; pass e.g. 8.")
        self.endpoint = endpoint
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self._given = compressor
        self._core: GemFilterCompressor | RemoteGemFilterCompressor | None = None
        if compressor is not None and getattr(compressor, "compressor", compressor) is not None:
            self._core = cache_to_warm(compressor, "GemFilterDocumentCompressor")  # refused now, not at run time

    @property
    def compressor(self) -> GemFilterCompressor | RemoteGemFilterCompressor | None:
        """The compressor whose cache is filled (a local one, or a service's client), or None before `warm_up()`."""
        return self._core

    def warm_up(self) -> None:
        """
        Opens the service's client, or loads the given `GemFilterDocumentCompressor`; does nothing when done.

        A Pipeline calls it before running; `run` calls it too.
        """
        if self._core is not None:
            return
        if self.endpoint is not None:
            self._core = RemoteGemFilterCompressor(self.endpoint, timeout=self.timeout, max_retries=self.max_retries)
            return
        self._given.warm_up()
        self._core = cache_to_warm(self._given, "GemFilterDocumentCompressor")

    @component.output_types(documents=list[Document], encoded=int)
    def run(self, documents: list[Document]) -> dict[str, Any]:
        """
        Encodes every document's text that the cache lacks.

        :param documents: The documents to index, as they will be retrieved later.
        :returns: A dictionary with:
            - `documents`: the same documents, unchanged and in order.
            - `encoded`: how many cache entries were encoded now (chunks, and once the prompt's prefix and separator).
        :raises TypeError: If `documents` is not a list of Haystack Documents.
        """
        docs = _checked(documents)
        self.warm_up()
        assert self._core is not None
        texts = [d.content for d in docs if d.content is not None]
        encoded = warm_chunks(self._core, texts, self.batch_size) if texts else 0
        return {"documents": docs, "encoded": encoded}

    @component.output_types(documents=list[Document], encoded=int)
    async def run_async(self, documents: list[Document]) -> dict[str, Any]:
        """
        Like `run`, in a worker thread, so the event loop never blocks.

        :param documents: The documents to index, as they will be retrieved later.
        :returns: The same dictionary as `run`.
        """
        return await asyncio.to_thread(self.run, documents)

    def close(self) -> None:
        """Closes the service's HTTP client (with `endpoint`)."""
        if self.endpoint is not None and isinstance(self._core, RemoteGemFilterCompressor):
            self._core.close()

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary (what `Pipeline.dumps` writes).

        :raises SerializationError: If the component was built with a `compressor` object, which a pipeline file
            cannot hold.
        """
        if self._given is not None:
            raise SerializationError(
                "compressor: this GemFilterCacheWarmer holds a compressor object, which a pipeline file cannot "
                "hold; build it with endpoint='http://...' (a gemfilter serve service with a cache) to save it."
            )
        return default_to_dict(
            self,
            endpoint=self.endpoint,
            batch_size=self.batch_size,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GemFilterCacheWarmer":
        """
        Deserializes the component from a dictionary made by `to_dict`.

        :param data: The dictionary.
        :returns: The component, not yet warmed up.
        """
        return default_from_dict(cls, data)


def _checked(documents: Any) -> list[Document]:
    if isinstance(documents, (str, Document)) or not hasattr(documents, "__iter__"):
        raise TypeError(
            f"documents: expected a list of haystack Documents, got {type(documents).__name__}; "
            "connect a splitter's `documents` output or pass documents=[Document(content=...)]."
        )
    docs = list(documents)
    for i, doc in enumerate(docs):
        if not isinstance(doc, Document):
            raise TypeError(f"documents[{i}]: expected a haystack Document, got {type(doc).__name__}.")
    return docs
