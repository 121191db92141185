"""What the LangChain and LlamaIndex adapters do alike: where their compressor comes from.

A compressor is given (``compressor=``), loaded in this process (``model=``, or the embedded default),
or a service's client (``endpoint=``). These functions check that the adapter's fields do not
contradict each other and build the compressor; the adapters stay thin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .compressor import GemFilterCompressor
from .remote import RemoteGemFilterCompressor


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
