"""``load_compressor``: the service's compressor from plain options (what a replica receives), a chunk cache
made from its keyword arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..chunk_cache import ChunkCache
from ..compressor import GemFilterCompressor


def load_compressor(options: Mapping[str, Any]) -> GemFilterCompressor:
    """``GemFilterCompressor.from_pretrained(**options)``, where ``options["cache"]``, if present, holds the
    keyword arguments of a ``ChunkCache`` (max_bytes, path, dtype) rather than a cache: options stay plain
    data, so that Ray can send them to every replica, and each replica makes its own cache (sharing the file)."""
    kwargs = dict(options)
    cache = kwargs.pop("cache", None)
    if cache is not None and not isinstance(cache, ChunkCache):
        if not isinstance(cache, Mapping):
            raise TypeError(f"cache: expected ChunkCache keyword arguments (max_bytes, path, dtype), got {cache!r}.")
        cache = ChunkCache(**{k: v for k, v in cache.items() if v is not None})
    return GemFilterCompressor.from_pretrained(**kwargs, cache=cache)
