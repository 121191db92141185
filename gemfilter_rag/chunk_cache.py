"""``ChunkCache``: each chunk's early-layer keys and values, computed once and kept (index once, compress fast).

In RAG the chunks repeat and only the question is new. An entry holds one chunk's keys at layers ``0..r``
and values at layers ``0..r-1`` (the exit layer's values are never read), computed by the filter model
over ``[template prefix; chunk]``: every chunk is encoded as if it followed the prompt's prefix, at
positions ``P..P+n-1``, and moved to its place in a prompt later (``rope.rerotate``). An entry is
identified by an ``EntryKey``: the filter model's fingerprint, the profile (name and readout hash), the
library version, the prefix's token ids, the chunk's text and token ids (SHA-256) and the exit layer.

Entries live in memory under a byte bound (least recently used out first, ``lru_evict``) in their stored
precision (``kv_pack``: fp16, int8 with per-channel scales, or fp32), and, with ``path=``, in one SQLite
file (``chunk_store``) that survives the process and can ship beside a vector index. An entry read from
the file is used only when its identity and checksum match and its blob decodes; otherwise it is
dropped and the caller recomputes it (``stats()["rejected"]``). Threads share a cache (one lock);
processes share the file (SQLite's locking, WAL). Nothing here runs a model: the cached path
(``cached_pass``) encodes missing chunks and puts them here.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from . import kv_pack
from .chunk_store import ChunkStore
from .kv_pack import DTYPES, ChunkKV, Packed

DEFAULT_MAX_BYTES = 512 << 20
"""In-memory bound of a ``ChunkCache()``: 512 MiB, about 500 chunks of 256 tokens for SmolLM2-135M-Instruct up to
layer 5 in fp16 (4.1 KiB per token; ``ChunkCache.bytes_per_token``); a larger corpus belongs in the file."""


@dataclass(frozen=True)
class EntryKey:
    """What an entry was made by and for; an entry is used only for exactly this key."""

    model: str  # fingerprint of the filter model's weights and config (``cached_pass.model_fingerprint``)
    profile: str  # profile name and readout hash ("none" without a profile)
    version: str  # gemfilter-rag version
    frame: str  # SHA-256 of the shared start's token ids (the template prefix), hex
    text: str  # SHA-256 of the chunk's text, hex
    ids: str  # SHA-256 of the chunk's token ids, hex
    layer: int  # exit layer r: keys of layers 0..r

    @cached_property
    def _digest(self) -> str:
        fields = (self.model, self.profile, self.version, self.frame, self.text, self.ids, self.layer)
        return hashlib.sha256("\x1f".join(str(v) for v in fields).encode()).hexdigest()

    def digest(self) -> str:
        """The entry's id: SHA-256 over every field, in their order."""
        return self._digest


def sha256_text(text: str) -> str:
    """SHA-256 of a text (UTF-8), hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def sha256_ids(ids: list[int] | tuple[int, ...]) -> str:
    """SHA-256 of a list of token ids, hex."""
    return hashlib.sha256(",".join(str(int(i)) for i in ids).encode()).hexdigest()


def lru_evict(sizes: Mapping[str, int], max_bytes: int) -> list[str]:
    """The entries to drop, oldest first, so that the rest fit in ``max_bytes``: ``sizes`` maps each entry to
    its bytes, least recently used first."""
    total = sum(sizes.values())
    out: list[str] = []
    for name, size in sizes.items():
        if total <= max_bytes:
            break
        out.append(name)
        total -= size
    return out


def _refuse_directory(path: str | Path, name: str) -> None:
    """A store's path must name a file: a directory is refused under ``name``."""
    if Path(path).is_dir():
        raise ValueError(f"{name}: {path} is a directory; give a file path, e.g. {Path(path) / 'chunks.sqlite'}.")


def cache_arguments(mib: Any, path: Any, dtype: Any = None, *, name: str = "cache_{}") -> dict[str, Any] | None:
    """``ChunkCache`` keyword arguments from the settings a command line or an application builder gives
    (strings are read): the MiB to keep in memory, the file, the stored precision. None where neither a size
    nor a file is given. A bad value is refused under the name it was given by: ``name`` formats ``mib``,
    ``file`` and ``dtype`` (``"--cache-{}"`` on a command line)."""
    if mib is None and path is None:
        if dtype is not None:
            raise ValueError(
                f"{name.format('dtype')}: given without {name.format('mib')} or {name.format('file')}; "
                f"add {name.format('mib')} 512 to keep a cache of 512 MiB in memory."
            )
        return None
    out: dict[str, Any] = {"path": None if path is None else str(path)}
    if mib is not None:
        try:
            value = int(mib)
        except (TypeError, ValueError):
            raise ValueError(f"{name.format('mib')}: {mib!r} is not a whole number of MiB; e.g. 512.") from None
        if value < 0:
            raise ValueError(
                f"{name.format('mib')}: {value} is negative; give the MiB to keep in memory, e.g. 512 (0: file only)."
            )
        out["max_bytes"] = value << 20
    if path is not None:
        _refuse_directory(path, name.format("file"))
    if dtype is not None:
        if dtype not in DTYPES:
            raise ValueError(f"{name.format('dtype')}: {dtype!r} is not valid; use one of {list(DTYPES)}.")
        out["dtype"] = dtype
    return out


class ChunkCache:
    """Chunks' early-layer keys and values, in memory (LRU under ``max_bytes``) and optionally in one file.

    Args:
        max_bytes: bound on the bytes held in memory (the stored tensors); an entry larger than the bound
            is not kept in memory (it still goes to the file).
        path: a SQLite file to keep entries in across processes and runs (created if missing), or None.
        dtype: stored precision: "fp16" (default), "int8" (per-channel scales, about half of fp16) or "fp32"
            (lossless for float32 models).

    Use it through ``GemFilterCompressor(..., cache=ChunkCache(...))``; ``compressor.warm(chunks)`` fills it.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, path: str | Path | None = None, dtype: str = "fp16") -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes: expected a non-negative int, got {max_bytes!r}; e.g. 512 << 20 for 512 MiB.")
        if dtype not in DTYPES:
            raise ValueError(f"dtype: {dtype!r} is not valid; use one of {list(DTYPES)}.")
        self.max_bytes = max_bytes
        self.dtype = dtype
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            _refuse_directory(self.path, "path")
        self._lock = threading.RLock()
        self._memory: OrderedDict[str, Packed] = OrderedDict()
        self._bytes = 0
        self._store = ChunkStore(self.path) if self.path is not None else None
        self._counts = {"hits": 0, "disk_hits": 0, "misses": 0, "stored": 0, "evicted": 0, "rejected": 0}
        self._rejections: list[str] = []

    def get(
        self, key: EntryKey, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> ChunkKV | None:
        """The entry of ``key`` in ``dtype`` on ``device``, or None (a miss: compute it and ``put`` it)."""
        digest = key.digest()
        with self._lock:
            packed = self._memory.get(digest)
            if packed is not None:
                self._memory.move_to_end(digest)
                self._counts["hits"] += 1
                return kv_pack.unpack(packed, dtype, device)
        packed = self._from_disk(key, digest)
        with self._lock:
            if packed is None:
                self._counts["misses"] += 1
                return None
            self._counts["hits"] += 1
            self._counts["disk_hits"] += 1
            self._remember(digest, packed)
        return kv_pack.unpack(packed, dtype, device)

    def put(self, key: EntryKey, kv: ChunkKV) -> ChunkKV:
        """Keep ``kv`` under ``key`` (in memory, and in the file when there is one); returns the entry as stored
        (rounded to the cache's precision), float32 on the CPU."""
        if kv.exit_layer != key.layer:
            raise ValueError(f"kv: holds layers 0..{kv.exit_layer}, the key says 0..{key.layer}.")
        packed = kv_pack.pack(kv, self.dtype)
        digest = key.digest()
        if self._store is not None:
            self._store.write(digest, asdict(key), packed.tokens, self.dtype, kv_pack.serialise(packed))
        with self._lock:
            self._counts["stored"] += 1
            self._remember(digest, packed)
        return kv_pack.unpack(packed)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, EntryKey):
            return False
        with self._lock:
            return key.digest() in self._memory

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory)

    @property
    def bytes(self) -> int:
        """Bytes held in memory now."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, Any]:
        """Hits (memory or file), disk hits, misses, entries stored, evicted from memory and rejected (made for
        another identity, failed checksum or undecodable), entries and bytes in memory, the bound, and the
        file's entries and bytes when there is one."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out |= {
                "entries": len(self._memory),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "dtype": self.dtype,
            }
            out["rejections"] = list(self._rejections[-10:])
        if self._store is not None:
            out |= {"path": str(self.path), "disk_entries": self._store.count(), "disk_bytes": self._store.size()}
        return out

    def bytes_per_token(self, model: Any, exit_layer: int | None = None, chunk_tokens: int | None = None) -> float:
        """Stored bytes per context token in this cache's precision.

        ``model``: a ``GemFilterCompressor`` (its cache layer is used) or a transformers model with
        ``exit_layer`` given. With ``chunk_tokens``, int8's per-chunk scales are shared out over that many tokens.
        """
        layer = exit_layer
        lm = model
        if hasattr(model, "cache_layer") and hasattr(model, "model"):
            layer = model.cache_layer if exit_layer is None else exit_layer
            lm = model.model
        if layer is None:
            raise ValueError("exit_layer: pass the exit layer (layers 0..exit_layer are cached) for a bare model.")
        cfg: Any = getattr(lm, "config", None)
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        heads = getattr(cfg, "num_attention_heads", None)
        if not isinstance(heads, int):
            raise ValueError(f"model: {type(lm).__name__} has no config with num_attention_heads.")
        kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        return kv_pack.bytes_per_token(int(layer), kv, head_dim, self.dtype, chunk_tokens)

    def clear(self) -> None:
        """Forget every entry held in memory (the file keeps its rows) and reset the counts."""
        with self._lock:
            self._memory.clear()
            self._bytes = 0
            self._counts = dict.fromkeys(self._counts, 0)
            self._rejections.clear()

    def close(self) -> None:
        """Close the file (entries in memory stay usable)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path is not None else ""
        return f"ChunkCache(max_bytes={self.max_bytes}, dtype={self.dtype!r}{where})"

    def _from_disk(self, key: EntryKey, digest: str) -> Packed | None:
        if self._store is None:
            return None
        blob, why = self._store.read(digest, asdict(key))
        if blob is not None:
            try:
                packed = kv_pack.deserialise(blob)
                if packed.keys.shape[0] != key.layer + 1:
                    raise ValueError(f"holds layers 0..{packed.keys.shape[0] - 1}, expected 0..{key.layer}")
                return packed
            except ValueError as err:
                self._store.delete(digest)
                why = f"undecodable: {err}"
        if why is not None:
            with self._lock:
                self._counts["rejected"] += 1
                self._rejections.append(f"{digest[:12]}: {why}")
        return None

    def _remember(self, digest: str, packed: Packed) -> None:
        """Hold ``packed`` in memory (most recent) and evict what no longer fits; the lock is held."""
        old = self._memory.pop(digest, None)
        if old is not None:
            self._bytes -= old.nbytes
        if packed.nbytes > self.max_bytes:
            return
        self._memory[digest] = packed
        self._bytes += packed.nbytes
        if self._bytes <= self.max_bytes:
            return
        sizes = OrderedDict((d, p.nbytes) for d, p in self._memory.items())
        for d in lru_evict(sizes, self.max_bytes):
            self._bytes -= self._memory.pop(d).nbytes
            self._counts["evicted"] += 1
