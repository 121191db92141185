"""What the framework adapters (LangChain, LlamaIndex, Haystack) do alike: where their compressor comes
from, and the state they hold beside their fields.

A compressor is given (``compressor=``), loaded in this process (``model=``, or the embedded default),
or a service's client (``endpoint=``). These functions check that the adapter's fields do not
contradict each other and build the compressor; ``CompressorHolder`` opens it on first use (once,
under a lock), runs sync and async calls and keeps the last result. The adapters keep only their
framework's mapping of types in and out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .compressor import GemFilterCompressor
from .remote import RemoteGemFilterCompressor
from .result import CompressionResult

Compressor = GemFilterCompressor | RemoteGemFilterCompressor


def is_auto(embeddings: Any) -> bool:
    """Whether the adapter's ``embeddings`` field is left at ``"auto"``."""
    return isinstance(embeddings, str) and embeddings == "auto"


def config_options(options: Mapping[str, Any], granularity: str | None, filter_layer: int | None) -> dict[str, Any]:
    """The ``GemFilterConfig`` options of an adapter: its ``options`` with its own fields on top."""
    opts = dict(options)
    if granularity is not None:
        opts["granularity"] = granularity
    if filter_layer is not None:
        opts["filter_layer"] = filter_layer
    return opts


def adopt(
    compressor: Any, *, model: str | None, endpoint: str | None, embeddings: Any, options: dict[str, Any]
) -> GemFilterCompressor:
    """A given compressor with the adapter's options (and embeddings, unless ``"auto"``)."""
    if not isinstance(compressor, GemFilterCompressor):
        raise TypeError(
            f"compressor: expected a GemFilterCompressor, got {type(compressor).__name__}; "
            "build one with GemFilterCompressor.from_pretrained() or pass model= instead."
        )
    if model is not None or endpoint is not None:
        name, value = ("model", model) if model is not None else ("endpoint", endpoint)
        raise ValueError(f"{name}: {value!r} was given together with an existing compressor; pass one of them.")
    adopted = compressor.with_options(**options)
    return adopted if is_auto(embeddings) else adopted.with_embeddings(embeddings)


def cache_to_warm(compressor: Any, adapter: str) -> GemFilterCompressor | RemoteGemFilterCompressor:
    """What a cache warmer warms behind ``compressor`` (itself, or the compressor of the framework's ``adapter``
    over one): a local ``GemFilterCompressor`` with a chunk cache, or a ``RemoteGemFilterCompressor`` (the
    service's cache, ``POST /v1/warm``); a clear error for anything else."""
    core = getattr(compressor, "compressor", compressor)
    if isinstance(core, RemoteGemFilterCompressor):
        return core
    if not isinstance(core, GemFilterCompressor):
        raise TypeError(
            f"compressor: expected a GemFilterCompressor or RemoteGemFilterCompressor (or a {adapter} over one), "
            f"got {type(core).__name__}."
        )
    if core.cache is None:
        raise ValueError("compressor: has no chunk cache; build it with cache=ChunkCache(...).")
    return core


def warm_chunks(core: GemFilterCompressor | RemoteGemFilterCompressor, texts: Sequence[str], batch_size: int) -> int:
    """Warm ``core`` (from ``cache_to_warm``) with ``texts``: a local compressor ``batch_size`` chunks per filter
    pass, a service in requests of its own size; returns how many entries were encoded."""
    if isinstance(core, RemoteGemFilterCompressor):
        return core.warm(texts)
    return core.warm(texts, batch_size=batch_size)


def check_sources(model: str | None, endpoint: str | None, embeddings: Any) -> None:
    """Refuse what a service cannot honour: a local model or embedding model next to ``endpoint``."""
    if endpoint is None:
        return
    if model is not None:
        raise ValueError(
            f"model: {model!r} was given together with endpoint={endpoint!r}; the service's "
            "model compresses (gemfilter serve --model), so pass one of them."
        )
    if not is_auto(embeddings):
        raise ValueError(
            f"embeddings: an embedding model was given together with endpoint={endpoint!r}; the service "
            "embeds with its own model (from_pretrained's default), so leave embeddings='auto'."
        )


def open_compressor(
    *,
    model: str | None,
    endpoint: str | None,
    device: str | None,
    dtype: Any,
    embeddings: Any,
    options: dict[str, Any],
    timeout: float,
    max_retries: int,
) -> GemFilterCompressor | RemoteGemFilterCompressor:
    """The service's client with ``endpoint``, else the model loaded here (``from_pretrained``)."""
    if endpoint is not None:
        return RemoteGemFilterCompressor(endpoint, timeout=timeout, max_retries=max_retries, options=options)
    extra = {} if is_auto(embeddings) else {"embeddings": embeddings}
    return GemFilterCompressor.from_pretrained(model, device=device, dtype=dtype, **extra, **options)


class CompressorHolder:
    """An adapter's compressor and last result.

    Args:
        opener: builds the compressor on first use (``open_compressor`` with the adapter's fields).
        given: a compressor to use from the start (``adopt``), or None.
        remote: whether the compressor is a service's client (async calls then use its async client;
            a local model runs in a worker thread, so the event loop never blocks, loading included).
    """

    def __init__(self, opener: Callable[[], Compressor], given: Compressor | None = None, *, remote: bool) -> None:
        self._opener = opener
        self._compressor = given
        self._lock = threading.Lock()
        self.remote = remote
        self.last_result: CompressionResult | None = None
        """The result of the most recent call (with concurrent calls: whichever finished last)."""

    @property
    def loaded(self) -> bool:
        """Whether the compressor exists yet (given, or opened by a call)."""
        return self._compressor is not None

    @property
    def compressor(self) -> Compressor:
        """The compressor, opened on first access (once, whatever the number of threads asking)."""
        if self._compressor is None:
            with self._lock:
                if self._compressor is None:
                    self._compressor = self._opener()
        return self._compressor

    def compress(
        self, texts: Sequence[str], query: str, *, top_k: int | None, document_scores: Sequence[float] | None
    ) -> CompressionResult:
        """``compress`` on the compressor; the result is also kept as ``last_result``."""
        result = self.compressor.compress(list(texts), query, top_k=top_k, document_scores=document_scores)
        self.last_result = result
        return result

    async def acompress(
        self, texts: Sequence[str], query: str, *, top_k: int | None, document_scores: Sequence[float] | None
    ) -> CompressionResult:
        """``compress`` without blocking the event loop: the async HTTP client, or a worker thread."""
        if not self.remote:
            return await asyncio.to_thread(self.compress, texts, query, top_k=top_k, document_scores=document_scores)
        remote = self.compressor
        assert isinstance(remote, RemoteGemFilterCompressor)
        result = await remote.acompress(list(texts), query, top_k=top_k, document_scores=document_scores)
        self.last_result = result
        return result


def holder_for(
    adapter: Any, compressor: GemFilterCompressor | None, options: Callable[[], dict[str, Any]]
) -> CompressorHolder:
    """The ``CompressorHolder`` of an adapter whose fields are named as the adapters name them (``model``,
    ``endpoint``, ``device``, ``dtype``, ``embeddings``, ``timeout``, ``max_retries``): ``compressor``
    adopted when given (its fields checked against it), else opened from the fields on first use.
    ``options`` gives the adapter's ``GemFilterConfig`` options."""
    given = None
    if compressor is not None:
        given = adopt(
            compressor, model=adapter.model, endpoint=adapter.endpoint, embeddings=adapter.embeddings, options=options()
        )
    else:
        check_sources(adapter.model, adapter.endpoint, adapter.embeddings)

    def opener() -> Compressor:
        return open_compressor(
            model=adapter.model,
            endpoint=adapter.endpoint,
            device=adapter.device,
            dtype=adapter.dtype,
            embeddings=adapter.embeddings,
            options=options(),
            timeout=adapter.timeout,
            max_retries=adapter.max_retries,
        )

    return CompressorHolder(opener, given, remote=adapter.endpoint is not None)
