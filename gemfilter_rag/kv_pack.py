"""A chunk's cached keys and values, packed: fp16, int8 (per-channel scales) or fp32, and as bytes.

Pure functions of tensors and bytes: ``pack``/``unpack`` convert a ``ChunkKV`` to and from its stored
precision, ``serialise``/``deserialise`` to and from one self-describing blob (``chunk_store.checksum`` names a blob's
content). ``chunk_cache.ChunkCache`` keeps packed entries in memory and blobs on disk. Shapes: L the exit
layer (layers ``0..L`` kept), KV key/value heads, n the chunk's tokens, D the head dimension.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import torch

DTYPES = ("fp16", "int8", "fp32")
"""Stored precisions: fp16 (half the bytes of fp32), int8 (a quarter, plus one float32 scale per channel
and chunk), fp32 (lossless for float32 models: what the exactness tests use)."""

FORMAT = 1
"""Version of the blob layout; a blob of another version is refused (and recomputed by the cache)."""

_MAGIC = b"GFKV"
_TORCH = {"float16": torch.float16, "float32": torch.float32, "int8": torch.int8}


@dataclass(frozen=True)
class ChunkKV:
    """One chunk's keys and values at layers ``0..L``, as the filter model computed them after the prefix."""

    keys: torch.Tensor  # (L + 1, KV, n, D): post-RoPE keys of layers 0..L, at the chunk's encode positions
    values: torch.Tensor  # (L, KV, n, D): values of layers 0..L-1 (the exit layer's are never read)

    def __post_init__(self) -> None:
        k, v = self.keys.shape, self.values.shape
        if len(k) != 4 or len(v) != 4 or k[0] != v[0] + 1 or k[1:] != v[1:]:
            raise ValueError(
                f"keys/values: {tuple(k)} and {tuple(v)} do not fit (L + 1, KV, n, D) keys and (L, KV, n, D) values."
            )

    @property
    def tokens(self) -> int:
        """The chunk's length in tokens (n)."""
        return int(self.keys.shape[2])

    @property
    def exit_layer(self) -> int:
        """L: the last layer whose keys are kept."""
        return int(self.keys.shape[0]) - 1


@dataclass(frozen=True)
class Packed:
    """A ``ChunkKV`` in its stored precision: what the cache holds in memory."""

    dtype: str  # one of DTYPES
    keys: torch.Tensor  # (L + 1, KV, n, D) float16 / float32 / int8
    values: torch.Tensor  # (L, KV, n, D)
    key_scale: torch.Tensor | None = None  # (L + 1, KV, 1, D) float32 for int8
    value_scale: torch.Tensor | None = None  # (L, KV, 1, D) float32 for int8

    @property
    def nbytes(self) -> int:
        """Bytes of its tensors (what the in-memory bound counts)."""
        parts = (self.keys, self.values, self.key_scale, self.value_scale)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    @property
    def tokens(self) -> int:
        return int(self.keys.shape[2])


def quantise_int8(x: torch.Tensor, dim: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one float32 scale per channel: ``x`` (..., n, D) -> (int8 like x, scale with ``dim``
    reduced to 1). The default ``dim=-2`` (tokens) gives each (layer, head, dimension) channel its own
    scale, so an outlier channel of the keys does not flatten the others."""
    xf = x.float()
    scale = xf.abs().amax(dim=dim, keepdim=True) / 127.0  # (..., 1, D)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(xf / scale).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantise_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of ``quantise_int8`` (up to rounding): float32."""
    return q.float() * scale


def pack(kv: ChunkKV, dtype: str) -> Packed:
    """``kv`` in the stored precision ``dtype`` (one of ``DTYPES``), on the CPU."""
    keys, values = kv.keys.detach().cpu(), kv.values.detach().cpu()
    if dtype == "fp16":
        return Packed(dtype, keys.to(torch.float16).contiguous(), values.to(torch.float16).contiguous())
    if dtype == "fp32":
        return Packed(dtype, keys.float().contiguous(), values.float().contiguous())
    if dtype == "int8":
        qk, sk = quantise_int8(keys)
        qv, sv = quantise_int8(values)
        return Packed(dtype, qk, qv, sk, sv)
    raise ValueError(f"dtype: {dtype!r} is not a stored precision; use one of {list(DTYPES)}.")


def unpack(packed: Packed, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> ChunkKV:
    """The ``ChunkKV`` of a packed entry, in ``dtype`` on ``device``."""
    if packed.dtype == "int8":
        assert packed.key_scale is not None and packed.value_scale is not None
        keys = dequantise_int8(packed.keys, packed.key_scale)
        values = dequantise_int8(packed.values, packed.value_scale)
    else:
        keys, values = packed.keys, packed.values
    return ChunkKV(keys.to(device=device, dtype=dtype), values.to(device=device, dtype=dtype))


def serialise(packed: Packed) -> bytes:
    """One blob: magic, header length, a JSON header (format, precision, each tensor's dtype and shape), then
    the tensors' bytes in the header's order."""
    tensors = {"keys": packed.keys, "values": packed.values}
    if packed.key_scale is not None and packed.value_scale is not None:
        tensors |= {"key_scale": packed.key_scale, "value_scale": packed.value_scale}
    header = {
        "format": FORMAT,
        "dtype": packed.dtype,
        "tensors": [[name, str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in tensors.items()],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    body = b"".join(t.contiguous().numpy().tobytes() for t in tensors.values())
    return _MAGIC + struct.pack("<I", len(head)) + head + body


def deserialise(blob: bytes) -> Packed:
    """Inverse of ``serialise``; a ValueError for a blob that is truncated, padded or of another format."""
    if len(blob) < 8 or blob[:4] != _MAGIC:
        raise ValueError("blob: not a GemFilter chunk entry (bad magic).")
    (size,) = struct.unpack("<I", blob[4:8])
    try:
        header = json.loads(blob[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError("blob: its header is not readable.") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("dtype") not in DTYPES:
        raise ValueError(
            f"blob: format {header.get('format') if isinstance(header, dict) else '?'}, expected {FORMAT}."
        )
    offset = 8 + size
    tensors: dict[str, torch.Tensor] = {}
    for name, dtype, shape in header["tensors"]:
        kind = _TORCH[dtype]
        count = 1
        for s in shape:
            count *= int(s)
        nbytes = count * torch.empty(0, dtype=kind).element_size()
        chunk = blob[offset : offset + nbytes]
        if len(chunk) != nbytes:
            raise ValueError(f"blob: truncated in {name!r} ({len(chunk)} of {nbytes} bytes).")
        data = torch.frombuffer(bytearray(chunk), dtype=kind) if nbytes else torch.empty(0, dtype=kind)
        tensors[name] = data.reshape(shape)
        offset += nbytes
    if offset != len(blob):
        raise ValueError(f"blob: {len(blob) - offset} bytes after its last tensor.")
    packed = Packed(
        header["dtype"], tensors["keys"], tensors["values"], tensors.get("key_scale"), tensors.get("value_scale")
    )
    unpack(packed)  # shapes consistent, or a ValueError
    return packed


def bytes_per_token(
    exit_layer: int, kv_heads: int, head_dim: int, dtype: str, chunk_tokens: int | None = None
) -> float:
    """Stored bytes per context token of an entry for layers ``0..exit_layer``: keys of ``exit_layer + 1``
    layers and values of ``exit_layer``, ``kv_heads * head_dim`` each. For int8 with ``chunk_tokens``, the
    per-chunk scales are shared out over that many tokens (None: left out)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not a stored precision; use one of {list(DTYPES)}.")
    width = {"fp16": 2, "int8": 1, "fp32": 4}[dtype]
    rows = (2 * exit_layer + 1) * kv_heads * head_dim  # numbers per token
    per_token = float(rows * width)
    if dtype == "int8" and chunk_tokens:
        per_token += rows * 4 / chunk_tokens  # one float32 scale per channel and chunk
    return per_token
