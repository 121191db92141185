"""Memory guard: estimate a filter pass's peak memory before running it, and refuse when it cannot fit.

A filter pass runs layers ``0..L-1`` in full and layer ``L`` up to its query/key, with no KV
cache and no gradients, so besides the resident weights its peak is the working set of one
layer plus what scoring holds:

* hidden states (the residual stream, the normed input, the layer's outputs) (B, T, hidden);
* q/k/v (B, T, (H + 2 KV) D) and the rotary-embedding temporaries of q and k;
* the attention working set of the configured implementation: ``eager`` materialises the
  (B, H, T, T) scores (twice: before and after softmax); ``sdpa`` and ``flash_attention_2`` run
  a fused kernel whose memory grows with T only, plus a (B, 1, T, T) mask where one is needed
  (sliding windows, or always for eager);
* the MLP intermediate (B, T, I), about three of them alive at once (gate, up, their product);
* the captured q/k of the filter layer, and the scoring rows (B, H, Q, T) in float32.

The cached path (``estimate_cached_pass``) runs only the prompt's last N tokens over the context's C cached
keys and values: its peak is those keys and values (assembled, and copied once into transformers' cache),
the N tokens' working set against C + N keys, and the recorded attention. Either check may count
``extra`` bytes as well: the chunk cache's room to grow in memory, on the CPU.

``check_pass`` compares the estimate with the memory available on the model's device
(``MemAvailable`` and the cgroup limit on CPU, ``torch.cuda.mem_get_info`` plus the caching
allocator's free blocks on CUDA) and raises ``InsufficientMemoryError`` with the estimate and
the options, instead of letting the operating system kill the process. Set
``GEMFILTER_MEMORY_GUARD=0`` to skip the check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

GIB = 1 << 30
HEADROOM = 0.9
"""Use at most this fraction of the available memory, leaving room for the allocator and the rest."""
_PREFIX = "gemfilter+"
CACHE_ROOM = "chunk cache (room to grow)"
"""Name of the ``extra`` part that counts what a ``ChunkCache`` may still take in memory."""


class InsufficientMemoryError(MemoryError):
    """A filter pass would need more memory than the device has available."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of one filter pass beyond the resident weights, by part."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    seq_len: int = 0
    batch: int = 1
    attn_implementation: str = "sdpa"

    def describe(self) -> str:
        """The total and its largest parts, in GiB."""
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        detail = ", ".join(f"{name} {_gib(n)}" for name, n in top if n)
        return f"{_gib(self.total)} ({detail})"


@dataclass(frozen=True)
class _Shape:
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    sliding_window: int | None


def _shape(model: Any) -> _Shape | None:
    """The shape numbers of a transformers config, or None when it lacks them."""
    cfg: Any = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    hidden = getattr(cfg, "hidden_size", None)
    heads = getattr(cfg, "num_attention_heads", None)
    if not isinstance(hidden, int) or not isinstance(heads, int) or hidden <= 0 or heads <= 0:
        return None
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    inter = int(getattr(cfg, "intermediate_size", None) or 4 * hidden)
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        window = None
    return _Shape(hidden, inter, heads, kv, head_dim, int(window) if window else None)


def kv_bytes(model: Any, exit_layer: int, tokens: int) -> int:
    """Bytes of ``tokens`` tokens' keys at layers ``0..exit_layer`` and values at ``0..exit_layer-1`` in the
    model's dtype (what an encoding pass keeps; 0 when the config does not give the shape)."""
    s = _shape(model)
    if s is None:
        return 0
    try:
        item = next(model.parameters()).element_size()
    except StopIteration:  # pragma: no cover - a model without parameters
        item = 4
    return (2 * exit_layer + 1) * tokens * s.kv_heads * s.head_dim * item


def attn_implementation_of(model: Any) -> str:
    """The model's configured attention implementation, without GemFilter's routing prefix."""
    cfg = model.config
    name = getattr(cfg, "_attn_implementation", None) or "sdpa"
    return name[len(_PREFIX) :] if name.startswith(_PREFIX) else name


def _pass_basics(model: Any, attn_implementation: str | None) -> tuple[_Shape, str, int]:
    """What every estimate needs of the model: its shape, its attention implementation and the bytes of one
    weight; a ValueError names a config that gives no shape."""
    s = _shape(model)
    if s is None:
        raise ValueError(
            f"model: the config of {type(model).__name__} has no hidden_size/num_attention_heads; "
            "cannot estimate the memory of a filter pass."
        )
    attn = attn_implementation or attn_implementation_of(model)
    try:
        item = next(model.parameters()).element_size()
    except StopIteration:  # pragma: no cover - a model without parameters
        item = 4
    return s, attn, item


def estimate_pass(
    model: Any,
    seq_len: int,
    query_rows: int,
    *,
    batch: int = 1,
    attn_implementation: str | None = None,
    recorded_layers: int = 0,
    extra: Mapping[str, int] | None = None,
) -> MemoryEstimate:
    """Estimate the peak memory of one filter pass over ``batch`` prompts of ``seq_len`` tokens.

    Args:
        model: the transformers causal LM (its config gives the shape; its parameters the dtype).
        seq_len: tokens per prompt (T).
        query_rows: scoring query rows (Q), e.g. the question's tokens.
        batch: prompts per pass (B).
        attn_implementation: default: the model's configured one.
        recorded_layers: layers whose question attention the readout keeps, (B, H, T) float32 each.
        extra: named bytes held besides the pass (keys and values kept by an encoding pass, the chunk
            cache's room to grow), added to the total.
    """
    s, attn, item = _pass_basics(model, attn_implementation)
    b, t, q = batch, seq_len, max(1, min(query_rows, seq_len))
    f32 = 4
    tok = b * t  # (B, T) positions
    qk = tok * (s.heads + s.kv_heads) * s.head_dim * item  # q and k (B, T, (H + KV) D)
    # a (B, 1, T, T) mask exists for eager, for sliding windows, and for padded batches
    needs_mask = attn != "flash_attention_2" and (
        attn == "eager" or batch > 1 or (s.sliding_window is not None and t > s.sliding_window)
    )
    mask = b * t * t * (item if attn == "eager" else 1) if needs_mask else 0  # float for eager, bool for sdpa
    if attn == "eager":
        kernel = 2 * b * s.heads * t * t * max(item, f32)  # scores and their softmax (B, H, T, T)
        kernel += 2 * b * s.heads * t * s.head_dim * item  # k/v repeated to H heads
    else:
        kernel = 2 * b * s.heads * t * s.head_dim * item  # output and repeated k/v, O(T)
        if needs_mask:
            kernel += b * t * t * item  # the fused kernel turns a bool mask into an additive one
    parts = {
        "hidden states": 3 * tok * s.hidden * item,  # residual, normed input, layer output
        "rotary": 2 * tok * s.head_dim * item,  # cos, sin (B, T, D)
        "mask": mask,
    }
    attention = tok * s.hidden * item + tok * (s.heads + 2 * s.kv_heads) * s.head_dim * item + 2 * qk + kernel
    mlp = tok * s.hidden * item + 3 * tok * s.intermediate * item
    scoring = qk + 4 * b * s.heads * q * t * f32 + b * (s.heads + s.kv_heads) * t * s.head_dim * f32
    if attention >= mlp:
        parts["attention"] = attention
    else:
        parts["mlp"] = mlp
    parts["capture and scoring"] = scoring
    # the layer's working set and the scoring rows are never alive together; count the larger one
    layer_peak = max(attention, mlp)
    recorded = recorded_layers * b * s.heads * t * f32  # kept for the whole pass
    if recorded:
        parts["recorded attention"] = recorded
    total = parts["hidden states"] + parts["rotary"] + mask + max(layer_peak, scoring) + recorded
    for name, n in (extra or {}).items():
        parts[name] = int(n)
        total += int(n)
    return MemoryEstimate(total=int(total), parts=parts, seq_len=t, batch=b, attn_implementation=attn)


def estimate_cached_pass(
    model: Any,
    context_tokens: int,
    live_tokens: int,
    query_rows: int,
    *,
    exit_layer: int,
    attn_implementation: str | None = None,
    recorded_layers: int = 0,
    extra: Mapping[str, int] | None = None,
) -> MemoryEstimate:
    """Estimate the peak memory of one cached pass: ``live_tokens`` (N) over ``context_tokens`` (C) cached
    tokens' keys and values at layers ``0..exit_layer`` (see the module; arguments as ``estimate_pass``)."""
    s, attn, item = _pass_basics(model, attn_implementation)
    c, n, t = context_tokens, live_tokens, context_tokens + live_tokens
    q = max(1, min(query_rows, n))
    f32 = 4
    kv = 2 * (exit_layer + 1) * s.kv_heads * s.head_dim * item
    parts = {
        "past keys/values": 2 * kv * c,  # assembled, and the cache's own copy
        "hidden states": 3 * n * s.hidden * item,
        "mask": n * t * (item if attn == "eager" else 1),
    }
    kernel = 2 * s.heads * n * t * max(item, f32) if attn == "eager" else 2 * s.heads * n * s.head_dim * item
    attention = kernel + 2 * s.heads * t * s.head_dim * item  # and k/v repeated to H heads
    mlp = n * s.hidden * item + 3 * n * s.intermediate * item
    scoring = 4 * s.heads * q * t * f32 + (s.heads + s.kv_heads) * t * s.head_dim * f32
    parts["attention" if attention >= mlp else "mlp"] = max(attention, mlp)
    parts["capture and scoring"] = scoring
    recorded = recorded_layers * s.heads * t * f32
    if recorded:
        parts["recorded attention"] = recorded
    total = parts["past keys/values"] + parts["hidden states"] + parts["mask"] + max(attention, mlp, scoring) + recorded
    for name, b in (extra or {}).items():
        parts[name] = int(b)
        total += int(b)
    return MemoryEstimate(total=int(total), parts=parts, seq_len=t, batch=1, attn_implementation=attn)


def available_bytes(device: torch.device | str) -> int | None:
    """Memory a pass may still take on ``device``, or None where it cannot be known."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + max(0, cached))
    if dev.type == "cpu":
        return _cpu_available()
    return None


def _cpu_available() -> int | None:
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        return None
    limit = _cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def _cgroup_room() -> int | None:
    """Room left under the cgroup's memory limit (v2, else v1), or None when unlimited."""
    for max_file, cur_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = Path(max_file).read_text().strip()
            if raw == "max" or int(raw) >= 1 << 60:
                return None
            return max(0, int(raw) - int(Path(cur_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def guard_enabled() -> bool:
    """False when ``GEMFILTER_MEMORY_GUARD`` is set to 0/false/off."""
    return os.environ.get("GEMFILTER_MEMORY_GUARD", "1").strip().lower() not in ("0", "false", "off", "no")


def check_pass(
    model: Any,
    seq_len: int,
    query_rows: int,
    *,
    batch: int = 1,
    device: torch.device | str | None = None,
    recorded_layers: int = 0,
    extra: Mapping[str, int] | None = None,
) -> MemoryEstimate | None:
    """Estimate a filter pass and raise ``InsufficientMemoryError`` if it would not fit.

    Returns the estimate when it fits or when the available memory cannot be known, and None
    when the guard is off or the model's config does not give its shape.
    """
    if not guard_enabled() or _shape(model) is None:
        return None
    estimate = estimate_pass(model, seq_len, query_rows, batch=batch, recorded_layers=recorded_layers, extra=extra)
    return _check(model, estimate, device)


def check_cached_pass(
    model: Any,
    context_tokens: int,
    live_tokens: int,
    query_rows: int,
    *,
    exit_layer: int,
    device: torch.device | str | None = None,
    recorded_layers: int = 0,
    extra: Mapping[str, int] | None = None,
) -> MemoryEstimate | None:
    """``check_pass`` for a cached pass (``estimate_cached_pass``)."""
    if not guard_enabled() or _shape(model) is None:
        return None
    estimate = estimate_cached_pass(
        model,
        context_tokens,
        live_tokens,
        query_rows,
        exit_layer=exit_layer,
        recorded_layers=recorded_layers,
        extra=extra,
    )
    return _check(model, estimate, device)


def _check(model: Any, estimate: MemoryEstimate, device: torch.device | str | None) -> MemoryEstimate:
    seq_len, batch = estimate.seq_len, estimate.batch
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover
            device = "cpu"
    room = available_bytes(device)
    if room is not None and estimate.total > HEADROOM * room:
        hint = (
            "; attn_implementation='sdpa' avoids the (H, T, T) scores of 'eager'"
            if estimate.attn_implementation == "eager"
            else ""
        )
        if CACHE_ROOM in estimate.parts:
            hint += f"; the chunk cache may still take {_gib(estimate.parts[CACHE_ROOM])}: lower ChunkCache(max_bytes=)"
        raise InsufficientMemoryError(
            f"documents: a filter pass over {seq_len} tokens (batch {batch}) needs about {estimate.describe()} "
            f"but only {_gib(room)} is available on {torch.device(device)}; pass fewer or shorter documents, "
            f"smaller windows (`window=`, for prompts beyond the model's positions), or a lower batch_size{hint}. "
            "Set GEMFILTER_MEMORY_GUARD=0 to skip this check."
        )
    return estimate


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 100 else f"{n / (1 << 20):.1f} MiB"
